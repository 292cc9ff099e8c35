"""A1111 request → :class:`~imagegen.server.dialects.core.Submission`, and a job → A1111's answer. Pure functions.

Compatibility decisions (also in the README's "Serving" section):

- **Fields.** Every A1111 field is accepted (:mod:`.schemas`). A field at the value that makes it a no-op is accepted
  silently; a value imagegen can honour is honoured; a value that would change the image in a way imagegen cannot
  is a 422 naming the field (:func:`check_supported`). The names of the honoured fields are in
  :data:`imagegen.fields.FIELDS`; ``batch_size × n_iter`` images, image *i* with seed + i.
- **eta** is A1111's: DDIM's (default 0, option ``eta_ddim``) and the ancestral and SDE samplers' (default 1, option
  ``eta_ancestral``; 0 removes their fresh noise), each honoured as far as :func:`imagegen.samplers.eta_rule`
  says; samplers without noise ignore it, as in A1111.
- **Extra-network tags.** As A1111 does, every ``<kind:args>`` tag is removed from the prompt (not from the negative
  prompt, which A1111 leaves as it is) before the text encoder sees it. A1111 would apply ``<lora:...>``,
  ``<lyco:...>`` and ``<hypernet:...>``; imagegen cannot yet, so a prompt holding one is refused with a 422 naming
  ``prompt``, unless the request sets ``disable_extra_networks`` true, with which A1111 removes the tags and applies
  none. Prompt attention syntax (``(word:1.2)``, ``[word]``) reaches the text encoder as plain text.
- **Defaults.** Unset steps, cfg_scale, width, height and sampler mean the *model's* defaults (native size, its
  own scheduler), not SD 1.5's 512x512 / Euler: SDXL at 512x512 or a distilled model with Euler gives bad images.
- **Scheduler "Automatic".** A1111 ≥ 1.9 turns Automatic into a per-sampler schedule (Karras for DPM++ 2M,
  DPM++ SDE, DPM++ 2S a, DPM2, DPM2 a; Exponential for DPM++ 2M SDE, DPM++ 2M SDE Heun, DPM++ 3M SDE). This
  dialect does the same, so an A1111 client gets what A1111 would run, and the infotext names the schedule.
- **infotext.** A pasted infotext fills every field the request did not set. Its model and refiner are used only
  when they resolve inside the served models, else ignored, as A1111 ignores a checkpoint it does not have.
- **Options** (:mod:`.options`): ``override_settings`` are checked like ``/options`` and apply to one request
  (kept as the new options when ``override_settings_restore_afterwards`` is false, as in A1111).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from imagegen.errors import InvalidRequest
from imagegen.fields import FIELDS, dialect_names
from imagegen.imageio import encode_image
from imagegen.loading import ModelInfo
from imagegen.metadata import Infotext, infotext_values, parse_infotext, request_fields_from_infotext
from imagegen.requests import INPAINT_FILLS, GenerationRequest
from imagegen.samplers import ScheduleType, eta_rule, parse_sampler
from imagegen.server.catalog import ModelCatalog
from imagegen.server.dialects.a1111.options import CHECKPOINT, check_option, effective_options
from imagegen.server.dialects.a1111.schemas import (
    A1111GenerationRequest,
    A1111ImageResponse,
    A1111Img2ImgRequest,
    A1111Txt2ImgRequest,
)
from imagegen.server.dialects.core import Submission, b64, image_text, read_result_image, renamed_fields
from imagegen.server.jobs.model import Job
from imagegen.server.jobs.queue import JobQueue

__all__ = [
    "DIALECT",
    "Translation",
    "check_supported",
    "image_response",
    "png_info",
    "resolve_sampler",
    "strip_extra_networks",
    "translate",
]

#: The ``dialect`` of the jobs these routes submit (``/interrupt`` and ``/skip`` only touch those).
DIALECT = "a1111"
_Body = TypeVar("_Body", bound=A1111GenerationRequest)

#: GenerationRequest field -> the A1111 field a client sent it as (for error messages).
FIELD_NAMES: Mapping[str, str] = dialect_names("a1111")
_FIELD_PREFIXES: Mapping[str, str] = MappingProxyType({"num_images": "n_iter × batch_size images: "})
#: Request fields this module translates itself; every other field with an A1111 name is copied as it is.
_TRANSLATED = frozenset(
    {
        "prompt",
        "negative_prompt",
        "num_images",
        "sampler",
        "schedule_type",
        "init_image",
        "strength",
        "model",
        "refiner",
        "denoising_end",
        "eta",
        "num_inference_steps",
        "mask",
        "mask_blur",
        "inpainting_fill",
        "invert_mask",
        "hr_upscaler",
        "hr_sampler",
        "hr_schedule_type",
    }
)
#: A1111's "same as the first pass" values of the hires fix's choices.
_SAME = frozenset({"", "Use same sampler", "Use same scheduler", "Use same checkpoint", "Use same choices"})

#: A1111 ≥ 1.9's schedule for "Automatic", per sampler (modules/sd_samplers_kdiffusion.py's sampler options).
AUTOMATIC_SCHEDULES: Mapping[str, ScheduleType] = MappingProxyType(
    {
        "DPM++ 2M": ScheduleType.KARRAS,
        "DPM++ SDE": ScheduleType.KARRAS,
        "DPM++ 2S a": ScheduleType.KARRAS,
        "DPM2": ScheduleType.KARRAS,
        "DPM2 a": ScheduleType.KARRAS,
        "DPM++ 2M SDE": ScheduleType.EXPONENTIAL,
        "DPM++ 2M SDE Heun": ScheduleType.EXPONENTIAL,
        "DPM++ 3M SDE": ScheduleType.EXPONENTIAL,
    }
)
_SHOWN_CHARS = 80


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _unsupported(field: str, value: object, why: str) -> InvalidRequest:
    return InvalidRequest(field, f"{_show(value)} is not supported by imagegen ({why}); omit it or send its default")


def _off(value: float | None, *neutral: float) -> bool:
    """True when a numeric setting is set to something other than its neutral values (NaN included)."""
    return value is not None and not any(value == n for n in neutral)


# --------------------------------------------------------------------------------------------------------------------
# Checks.


def resolve_sampler(name: str | None, scheduler: str | None) -> tuple[str | None, str | None]:
    """(sampler, schedule type) for a GenerationRequest, with A1111's per-sampler "Automatic" schedule applied."""
    with renamed_fields(FIELD_NAMES):
        choice = parse_sampler(name, scheduler)
    if choice is None:
        return None, None
    if choice.uses_model_scheduler:
        return None, choice.schedule_type.value
    schedule = choice.schedule_type
    if schedule is ScheduleType.AUTOMATIC:
        schedule = AUTOMATIC_SCHEDULES.get(choice.name, ScheduleType.AUTOMATIC)
    return choice.name, schedule.value


