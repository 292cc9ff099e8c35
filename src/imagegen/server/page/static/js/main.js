// The page: wires the form, the mask painter, the queue and history to the native job API. Everything it does is a
// documented API call (GET /v1/models, POST /v1/jobs, GET /v1/jobs/{id}/events, ...): nothing here is out of reach
// of an API client.

import { Api } from "./api.js";
import { $, JobForm } from "./form.js";
import { Jobs } from "./jobs.js";
import { MaskPainter } from "./mask.js";

// A 401 asks for a key; with a key already kept, that key was refused.
const api = new Api(() => askForKey(api.key ? "That key was not accepted." : undefined));
const form = new JobForm($("job-form"));
const mask = new MaskPainter($("mask-canvas"));
const jobs = new Jobs(api, {
  onDone: (job) => {
    form.lastSeed = job.seeds[0] ?? form.lastSeed;
  },
  onOpen: (job, index) => openDetail(job, index),
  onError: (error) => showProblem(error),
});
let source = null; // the edit/upscale input as a data URL
let detailJob = null;
let detailIndex = 0;
let started = false;

function showProblem(error) {
  form.showError({ field: error.field ?? null, message: error.message ?? String(error) });
}

// ---- API key -------------------------------------------------------------------------------------------------------

let keyPromise = null;

function askForKey(message) {
  $("key-button").hidden = false;
  if (message || !keyPromise) {
    $("key-error").hidden = !message;
    $("key-error").textContent = message ?? "";
  }
  if (keyPromise) return keyPromise;
  const dialog = $("key-dialog");
  $("key-input").value = "";
  keyPromise = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        keyPromise = null;
        const key = $("key-input").value.trim();
        if (key) api.key = key;
        resolve();
        if (key) boot();
      },
      { once: true },
    );
  });
  if (!dialog.open) dialog.showModal();
  return keyPromise;
}

// ---- Loading what the server offers --------------------------------------------------------------------------------

async function boot() {
  try {
    const models = await api.get("/v1/models");
    form.setModels(models.data);
  } catch (error) {
    if (error.status === 401) {
      $("server-state").textContent = "an API key is needed";
      return;
    }
    $("server-state").textContent = `server unreachable: ${error.message}`;
    return;
  }
  $("server-state").textContent = "";
  await Promise.all([loadSamplers(), loadNetworks(), loadUpscalers()]);
  if (!started) {
    started = true;
    jobs.start();
  } else {
    jobs.refreshQueue();
    jobs.refreshHistory();
  }
}

async function loadSamplers() {
  const samplers = await api.get("/v1/samplers");
  const select = $("sampler");
  select.replaceChildren(new Option("model default", ""));
  for (const sampler of samplers.data) select.append(new Option(sampler.name, sampler.name));
  const types = $("schedule_type");
  types.replaceChildren(new Option("automatic", ""));
  for (const type of samplers.schedule_types) types.append(new Option(type, type));
}

async function loadNetworks() {
  const [loras, embeddings] = await Promise.all([
    api.get("/v1/loras"),
    api.get(`/v1/embeddings?model=${encodeURIComponent($("model").value)}`),
  ]);
  const loraPicker = $("lora-picker");
  loraPicker.replaceChildren(new Option("insert <lora:…>", ""));
  for (const lora of loras.data.filter((l) => !l.error)) loraPicker.append(new Option(lora.name, lora.name));
  const embeddingPicker = $("embedding-picker");
  embeddingPicker.replaceChildren(new Option("insert a word", ""));
  for (const embedding of embeddings.data.filter((e) => e.usable)) {
    embeddingPicker.append(new Option(embedding.name, embedding.name));
  }
}

async function loadUpscalers() {
  const upscalers = await api.get("/v1/upscalers");
  const available = upscalers.data.filter((u) => u.available && u.name !== "None");
  const hires = $("hr_upscaler");
  hires.replaceChildren(...upscalers.latent_modes.map((name) => new Option(name, name)));
  for (const upscaler of available) hires.append(new Option(upscaler.name, upscaler.name));
  $("upscaler").replaceChildren(...available.map((u) => new Option(u.name, u.name)));
}

