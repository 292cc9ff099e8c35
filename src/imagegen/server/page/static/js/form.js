// The form ↔ the native request: what each input means in a /v1/jobs or /v1/upscales body, size presets per model
// family, settings filled back in from a job's request or an image's infotext, and API errors shown next to the
// field they name.

const SIZE_PRESETS = {
  sd1: [[512, 512], [512, 768], [768, 512], [640, 640]],
  sd2: [[768, 768], [512, 512], [768, 1024], [1024, 768]],
  sdxl: [[1024, 1024], [896, 1152], [1152, 896], [832, 1216], [1216, 832], [768, 1344], [1344, 768]],
};

// Request fields the form fills from a job's request or an infotext; the others are left as they are.
const FILLABLE = [
  "prompt", "negative_prompt", "model", "refiner", "denoising_end", "sampler", "schedule_type",
  "num_inference_steps", "guidance_scale", "num_images", "width", "height", "seed", "enable_hr", "hr_scale",
  "hr_upscaler", "hr_second_pass_steps", "tiling",
];

export const $ = (id) => document.getElementById(id);

export function numberOrNull(input) {
  const text = input.value.trim();
  return text === "" ? null : Number(text);
}

export class JobForm {
  constructor(form) {
    this.form = form;
    this.models = [];
    this.lastSeed = null;
  }

  get mode() {
    return this.form.dataset.mode ?? "generate";
  }

  setModels(models) {
    this.models = models;
    const select = $("model");
    const refiner = $("refiner");
    select.replaceChildren();
    for (const model of models.filter((m) => m.family !== "sdxl-refiner")) {
      select.append(new Option(`${model.id} (${model.family})`, model.id));
    }
    for (const model of models.filter((m) => m.family === "sdxl-refiner")) {
      refiner.append(new Option(model.id, model.id));
    }
    this.modelChanged();
  }

  model() {
    return this.models.find((m) => m.id === $("model").value);
  }

  // A new model: its size presets, its native size, and the refiner only for SDXL.
  modelChanged() {
    const model = this.model();
    const presets = $("size-preset");
    presets.replaceChildren();
    if (!model) return;
    const family = model.family.startsWith("sdxl") ? "sdxl" : model.family;
    const sizes = [[model.width, model.height], ...(SIZE_PRESETS[family] ?? [])];
    const seen = new Set();
    for (const [w, h] of sizes) {
      const key = `${w}x${h}`;
      if (seen.has(key)) continue;
      seen.add(key);
      presets.append(new Option(w === model.width && h === model.height ? `${key} (native)` : key, key));
    }
    presets.append(new Option("custom", "custom"));
    $("width").value = model.width;
    $("height").value = model.height;
    presets.value = `${model.width}x${model.height}`;
    const sdxl = model.family === "sdxl";
    $("refiner").disabled = !sdxl;
    if (!sdxl) $("refiner").value = "";
    this.refinerChanged();
  }

  refinerChanged() {
    $("switch-label").hidden = !$("refiner").value;
  }

  presetChanged() {
    const value = $("size-preset").value;
    if (value === "custom") return;
    const [w, h] = value.split("x").map(Number);
    $("width").value = w;
    $("height").value = h;
  }

  sizeTyped() {
    const key = `${$("width").value}x${$("height").value}`;
    const presets = $("size-preset");
    presets.value = [...presets.options].some((o) => o.value === key) ? key : "custom";
  }

  // The /v1/jobs body of the generate and edit modes; `images` gives the edit mode's init_image and mask.
  jobBody(images = {}) {
    const body = {
      prompt: $("prompt").value,
      negative_prompt: $("negative_prompt").value,
      model: $("model").value || null,
      seed: numberOrNull($("seed")) ?? -1,
      num_images: numberOrNull($("num_images")) ?? 1,
      width: numberOrNull($("width")),
      height: numberOrNull($("height")),
    };
    for (const name of ["num_inference_steps", "guidance_scale"]) {
      const value = numberOrNull($(name));
      if (value !== null) body[name] = value;
    }
    // Live previews about ten times per run (the server sends them on the job's event stream).
    body.preview_every = Math.max(1, Math.round((body.num_inference_steps ?? 20) / 10));
    for (const name of ["sampler", "schedule_type"]) {
      if ($(name).value) body[name] = $(name).value;
    }
    if ($("refiner").value) {
      body.refiner = $("refiner").value;
      body.denoising_end = numberOrNull($("denoising_end")) ?? 0.8;
    }
    if ($("tiling").checked) body.tiling = true;
    if (this.mode === "generate" && $("enable_hr").checked) {
      body.enable_hr = true;
      body.hr_scale = numberOrNull($("hr_scale")) ?? 2;
      body.hr_upscaler = $("hr_upscaler").value;
      body.hr_second_pass_steps = numberOrNull($("hr_second_pass_steps")) ?? 0;
      body.strength = numberOrNull($("hr_strength")) ?? 0.5;
    }
    if (this.mode === "edit") {
      body.init_image = images.init_image ?? null;
      body.strength = Number($("strength").value);
      if (images.mask) body.mask = images.mask;
    }
    return body;
  }

  upscaleBody(image) {
    return { image, upscaler: $("upscaler").value, scale: numberOrNull($("upscale-scale")) ?? 2 };
  }

  // Fill the form from a job's request or from the fields an infotext gave.
  fill(fields) {
    if (fields.model && [...$("model").options].some((o) => o.value === fields.model)) {
      $("model").value = fields.model;
      this.modelChanged();
    }
    for (const name of FILLABLE) {
      if (!(name in fields) || name === "model") continue;
      const input = $(name);
      if (!input) continue;
      const value = fields[name];
      if (input.type === "checkbox") input.checked = Boolean(value);
      else if (input.tagName === "SELECT" && value && ![...input.options].some((o) => o.value === value)) {
        input.append(new Option(value, value)); // a value this server does not list still shows what was used
        input.value = value;
      } else input.value = value ?? "";
    }
    if (fields.enable_hr && "strength" in fields) $("hr_strength").value = fields.strength;
    else if ("strength" in fields) $("strength").value = fields.strength;
    $("strength-value").value = $("strength").value;
    $("hires").open = Boolean(fields.enable_hr);
    this.refinerChanged();
    this.sizeTyped();
  }

  clearErrors() {
    $("form-error").hidden = true;
    for (const node of this.form.querySelectorAll(".field-error")) node.hidden = true;
    for (const node of this.form.querySelectorAll(".field-invalid")) node.classList.remove("field-invalid");
  }

  // Show an API error next to the field it names (or at the top of the form when it names none shown here).
  showError(error) {
    this.clearErrors();
    const slot = error.field ? this.form.querySelector(`[data-error-for="${CSS.escape(error.field)}"]`) : null;
    if (slot && slot.closest("section")?.hidden !== true) {
      slot.textContent = error.message;
      slot.hidden = false;
      const input = $(error.field) ?? slot.previousElementSibling;
      input?.classList.add("field-invalid");
      slot.scrollIntoView({ block: "nearest" });
      return;
    }
    $("form-error").textContent = error.field ? `${error.field}: ${error.message}` : error.message;
    $("form-error").hidden = false;
  }
}