def check_supported(body: A1111GenerationRequest) -> None:
    """Raise a 422-bound :class:`InvalidRequest` for the first field imagegen cannot honour at its value."""
    # 1. Fields shared by txt2img and img2img.
    if _off(body.subseed_strength, 0):
        raise _unsupported("subseed_strength", body.subseed_strength, "no variation seeds")
    for name in ("seed_resize_from_w", "seed_resize_from_h"):
        if getattr(body, name) > 0:
            raise _unsupported(name, getattr(body, name), "no seed resizing")
    if body.restore_faces:
        raise _unsupported("restore_faces", body.restore_faces, "no face restoration")
    neutral = (
        ("s_min_uncond", (0,)),
        ("s_churn", (0,)),
        ("s_tmin", (0,)),
        ("s_tmax", (0, math.inf)),
        ("s_noise", (1,)),
    )
    for name, values in neutral:
        if _off(getattr(body, name), *values):
            raise _unsupported(name, getattr(body, name), "the samplers' noise settings are fixed")
    if body.firstpass_image:
        raise _unsupported("firstpass_image", "<image>", "no hires fix")
    if body.script_name and not (isinstance(body, A1111Img2ImgRequest) and _is_sd_upscale(body.script_name)):
        raise _unsupported("script_name", body.script_name, "of A1111's scripts only 'SD upscale' (img2img)")
    if body.alwayson_scripts:
        raise _unsupported("alwayson_scripts", sorted(body.alwayson_scripts), "no A1111 extensions")
    for name in ("batch_size", "n_iter"):
        if getattr(body, name) < 1:
            raise InvalidRequest(name, f"must be at least 1, got {getattr(body, name)}")
    # 2. txt2img: every hires-fix field is ignored, as in A1111, while enable_hr is false.
    if isinstance(body, A1111Txt2ImgRequest) and body.enable_hr:
        if (body.hr_checkpoint_name or "") not in _SAME:
            raise _unsupported("hr_checkpoint_name", body.hr_checkpoint_name, "the second pass uses the same model")
        if any(module not in _SAME for module in body.hr_additional_modules or []):
            raise _unsupported("hr_additional_modules", body.hr_additional_modules, "no additional modules")
    # 3. img2img: the inpainting fields are ignored, as in A1111, without a mask.
    if isinstance(body, A1111Img2ImgRequest):
        if body.latent_mask:
            raise _unsupported("latent_mask", "<image>", "the mask serves the latents too")
        if body.mask and not body.mask_round:
            raise _unsupported("mask_round", body.mask_round, "the mask is always rounded (no soft inpainting)")
        if body.resize_mode != 0:
            raise _unsupported("resize_mode", body.resize_mode, "only 0, 'just resize', is implemented")
        if body.init_images is not None and len(body.init_images) > 1:
            raise _unsupported("init_images", f"<{len(body.init_images)} images>", "one init image per request")