// Insert text at the prompt's cursor, with a space on either side where needed.
function insertIntoPrompt(text) {
  const prompt = $("prompt");
  const start = prompt.selectionStart ?? prompt.value.length;
  const end = prompt.selectionEnd ?? start;
  const before = prompt.value.slice(0, start);
  const after = prompt.value.slice(end);
  const left = before && !/\s$/.test(before) ? " " : "";
  const right = after && !/^\s/.test(after) ? " " : "";
  prompt.value = `${before}${left}${text}${right}${after}`;
  const caret = before.length + left.length + text.length;
  prompt.setSelectionRange(caret, caret);
  prompt.focus();
}

// ---- Modes and the source image ------------------------------------------------------------------------------------

function setMode(mode) {
  $("job-form").dataset.mode = mode;
  for (const tab of document.querySelectorAll(".tabs button")) {
    tab.setAttribute("aria-selected", String(tab.dataset.mode === mode));
  }
  for (const section of document.querySelectorAll("[data-modes]")) {
    section.hidden = !section.dataset.modes.split(" ").includes(mode);
  }
  $("submit").textContent = { generate: "Generate", edit: "Generate from image", upscale: "Upscale" }[mode];
  $("mask-canvas").hidden = mode !== "edit";
  form.clearErrors();
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function setSource(dataUrl) {
  source = dataUrl;
  const image = $("source-image");
  await new Promise((resolve, reject) => {
    image.onload = resolve;
    image.onerror = () => reject(new Error("the browser cannot read this image"));
    image.src = dataUrl;
  });
  mask.reset(image.naturalWidth, image.naturalHeight);
  $("source-box").hidden = false;
}

async function urlToDataUrl(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot fetch the image: ${response.status}`);
  return readFile(await response.blob());
}

// ---- Submitting --------------------------------------------------------------------------------------------------

async function submit() {
  form.clearErrors();
  const mode = form.mode;
  const button = $("submit");
  button.disabled = true;
  try {
    let job;
    if (mode === "upscale") {
      if (!source) throw { field: "image", message: "choose an image to upscale" };
      job = await api.post("/v1/upscales", form.upscaleBody(source));
    } else {
      if (mode === "edit" && !source) throw { field: "init_image", message: "choose an image to start from" };
      const images = mode === "edit" ? { init_image: source, mask: $("use-mask").checked ? mask.toDataURL() : null } : {};
      if (mode === "edit" && $("use-mask").checked && !images.mask) {
        throw { field: "mask", message: "paint the area to regenerate, or untick inpainting" };
      }
      job = await api.post("/v1/jobs", form.jobBody(images));
    }
    jobs.refreshQueue();
    jobs.follow(job);
  } catch (error) {
    showProblem(error);
  } finally {
    button.disabled = false;
  }
}

// ---- The detail dialog ---------------------------------------------------------------------------------------------

function openDetail(job, index) {
  detailJob = job;
  detailIndex = index;
  $("detail-image").src = job.images[index];
  $("detail-image").alt = job.request?.prompt ?? "";
  $("detail-infotext").textContent = job.infotexts[index] ?? "";
  $("detail-download").href = job.images[index];
  $("detail-download").download = `${job.id}-${index}.png`;
  $("detail").showModal();
}

async function detailAction(action) {
  const job = detailJob;
  if (!job) return;
  try {
    if (action === "reuse") {
      form.fill({ ...job.request, seed: job.seeds[detailIndex] ?? job.request.seed, num_images: 1 });
      setMode("generate");
    } else if (action === "img2img" || action === "inpaint" || action === "upscale") {
      await setSource(await urlToDataUrl(job.images[detailIndex]));
      setMode(action === "upscale" ? "upscale" : "edit");
      $("use-mask").checked = action === "inpaint";
      if (action !== "upscale") form.fill({ ...job.request, seed: job.seeds[detailIndex] ?? -1, num_images: 1 });
    } else if (action === "delete") {
      if (!confirm("Delete this job and its images?")) return;
      await api.delete(`/v1/jobs/${encodeURIComponent(job.id)}?purge=true`);
      jobs.refreshHistory();
    }
    $("detail").close();
  } catch (error) {
    $("detail").close();
    showProblem(error);
  }
}

// ---- PNG info: drop or paste an image anywhere -------------------------------------------------------------------

async function loadSettingsFrom(file) {
  try {
    const image = await readFile(file);
    const info = await api.post("/v1/png-info", { image });
    if (!info.fields) {
      showProblem({ message: "this image carries no generation settings (no A1111 infotext)" });
      return;
    }
    form.fill(info.fields);
    if (form.mode === "upscale") setMode("generate");
  } catch (error) {
    showProblem(error);
  }
}

function imageFileOf(items) {
  for (const item of items ?? []) {
    const file = item instanceof File ? item : item.getAsFile?.();
    if (file && /^image\/(png|jpeg|webp)$/.test(file.type)) return file;
  }
  return null;
}

// ---- Wiring ------------------------------------------------------------------------------------------------------

for (const tab of document.querySelectorAll(".tabs button")) tab.addEventListener("click", () => setMode(tab.dataset.mode));
$("model").addEventListener("change", () => {
  form.modelChanged();
  loadNetworks().catch(showProblem);
});
$("refiner").addEventListener("change", () => form.refinerChanged());
$("size-preset").addEventListener("change", () => form.presetChanged());
$("width").addEventListener("input", () => form.sizeTyped());
$("height").addEventListener("input", () => form.sizeTyped());
$("seed-random").addEventListener("click", () => {
  $("seed").value = -1;
});
$("seed-reuse").addEventListener("click", () => {
  if (form.lastSeed !== null) $("seed").value = form.lastSeed;
});
$("strength").addEventListener("input", () => {
  $("strength-value").value = $("strength").value;
});
$("enable_hr").addEventListener("change", () => {
  if ($("enable_hr").checked) $("hires").open = true;
});
$("lora-picker").addEventListener("change", (event) => {
  if (event.target.value) insertIntoPrompt(`<lora:${event.target.value}:1>`);
  event.target.value = "";
});
$("embedding-picker").addEventListener("change", (event) => {
  if (event.target.value) insertIntoPrompt(event.target.value);
  event.target.value = "";
});
$("source-file").addEventListener("change", async (event) => {
  const file = event.target.files?.[0];
  if (file) await setSource(await readFile(file)).catch(showProblem);
});
$("mask-brush").addEventListener("click", () => {
  mask.erasing = false;
  $("mask-brush").setAttribute("aria-pressed", "true");
  $("mask-eraser").setAttribute("aria-pressed", "false");
});
$("mask-eraser").addEventListener("click", () => {
  mask.erasing = true;
  $("mask-brush").setAttribute("aria-pressed", "false");
  $("mask-eraser").setAttribute("aria-pressed", "true");
});
$("mask-size").addEventListener("input", (event) => {
  mask.size = Number(event.target.value);
});
$("mask-invert").addEventListener("click", () => {
  mask.invert();
  $("use-mask").checked = true;
});
$("mask-clear").addEventListener("click", () => mask.clear());
$("mask-canvas").addEventListener("pointerdown", () => {
  $("use-mask").checked = true;
});
$("job-form").addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    submit();
  }
});
$("history-newer").addEventListener("click", () => jobs.newer());
$("history-older").addEventListener("click", () => jobs.older());
for (const button of document.querySelectorAll("#detail [data-action]")) {
  button.addEventListener("click", () => detailAction(button.dataset.action));
}
$("key-button").addEventListener("click", () => askForKey());

let dragDepth = 0;
document.addEventListener("dragenter", (event) => {
  if ([...(event.dataTransfer?.types ?? [])].includes("Files")) {
    dragDepth += 1;
    $("drop-hint").hidden = false;
  }
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) $("drop-hint").hidden = true;
});
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  $("drop-hint").hidden = true;
  // A drop on the source picker sets the image to edit; anywhere else it reads the image's settings.
  const file = imageFileOf(event.dataTransfer?.files);
  if (!file) return;
  if (event.target.closest?.("#source-box, #source-file")) readFile(file).then(setSource).catch(showProblem);
  else loadSettingsFrom(file);
});
document.addEventListener("paste", (event) => {
  if (event.target.closest?.("textarea, input")) return;
  const file = imageFileOf(event.clipboardData?.items);
  if (file) {
    event.preventDefault();
    loadSettingsFrom(file);
  }
});

setMode("generate");
boot();