def strip_extra_networks(prompt: str, *, disabled: bool) -> str:
    """The prompt the engine gets: as sent (its ``<lora:...>`` tags are applied by the engine and kept in the
    infotext, as A1111 keeps them), or without any extra-network tag when ``disable_extra_networks`` asks A1111 to
    remove them unapplied."""
    from imagegen.prompts.syntax import extract_network_tags

    return extract_network_tags(prompt)[0] if disabled else prompt


def check_overrides(overrides: Mapping[str, Any] | None) -> dict[str, object]:
    """A request's ``override_settings``, each checked as ``/options`` checks it (errors name
    ``override_settings.KEY``)."""
    return {key: check_option(key, value, field=f"override_settings.{key}") for key, value in (overrides or {}).items()}


# --------------------------------------------------------------------------------------------------------------------
# A pasted infotext.


@dataclass(frozen=True, kw_only=True)
class InfotextModels:
    """The checkpoints a pasted infotext names (used only if they resolve inside the served models)."""

    model: str | None = None
    model_hash: str | None = None
    refiner: str | None = None


def apply_infotext(body: _Body) -> tuple[_Body, InfotextModels]:
    """Fill the fields the client did not send from ``body.infotext``, as A1111's ``apply_infotext`` does."""
    if not body.infotext or not body.infotext.strip():
        return body, InfotextModels()
    fields = request_fields_from_infotext(body.infotext)
    sent = body.model_fields_set
    update: dict[str, Any] = {}
    for spec in FIELDS:
        # The models are looked up among the served ones; the strength is a hires-fix setting in txt2img.
        if spec.field in ("model", "refiner") or spec.field not in fields or spec.a1111 is None:
            continue
        if spec.field == "strength" and not isinstance(body, A1111Img2ImgRequest):
            continue
        if spec.a1111 in type(body).model_fields and spec.a1111 not in sent:
            update[spec.a1111] = fields[spec.field]
    if "eta" in update and _sampler_name(update.get("sampler_name", body.sampler_name)) != _sampler_name(
        fields.get("sampler")
    ):
        # The infotext's eta belongs to the sampler that made it; another sampler keeps its own default.
        del update["eta"]
    model_hash = infotext_values(parse_infotext(body.infotext)).get("Model hash")
    models = InfotextModels(model=fields.get("model"), model_hash=model_hash, refiner=fields.get("refiner"))
    return body.model_copy(update=update), models


def _sampler_name(text: object) -> str | None:
    try:
        choice = parse_sampler(str(text) if text else None)
    except InvalidRequest:
        return str(text)
    return choice.name if choice is not None else None


# --------------------------------------------------------------------------------------------------------------------
# Models.


def _quiet_find(catalog: ModelCatalog, *names: str | None) -> ModelInfo | None:
    """The first of ``names`` that is a served model, else None (an infotext may name models we lack)."""
    for name in names:
        if not name:
            continue
        try:
            return catalog.find(name, field="infotext")
        except InvalidRequest:
            continue
    return None


def current_checkpoint(catalog: ModelCatalog, options: Mapping[str, object]) -> ModelInfo:
    """The model that requests naming none use: the ``sd_model_checkpoint`` option, else the server's default."""
    current = options.get(CHECKPOINT)
    if current:
        return catalog.find(str(current), field=CHECKPOINT)
    return catalog.default()


# --------------------------------------------------------------------------------------------------------------------
# A1111 request -> Submission.


@dataclass(frozen=True, kw_only=True)
class Translation:
    """What :func:`translate` makes of an A1111 request."""

    submission: Submission
    #: The request with the fields a pasted infotext filled (what the answer echoes).
    body: A1111GenerationRequest
    #: The options this request runs with (stored, then its override_settings): the answer's image format.
    options: Mapping[str, object]
    #: Checked ``override_settings`` (the checkpoint as a model title): kept when ``restore_afterwards`` is false.
    overrides: Mapping[str, object]


def translate(
    body: A1111GenerationRequest,
    *,
    catalog: ModelCatalog,
    stored_options: Mapping[str, object],
    img2img: bool,
    upscalers: Sequence[str] = (),
) -> Translation:
    """The :class:`Submission` an A1111 txt2img / img2img request asks for; errors name the A1111 field.
    ``upscalers`` are the names ``/upscalers`` lists, in its order (the SD upscale script names one by index)."""
    # 1. A pasted infotext fills unset fields; the request's options; what cannot be honoured is refused.
    body, hints = apply_infotext(body)
    overrides = check_overrides(body.override_settings)
    check_supported(body)
    # 2. Models, inside the served ones only: the request's checkpoint, a pasted infotext's, else the option's.
    if CHECKPOINT in overrides:
        model = catalog.find(str(overrides[CHECKPOINT]), field=f"override_settings.{CHECKPOINT}")
        overrides[CHECKPOINT] = model.title
    options = effective_options(stored_options, overrides)
    if CHECKPOINT not in overrides:
        model = _quiet_find(catalog, hints.model_hash, hints.model) or current_checkpoint(catalog, options)
    refiner = _refiner(catalog, body, hints)
    # 3. The fields: those A1111 names as imagegen does are copied, the others translated here.
    sampler, schedule_type = resolve_sampler(body.sampler_name or body.sampler_index, body.scheduler)
    fields: dict[str, object] = {
        spec.field: getattr(body, spec.a1111)
        for spec in FIELDS
        if spec.a1111 and spec.field not in _TRANSLATED and getattr(body, spec.a1111, None) is not None
    }
    fields.update(
        prompt=strip_extra_networks(body.prompt or "", disabled=body.disable_extra_networks),
        negative_prompt=body.negative_prompt or "",
        num_images=body.batch_size * body.n_iter,
        sampler=sampler,
        schedule_type=schedule_type,
        model=model.ref,
        refiner=refiner.ref if refiner else None,
        num_inference_steps=body.steps,
    )
    names = dict(FIELD_NAMES)
    prefixes = dict(_FIELD_PREFIXES)
    init_image = None
    if img2img:
        images = getattr(body, "init_images", None)
        if not images:
            raise InvalidRequest("init_images", "img2img needs one base64-encoded image in init_images")
        init_image = images[0]
        strength = 0.75 if body.denoising_strength is None else body.denoising_strength
        fields["strength"] = strength
        if options["img2img_fix_steps"]:
            # A1111's img2img_fix_steps: run the requested steps on the image, not steps × strength of them.
            steps = body.steps or model.defaults.num_inference_steps
            fields["num_inference_steps"] = int(steps / min(max(strength, 1e-3), 0.999))
            prefixes["num_inference_steps"] = "with img2img_fix_steps, steps / denoising_strength: "
    if refiner is not None and body.refiner_switch_at is not None:
        fields["denoising_end"] = body.refiner_switch_at
    # 4. eta: the request's, else the option A1111 reads for this sampler; samplers without noise ignore it.
    rule = eta_rule(parse_sampler(sampler, schedule_type), model.scheduler_config)
    if rule is not None and body.eta is not None:
        fields["eta"] = body.eta
    elif rule is not None:
        option = "eta_ddim" if rule.pipeline_argument else "eta_ancestral"
        fields["eta"] = options[option]
        names["eta"] = f"override_settings.{option}" if option in overrides else option
    if body.tiling is None:  # A1111: the request's tiling, else the "tiling" option
        fields["tiling"] = options["tiling"]
        names["tiling"] = "override_settings.tiling" if "tiling" in overrides else "tiling"
    # 5. The prompt language's options: clip skip and emphasis, from the request's override or the stored option.
    for field, option in (("clip_skip", "CLIP_stop_at_last_layers"), ("emphasis", "emphasis")):
        fields[field] = options[option]
        names[field] = f"override_settings.{option}" if option in overrides else option
    mask = None
    if isinstance(body, A1111Img2ImgRequest):
        mask = body.mask or None
        fields.update(_inpaint_fields(body))
        if body.initial_noise_multiplier is None:  # A1111: the request's, else the option's
            fields["initial_noise_multiplier"] = options["initial_noise_multiplier"]
            option = "initial_noise_multiplier"
            names[option] = f"override_settings.{option}" if option in overrides else option
        if body.script_name:  # check_supported let only "SD upscale" through
            fields.update(sd_upscale_fields(body.script_args, upscalers))
            names.update(sd_upscale="script_args[3]", sd_upscale_upscaler="script_args[2]")
            names["sd_upscale_overlap"] = "script_args[1]"
    if isinstance(body, A1111Txt2ImgRequest) and not body.enable_hr:
        # A1111 ignores every hires-fix field while enable_hr is false: so does imagegen (their defaults apply).
        defaults = {f.name: f.default for f in dataclasses.fields(GenerationRequest)}
        fields.update({name: defaults[name] for name in fields if name.startswith("hr_")})
    if isinstance(body, A1111Txt2ImgRequest) and body.enable_hr:
        fields.update(
            hr_upscaler=body.hr_upscaler or "Latent",
            hr_sampler=None if (body.hr_sampler_name or "") in _SAME else body.hr_sampler_name,
            hr_schedule_type=None if (body.hr_scheduler or "") in _SAME else body.hr_scheduler,
        )
        fields["strength"] = 0.75 if body.denoising_strength is None else body.denoising_strength
    every = options["show_progress_every_n_steps"]
    submission = Submission(
        fields=fields,
        init_image=init_image,
        mask=mask,
        names=names,
        prefixes=prefixes,
        dialect=DIALECT,
        # A1111's live previews (its default: every 10 steps), shown by /sdapi/v1/progress as current_image.
        preview_every=every if options["live_previews_enable"] and isinstance(every, int) and every > 0 else 0,
    )
    return Translation(submission=submission, body=body, options=options, overrides=overrides)


def _is_sd_upscale(name: str) -> bool:
    return name.strip().lower() == "sd upscale"


def sd_upscale_fields(args: Sequence[Any], upscalers: Sequence[str]) -> dict[str, object]:
    """A1111's SD upscale ``script_args``: ``[info, overlap, upscaler_index, scale_factor]`` (an upscaler's name is
    taken too), as imagegen's ``sd_upscale`` fields."""
    values = list(args) + [None] * (4 - len(args))
    overlap = 64 if values[1] is None else values[1]
    index = 0 if values[2] is None else values[2]
    scale = 2.0 if values[3] is None else values[3]
    if isinstance(index, str):
        upscaler = index
    elif isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(upscalers):
        upscaler = upscalers[index]
    else:
        listed = ", ".join(f"{i}: {name}" for i, name in enumerate(upscalers))
        raise InvalidRequest(
            "script_args[2]", f"must be an upscaler's index in /sdapi/v1/upscalers ({listed}), got {index!r}"
        )
    if not isinstance(overlap, int) or isinstance(overlap, bool):
        raise InvalidRequest("script_args[1]", f"must be the tile overlap in pixels, got {overlap!r}")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise InvalidRequest("script_args[3]", f"must be the scale factor, got {scale!r}")
    return {"sd_upscale": float(scale), "sd_upscale_upscaler": upscaler, "sd_upscale_overlap": overlap}


def _inpaint_fields(body: A1111Img2ImgRequest) -> dict[str, object]:
    """A1111's inpainting fields as imagegen's: the fill by number, the invert flag as 0/1, one blur for both axes."""
    blur = body.mask_blur
    if blur is None:
        if body.mask_blur_x != body.mask_blur_y:
            raise _unsupported(
                "mask_blur_y", body.mask_blur_y, f"the mask is blurred alike on both axes; send {body.mask_blur_x}"
            )
        blur = body.mask_blur_x
    fills = INPAINT_FILLS
    if not 0 <= body.inpainting_fill < len(fills):
        raise InvalidRequest("inpainting_fill", f"must be 0 to 3 ({', '.join(fills)}), got {body.inpainting_fill}")
    if body.inpainting_mask_invert not in (0, 1):
        raise InvalidRequest("inpainting_mask_invert", f"must be 0 or 1, got {body.inpainting_mask_invert}")
    return {
        "mask_blur": blur,
        "inpainting_fill": fills[body.inpainting_fill],
        "invert_mask": body.inpainting_mask_invert == 1,
    }


def _refiner(catalog: ModelCatalog, body: A1111GenerationRequest, hints: InfotextModels) -> ModelInfo | None:
    name = (body.refiner_checkpoint or "").strip()
    if name and name != "None":
        return catalog.find(name, field="refiner_checkpoint")
    if "refiner_checkpoint" not in body.model_fields_set:
        return _quiet_find(catalog, hints.refiner)
    return None


# --------------------------------------------------------------------------------------------------------------------
# Job -> A1111 answer.


def _timestamp(seconds: float | None) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.localtime(seconds or 0))


def info_dict(job: Job, body: A1111GenerationRequest) -> dict[str, Any]:
    """A1111's ``info`` (sent as a JSON string): effective settings read back from the first image's infotext."""
    first = parse_infotext(job.infotexts[0]) if job.infotexts else Infotext()
    seeds = [int(seed) for seed in job.seeds]
    count = len(seeds) or body.batch_size * body.n_iter
    prompt = body.prompt or ""
    negative = body.negative_prompt or ""
    extra: dict[str, Any] = {}
    if first.schedule_type:
        extra["Schedule type"] = first.schedule_type
    if first.refiner:
        extra["Refiner"] = first.refiner
        extra["Refiner switch at"] = first.refiner_switch_at
    extra.update(first.extra)
    return {
        "prompt": prompt,
        "all_prompts": [prompt] * count,
        "negative_prompt": negative,
        "all_negative_prompts": [negative] * count,
        "seed": seeds[0] if seeds else body.seed,
        "all_seeds": seeds,
        "subseed": body.subseed,
        "all_subseeds": [body.subseed] * count,
        "subseed_strength": 0.0,
        "width": first.width,
        "height": first.height,
        "sampler_name": first.sampler,
        "scheduler": first.schedule_type,
        "cfg_scale": first.cfg_scale,
        "steps": first.steps,
        "batch_size": body.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": first.model or job.model,
        "sd_model_hash": first.model_hash,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": first.denoising_strength,
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": list(job.infotexts),
        "styles": [],
        "job_timestamp": _timestamp(job.created_at),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": first.version,
        # imagegen additions: the job behind the call, and what the user should know (e.g. prompt truncation).
        "job_id": job.id,
        "warnings": list(job.warnings),
    }


def image_response(
    queue: JobQueue, job: Job, body: A1111GenerationRequest, options: Mapping[str, object]
) -> A1111ImageResponse:
    """The txt2img / img2img answer for a succeeded job, its images in the options' format (``samples_format``,
    ``jpeg_quality``, ``webp_lossless``, ``enable_pnginfo``), as A1111 encodes them. Reads files: call off the
    event loop."""
    images = []
    if body.send_images:
        for index, name in enumerate(job.images):
            infotext = job.infotexts[index] if options["enable_pnginfo"] and index < len(job.infotexts) else None
            data = encode_image(
                read_result_image(queue, name),
                infotext,
                format=str(options["samples_format"]),
                quality=int(str(options["jpeg_quality"])),
                lossless=bool(options["webp_lossless"]),
            )
            images.append(b64(data))
    parameters = body.model_dump()
    if isinstance(body, A1111Img2ImgRequest) and not body.include_init_images:
        # As A1111: the echo leaves out the (large) input images unless asked for.
        parameters["init_images"] = None
        parameters["mask"] = None
    return A1111ImageResponse(
        images=images, parameters=jsonable(parameters), info=json.dumps(jsonable(info_dict(job, body)))
    )


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (JSON has no NaN), for echoing requests back."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


# --------------------------------------------------------------------------------------------------------------------
# png-info.


def png_info(data: str, *, max_bytes: int) -> dict[str, Any]:
    """A1111's png-info answer for a base64 image: the infotext, other text items, and the parsed parameters."""
    text, items = image_text(data, max_bytes=max_bytes)
    return {"info": text, "items": items, "parameters": infotext_parameters(text) if text else {}}


def infotext_parameters(text: str) -> dict[str, Any]:
    """A1111's parsed-parameters dict: ``Prompt``, ``Negative prompt``, each ``key: value``, Size as Size-1/Size-2."""
    info = parse_infotext(text)
    return {"Prompt": info.prompt, "Negative prompt": info.negative_prompt, **infotext_values(info)}
