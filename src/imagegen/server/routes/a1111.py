"""The A1111-compatible ``/sdapi/v1/*`` API (stable-diffusion-webui 1.10 shapes) on imagegen's shared job queue.

``txt2img`` and ``img2img`` build one :class:`~imagegen.requests.GenerationRequest`, submit it like any other job
(``dialect="a1111"``), so A1111 clients and native clients share one fair queue, and block until it ends.

Compatibility decisions (also in the README's "Serving" section):

- **Fields.** Every A1111 field is accepted (:mod:`imagegen.server.schemas_a1111`). Honoured: prompt,
  negative_prompt, seed, sampler_name / sampler_index, scheduler, batch_size × n_iter (image *i* gets seed + i),
  steps, cfg_scale, width, height, denoising_strength (img2img), init_images (one image), refiner_checkpoint,
  refiner_switch_at (≈ diffusers ``denoising_end``), override_settings.sd_model_checkpoint (and
  override_settings_restore_afterwards false, which makes that model the default), send_images,
  include_init_images, infotext. Refused with a 422 naming the field unless at their default: styles,
  subseed_strength, seed_resize_from_h/w, restore_faces, tiling, eta (see below), s_churn / s_noise / s_tmin /
  s_tmax / s_min_uncond, firstpass_image, script_name, alwayson_scripts, other override_settings (unless equal to
  the current option value), enable_hr, mask / latent_mask (no inpainting yet), resize_mode (only 0, "just
  resize"), initial_noise_multiplier, more than one init image. Accepted without effect, as in A1111 when they do
  not apply: subseed (without subseed_strength), every hr_* / firstphase_* field while enable_hr is false,
  denoising_strength in txt2img (a hires-fix setting), the mask_* / inpaint* fields without a mask,
  image_cfg_scale (instruct-pix2pix models only), save_images / do_not_save_* (results are always kept in the data
  directory), seed_enable_extras, comments, script_args, force_task_id.
- **Extra-network tags.** As A1111 does, every ``<kind:args>`` tag is removed from the prompt (not from the negative
  prompt, which A1111 leaves as it is) before the text encoder sees it. A1111 would apply ``<lora:...>``,
  ``<lyco:...>`` and ``<hypernet:...>``; imagegen cannot yet, so a prompt holding one is refused with a 422 naming
  ``prompt``, unless the request sets ``disable_extra_networks`` true, with which A1111 removes the tags and applies
  none: then they are removed here too. Tags of other kinds are removed and ignored, as in A1111. Prompt attention
  syntax (``(word:1.2)``, ``[word]``) is not interpreted: it reaches the text encoder as plain text.
- **Defaults.** Unset steps, cfg_scale, width, height and sampler mean the *model's* defaults (native size, its
  own scheduler), not SD 1.5's 512x512 / Euler: SDXL at 512x512 or a distilled model with Euler gives bad images.
- **Scheduler "Automatic".** A1111 ≥ 1.9 turns Automatic into a per-sampler schedule (Karras for DPM++ 2M,
  DPM++ SDE, DPM++ 2S a, DPM2, DPM2 a; Exponential for DPM++ 2M SDE, DPM++ 2M SDE Heun, DPM++ 3M SDE). This
  dialect does the same, so an A1111 client gets what A1111 would run, and the infotext names the schedule.
  (The library and the native API keep Automatic = the model's own schedule.)
- **eta**: DDIM honours any eta from 0 to 1 (diffusers' DDIM takes it; webuiapi always sends 1.0, which A1111 also
  applies to DDIM), and the infotext records it as ``Eta DDIM`` as A1111's does. The ancestral and SDE samplers run
  with eta 1, A1111's default for them, so other values are refused for those; deterministic samplers ignore it
  (A1111 too).
- **infotext.** A pasted infotext fills every field the request did not set (prompt, seed, steps, sampler, size,
  ...). Its model and refiner are used only when they resolve inside the configured models, else ignored, as A1111
  ignores a checkpoint it does not have.
- **Interrupted jobs** (``/interrupt``, ``/skip``, or a native DELETE) answer 409 in A1111's error shape: imagegen
  keeps no partial image. ``/interrupt`` and ``/skip`` cancel the running jobs submitted through this dialect only,
  never a native or OpenAI client's job. ``/skip`` equals ``/interrupt``: the engine has no per-image skip, so a
  batch job is cancelled as a whole.
- **Errors** use A1111's shape ``{"error", "detail", "body", "errors"}``; validation errors are 422 and ``detail``
  starts with the A1111 field name.
- refresh-checkpoints / unload-checkpoint / reload-checkpoint are no-ops: models are what the operator configured
  and the workers load them on demand. ``memory`` reports the API process's host RAM; the device belongs to the
  worker processes, so ``cuda`` holds an ``error`` saying so.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from imagegen.errors import InvalidRequest, ModelNotFound
from imagegen.imageio import decode_base64
from imagegen.metadata import Infotext, parse_infotext, read_infotext, request_fields_from_infotext
from imagegen.requests import GenerationRequest
from imagegen.samplers import ScheduleType, list_samplers, list_schedule_types, parse_sampler
from imagegen.server.deps import get_service
from imagegen.server.errors import ErrorInfo, register_dialect_errors
from imagegen.server.jobs import Job, JobStatus
from imagegen.server.routes.dialect_support import (
    b64,
    decode_input_image,
    find_model,
    fit_size,
    job_exception,
    jsonable,
    read_result_image,
    renamed_fields,
    service_limits,
    status_value,
)
from imagegen.server.schemas_a1111 import (
    A1111GenerationRequest,
    A1111ImageResponse,
    A1111Img2ImgRequest,
    A1111Model,
    A1111PngInfoRequest,
    A1111PngInfoResponse,
    A1111ProgressResponse,
    A1111Txt2ImgRequest,
)

if TYPE_CHECKING:
    from imagegen.loading import ModelInfo
    from imagegen.server.service import JobService

__all__ = [
    "PREFIX",
    "install_a1111_error_handling",
    "render_a1111_error",
    "router",
    "strip_extra_networks",
    "to_generation_request",
]

PREFIX = "/sdapi/v1"
#: The ``dialect`` of the jobs these routes submit (``/interrupt`` and ``/skip`` only touch those).
DIALECT = "a1111"

router = APIRouter(prefix=PREFIX, tags=["A1111 compatible"])

_Body = TypeVar("_Body", bound=A1111GenerationRequest)

#: GenerationRequest field -> the A1111 field a client sent it as (for error messages).
FIELD_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "num_inference_steps": "steps",
        "guidance_scale": "cfg_scale",
        "num_images": "batch_size",
        "sampler": "sampler_name",
        "schedule_type": "scheduler",
        "init_image": "init_images",
        "strength": "denoising_strength",
        "model": "override_settings.sd_model_checkpoint",
        "refiner": "refiner_checkpoint",
        "denoising_end": "refiner_switch_at",
    }
)
_FIELD_PREFIXES: Mapping[str, str] = MappingProxyType({"num_images": "n_iter × batch_size images: "})

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
# Samplers whose noise A1111 scales by eta (default 1): diffusers' versions run with exactly 1, so only 1 is honoured.
# DDIM's eta (A1111's default 0) is passed on to diffusers' DDIM scheduler, which takes any value.
_ETA_ONE = frozenset(
    {"Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"}
)
_ETA_PASSED = "DDIM"

#: A1111's extra-network tag (modules/extra_networks.py), e.g. ``<lora:name:0.8>``: a word, a colon, then arguments.
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
#: Tag kinds A1111 applies (its built-in Lora extension registers ``lora`` and ``lyco``): imagegen cannot yet.
_APPLIED_NETWORKS = frozenset({"lora", "lyco", "hypernet"})

#: Settings A1111 clients send in override_settings at values that change nothing in imagegen.
_NEUTRAL_OVERRIDES: Mapping[str, tuple[object, ...]] = MappingProxyType(
    {
        "CLIP_stop_at_last_layers": (1,),
        "sd_vae": ("Automatic", "None", None),
        "samples_format": ("png",),
        "eta_noise_seed_delta": (0,),
        "enable_pnginfo": (True,),
    }
)
#: What GET /options reports besides the stored options (A1111's defaults for settings imagegen does not vary).
_OPTION_DEFAULTS: Mapping[str, object] = MappingProxyType(
    {
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
        "samples_format": "png",
        "eta_noise_seed_delta": 0,
        "enable_pnginfo": True,
        "sd_checkpoints_limit": 1,
    }
)
# /options is in-memory state of the API process: bounded, so a client cannot grow it without limit.
_MAX_OPTIONS = 256
_MAX_OPTION_CHARS = 8192
_SHOWN_CHARS = 80


# --------------------------------------------------------------------------------------------------------------------
# Errors in A1111's shape.


_ERROR_TYPES: Mapping[int, str] = MappingProxyType(
    {422: "RequestValidationError", 401: "HTTPException", 404: "HTTPException", 409: "Interrupted"}
)


def render_a1111_error(request: Request, info: ErrorInfo) -> Response:
    """A1111's error body ``{"error", "detail", "body", "errors"}``; request-validation errors are 422 as in A1111.

    ``body`` stays empty: echoing a request could mean echoing megabytes of base64 back.
    """
    status = 422 if info.status == 400 and info.code == "invalid_request" else info.status
    kind = _ERROR_TYPES.get(status, "HTTPException" if status < 500 else "RuntimeError")
    content = {"error": kind, "detail": info.message, "body": "", "errors": info.message}
    return JSONResponse(content, status_code=status, headers=dict(info.headers))


def install_a1111_error_handling(app: FastAPI) -> None:
    """Make the app's error handlers answer ``/sdapi/`` paths in A1111's shape (called by ``create_app``)."""
    register_dialect_errors(app, ("/sdapi/",), render_a1111_error)


# --------------------------------------------------------------------------------------------------------------------
# A1111 request -> GenerationRequest (pure functions, unit-tested without a server).


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _unsupported(field: str, value: object, why: str) -> InvalidRequest:
    return InvalidRequest(field, f"{_show(value)} is not supported by imagegen ({why}); omit it or send its default")


def _off(value: float | None, *neutral: float) -> bool:
    """True when a numeric setting is set to something other than its neutral values (NaN included)."""
    return value is not None and not any(value == n for n in neutral)


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


def check_supported(body: A1111GenerationRequest, *, options: Mapping[str, Any]) -> None:
    """Raise a 422-bound :class:`InvalidRequest` for the first field imagegen cannot honour at its value."""
    # 1. Fields shared by txt2img and img2img.
    if body.styles:
        raise _unsupported("styles", body.styles, "no prompt styles; put the style's words in the prompt")
    if _off(body.subseed_strength, 0):
        raise _unsupported("subseed_strength", body.subseed_strength, "no variation seeds")
    for name in ("seed_resize_from_w", "seed_resize_from_h"):
        if getattr(body, name) > 0:
            raise _unsupported(name, getattr(body, name), "no seed resizing")
    if body.restore_faces:
        raise _unsupported("restore_faces", body.restore_faces, "no face restoration")
    if body.tiling:
        raise _unsupported("tiling", body.tiling, "no tiling")
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
    if body.script_name:
        raise _unsupported("script_name", body.script_name, "no A1111 scripts")
    if body.alwayson_scripts:
        raise _unsupported("alwayson_scripts", sorted(body.alwayson_scripts), "no A1111 extensions")
    for key, value in (body.override_settings or {}).items():
        if key == "sd_model_checkpoint":
            continue
        if value in _NEUTRAL_OVERRIDES.get(key, ()) or (key in options and options[key] == value):
            continue
        raise InvalidRequest(
            f"override_settings.{key}",
            f"{_show(value)} cannot be applied by imagegen; only sd_model_checkpoint is honoured, other settings "
            "only at their current /sdapi/v1/options value",
        )
    # 2. txt2img: every hires-fix field is ignored, as in A1111, while enable_hr is false.
    if isinstance(body, A1111Txt2ImgRequest) and body.enable_hr:
        raise _unsupported("enable_hr", body.enable_hr, "no hires fix (upscaling) yet")
    # 3. img2img: the inpainting fields are ignored, as in A1111, without a mask.
    if isinstance(body, A1111Img2ImgRequest):
        if body.mask:
            raise _unsupported("mask", "<image>", "no inpainting yet; send init_images without a mask for img2img")
        if body.latent_mask:
            raise _unsupported("latent_mask", "<image>", "no inpainting yet")
        if body.resize_mode != 0:
            raise _unsupported("resize_mode", body.resize_mode, "only 0, 'just resize', is implemented")
        if _off(body.initial_noise_multiplier, 1):
            raise _unsupported("initial_noise_multiplier", body.initial_noise_multiplier, "the noise scale is fixed")
        if body.init_images is not None and len(body.init_images) > 1:
            raise _unsupported("init_images", f"<{len(body.init_images)} images>", "one init image per request")


def strip_extra_networks(prompt: str, *, disabled: bool) -> str:
    """The prompt as A1111 hands it to the text encoder: without its ``<kind:args>`` extra-network tags.

    A LoRA / LyCORIS / hypernetwork tag, which A1111 would apply, is refused unless ``disabled``
    (``disable_extra_networks``): then A1111 removes it without applying it, and so does this."""
    if not disabled:
        for match in _EXTRA_NETWORK.finditer(prompt):
            if match.group(1) in _APPLIED_NETWORKS:
                raise InvalidRequest(
                    "prompt",
                    f"LoRA/hypernetwork tags are not supported yet: {_show(match.group(0))}; remove the tag, or send "
                    "disable_extra_networks: true to have such tags removed and ignored",
                )
    return _EXTRA_NETWORK.sub("", prompt)


def _check_eta(eta: float | None, sampler: str | None) -> None:
    if sampler in _ETA_ONE and _off(eta, 1):
        raise _unsupported("eta", eta, f"sampler {sampler!r} runs with eta 1, A1111's default")


@dataclass(frozen=True, kw_only=True)
class InfotextModels:
    """The checkpoints a pasted infotext names (used only if they resolve inside the configured set)."""

    model: str | None = None
    model_hash: str | None = None
    refiner: str | None = None


# GenerationRequest keyword (from request_fields_from_infotext) -> A1111 field it fills.
_INFOTEXT_FIELDS = (
    ("prompt", "prompt"),
    ("negative_prompt", "negative_prompt"),
    ("seed", "seed"),
    ("num_inference_steps", "steps"),
    ("guidance_scale", "cfg_scale"),
    ("width", "width"),
    ("height", "height"),
    ("sampler", "sampler_name"),
    ("schedule_type", "scheduler"),
    ("denoising_end", "refiner_switch_at"),
)


def apply_infotext(body: _Body) -> tuple[_Body, InfotextModels]:
    """Fill the fields the client did not send from ``body.infotext``, as A1111's ``apply_infotext`` does."""
    if not body.infotext or not body.infotext.strip():
        return body, InfotextModels()
    fields = request_fields_from_infotext(body.infotext)
    sent = body.model_fields_set
    update = {dst: fields[src] for src, dst in _INFOTEXT_FIELDS if src in fields and dst not in sent}
    # In txt2img, denoising strength belongs to the hires fix, which is not applied.
    if isinstance(body, A1111Img2ImgRequest) and "strength" in fields and "denoising_strength" not in sent:
        update["denoising_strength"] = fields["strength"]
    # "Eta DDIM" is DDIM's setting in A1111 (its eta_ddim option): it fills eta only for a request that runs DDIM.
    sampler = update.get("sampler_name", body.sampler_name)
    if "eta" in fields and "eta" not in sent and str(sampler or "").strip().upper() == "DDIM":
        update["eta"] = fields["eta"]
    models = InfotextModels(
        model=fields.get("model"), model_hash=parse_infotext(body.infotext).model_hash, refiner=fields.get("refiner")
    )
    return body.model_copy(update=update), models


def to_generation_request(
    body: A1111GenerationRequest,
    *,
    model: str | None = None,
    refiner: str | None = None,
    init_image: Image.Image | None = None,
) -> GenerationRequest:
    """The :class:`GenerationRequest` an A1111 request asks for; errors name the A1111 field."""
    for name in ("batch_size", "n_iter"):
        value = getattr(body, name)
        if value < 1:
            raise InvalidRequest(name, f"must be at least 1, got {value}")
    sampler, schedule_type = resolve_sampler(body.sampler_name or body.sampler_index, body.scheduler)
    _check_eta(body.eta, sampler)
    kwargs: dict[str, Any] = {
        "prompt": strip_extra_networks(body.prompt or "", disabled=body.disable_extra_networks),
        "negative_prompt": body.negative_prompt or "",
        "seed": body.seed,
        "num_inference_steps": body.steps,
        "guidance_scale": body.cfg_scale,
        "width": body.width,
        "height": body.height,
        "num_images": body.batch_size * body.n_iter,
        "sampler": sampler,
        "schedule_type": schedule_type,
        "model": model,
        "refiner": refiner,
    }
    if init_image is not None:
        kwargs["init_image"] = init_image
        kwargs["strength"] = 0.75 if body.denoising_strength is None else body.denoising_strength
    if refiner is not None and body.refiner_switch_at is not None:
        kwargs["denoising_end"] = body.refiner_switch_at
    if sampler == _ETA_PASSED and body.eta is not None:
        kwargs["eta"] = body.eta
    with renamed_fields(FIELD_NAMES, prefix=_FIELD_PREFIXES):
        return GenerationRequest(**kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Job result -> A1111 response.


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


def image_response(service: JobService, job: Job, body: A1111GenerationRequest) -> dict[str, Any]:
    """The txt2img / img2img answer for a succeeded job (reads the result files: call off the event loop)."""
    images = [b64(read_result_image(service, name)) for name in job.images] if body.send_images else []
    parameters = body.model_dump()
    if isinstance(body, A1111Img2ImgRequest) and not body.include_init_images:
        # As A1111: the echo leaves out the (large) input images unless asked for.
        parameters["init_images"] = None
        parameters["mask"] = None
    return {"images": images, "parameters": jsonable(parameters), "info": json.dumps(jsonable(info_dict(job, body)))}


# --------------------------------------------------------------------------------------------------------------------
# Models.


def _quiet_find(service: JobService, *names: str | None) -> ModelInfo | None:
    """The first of ``names`` that is a configured model, else None (an infotext may name models we lack)."""
    for name in names:
        if not name:
            continue
        try:
            return find_model(service, name, field="infotext")
        except (InvalidRequest, ModelNotFound):
            continue
    return None


def _options(service: JobService) -> dict[str, Any]:
    return service.options


def _current_checkpoint(service: JobService) -> ModelInfo:
    current = _options(service).get("sd_model_checkpoint")
    if current:
        return find_model(service, str(current), field="sd_model_checkpoint")
    return service.resolve_model(None)


def _checkpoint(service: JobService, body: A1111GenerationRequest, hints: InfotextModels) -> ModelInfo:
    override = (body.override_settings or {}).get("sd_model_checkpoint")
    if override not in (None, ""):
        return find_model(service, str(override), field="override_settings.sd_model_checkpoint")
    return _quiet_find(service, hints.model_hash, hints.model) or _current_checkpoint(service)


def _refiner(service: JobService, body: A1111GenerationRequest, hints: InfotextModels) -> ModelInfo | None:
    name = (body.refiner_checkpoint or "").strip()
    if name and name != "None":
        return find_model(service, name, field="refiner_checkpoint")
    if "refiner_checkpoint" not in body.model_fields_set:
        return _quiet_find(service, hints.refiner)
    return None


# --------------------------------------------------------------------------------------------------------------------
# Routes.


async def _generate(request: Request, body: _Body, *, img2img: bool) -> dict[str, Any]:
    service = get_service(request)
    # 1. Fill from a pasted infotext, refuse what cannot be honoured.
    body, hints = apply_infotext(body)
    check_supported(body, options=_options(service))
    # 2. Models, inside the configured set only.
    model = _checkpoint(service, body, hints)
    refiner = _refiner(service, body, hints)
    refiner_ref = refiner.ref if refiner else None
    # 3. Every cheap check before any image is decoded: fields, then the operator's limits.
    preview = to_generation_request(body, model=model.ref, refiner=refiner_ref)
    with renamed_fields(FIELD_NAMES, prefix=_FIELD_PREFIXES):
        service_limits(service).check(preview)
    # 4. The init image, decoded under the size limits (off the event loop: decoding is CPU work).
    init_image = None
    if img2img:
        images = getattr(body, "init_images", None)
        if not images:
            raise InvalidRequest("init_images", "img2img needs one base64-encoded image in init_images")
        init_image = await run_in_threadpool(
            decode_input_image, images[0], field="init_images", limits=service_limits(service)
        )
        if body.width is None and body.height is None:
            # No size asked for: keep the input's (scaled down into the limits if it is larger).
            width, height = fit_size(*init_image.size, service_limits(service))
            body = body.model_copy(update={"width": width, "height": height})
    # 5. Submit to the shared queue and wait.
    generation = to_generation_request(body, model=model.ref, refiner=refiner_ref, init_image=init_image)
    with renamed_fields(FIELD_NAMES, prefix=_FIELD_PREFIXES):
        # Off the event loop: submit saves the init image as PNG, hashes its pixels and writes to SQLite.
        job = await run_in_threadpool(service.submit, generation, dialect=DIALECT)
    if not body.override_settings_restore_afterwards and (body.override_settings or {}).get("sd_model_checkpoint"):
        # A1111 keeps such an override as the new default checkpoint.
        _options(service)["sd_model_checkpoint"] = model.title
    job = await service.wait(job.id)
    if status_value(job) != JobStatus.SUCCEEDED.value:
        with renamed_fields(FIELD_NAMES, prefix=_FIELD_PREFIXES):
            raise job_exception(job)
    return await run_in_threadpool(image_response, service, job, body)


@router.post("/txt2img", response_model=A1111ImageResponse)
async def txt2img(request: Request, body: A1111Txt2ImgRequest) -> dict[str, Any]:
    """Text to image; blocks until the job ends (it waits in the same queue as every other job)."""
    return await _generate(request, body, img2img=False)


@router.post("/img2img", response_model=A1111ImageResponse)
async def img2img(request: Request, body: A1111Img2ImgRequest) -> dict[str, Any]:
    """Image to image from ``init_images[0]``; blocks until the job ends."""
    return await _generate(request, body, img2img=True)


@router.get("/progress", response_model=A1111ProgressResponse)
async def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
    """The running job's progress (A1111 has one global job; imagegen reports the one a worker is running)."""
    job = get_service(request).current()
    idle_state = {"job": "", "job_count": 0, "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
    if job is None:
        return {"progress": 0.0, "eta_relative": 0.0, "state": idle_state, "current_image": None, "textinfo": None}
    progress_value = min(max(float(job.progress), 0.0), 1.0)
    eta = 0.0
    if job.started_at and progress_value > 0:
        elapsed = max(time.time() - job.started_at, 0.0)
        eta = elapsed / progress_value - elapsed
    state = {
        "interrupted": bool(job.cancel_requested),
        "job": "img2img" if job.request.get("init_image") else "txt2img",
        "job_count": 1,
        "job_no": 0,
        "job_timestamp": _timestamp(job.started_at),
        "sampling_step": job.step,
        "sampling_steps": job.total_steps,
    }
    return {
        "progress": progress_value,
        "eta_relative": eta,
        "state": state,
        "current_image": None,  # previews are not produced
        "textinfo": f"job {job.id}: step {job.step}/{job.total_steps}",
        "current_task": job.id,
    }


@router.post("/interrupt")
async def interrupt(request: Request) -> dict[str, Any]:
    """Cancel the running A1111 job (its blocking caller gets a 409). Queued jobs, and jobs submitted through the
    native or OpenAI API, are not touched."""
    await run_in_threadpool(get_service(request).interrupt_current, dialect=DIALECT)
    return {}


@router.post("/skip")
async def skip(request: Request) -> None:
    """Same as ``/interrupt``: the engine has no per-image skip, so the running A1111 job is cancelled as a whole."""
    await run_in_threadpool(get_service(request).interrupt_current, dialect=DIALECT)


@router.get("/options")
async def get_options(request: Request) -> dict[str, Any]:
    """``sd_model_checkpoint`` (the model requests use when they name none) and the stored options."""
    service = get_service(request)
    current = _current_checkpoint(service)
    return {
        **_OPTION_DEFAULTS,
        **_options(service),
        "sd_model_checkpoint": current.title,
        "sd_checkpoint_hash": current.hash,
    }


@router.post("/options")
async def set_options(request: Request, options: Annotated[dict[str, Any], Body()]) -> None:
    """Switch the default checkpoint (validated against the configured models); other options are stored and echoed."""
    service = get_service(request)
    stored = _options(service)
    updates: dict[str, Any] = {}
    for key, value in options.items():
        if len(json.dumps(value, default=str)) > _MAX_OPTION_CHARS:
            raise InvalidRequest(key, f"option values must be at most {_MAX_OPTION_CHARS} characters of JSON")
        if key == "sd_model_checkpoint":
            value = find_model(service, str(value), field="sd_model_checkpoint").title
        updates[key] = value
    if len(stored.keys() | updates.keys()) > _MAX_OPTIONS:
        raise InvalidRequest("options", f"at most {_MAX_OPTIONS} options can be stored")
    stored.update(updates)


@router.get("/sd-models", response_model=list[A1111Model])
async def sd_models(request: Request) -> list[dict[str, Any]]:
    """The configured models; ``title`` (``name [hash]``) is what sd_model_checkpoint accepts."""
    return [
        {
            "title": info.title,
            "model_name": info.ref,
            "hash": info.hash,
            "sha256": None,
            "filename": info.path.name,
            "config": None,
        }
        for info in get_service(request).models()
    ]


@router.post("/refresh-checkpoints")
async def refresh_checkpoints() -> None:
    """No-op: the model list is what the operator configured; workers load models on demand."""


@router.post("/unload-checkpoint")
async def unload_checkpoint() -> dict[str, Any]:
    """No-op: the workers own the loaded models."""
    return {}


@router.post("/reload-checkpoint")
async def reload_checkpoint() -> dict[str, Any]:
    """No-op: the workers load models on demand."""
    return {}


@router.get("/samplers")
async def samplers() -> list[dict[str, Any]]:
    return list_samplers()


@router.get("/schedulers")
async def schedulers() -> list[dict[str, Any]]:
    return list_schedule_types()


@router.get("/upscalers")
async def upscalers() -> list[dict[str, Any]]:
    """Empty: imagegen has no upscalers yet."""
    return []


@router.get("/latent-upscale-modes")
async def latent_upscale_modes() -> list[dict[str, Any]]:
    return []


@router.get("/sd-vae")
async def sd_vae() -> list[dict[str, Any]]:
    """Empty: each model uses its own VAE."""
    return []


@router.get("/loras")
async def loras() -> list[dict[str, Any]]:
    """Empty: LoRAs are not supported yet."""
    return []


@router.get("/hypernetworks")
async def hypernetworks() -> list[dict[str, Any]]:
    return []


@router.get("/face-restorers")
async def face_restorers() -> list[dict[str, Any]]:
    return []


@router.get("/prompt-styles")
async def prompt_styles() -> list[dict[str, Any]]:
    return []


@router.get("/embeddings")
async def embeddings() -> dict[str, Any]:
    """Empty: textual-inversion embeddings are not supported yet."""
    return {"loaded": {}, "skipped": {}}


@router.get("/scripts")
async def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.get("/cmd-flags")
async def cmd_flags(request: Request) -> dict[str, Any]:
    """The few A1111 flags that describe this server (credentials are never reported)."""
    settings = get_service(request).settings
    return {"api": True, "nowebui": True, "port": settings.port, "api_auth": bool(settings.auth_enabled)}


def _ram() -> dict[str, Any]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        free = os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        # os.sysconf has no such names on some platforms (macOS lacks SC_AVPHYS_PAGES).
        return {"error": "host memory is not available on this platform"}
    return {"free": free, "used": total - free, "total": total}


@router.get("/memory")
async def memory() -> dict[str, Any]:
    """Host RAM; device memory belongs to the worker processes, which the API process does not query."""
    return {
        "ram": _ram(),
        "cuda": {"error": "generation runs in worker processes; the API process does not report device memory"},
    }


def png_info(data: str, *, max_bytes: int) -> dict[str, Any]:
    """A1111's png-info answer for a base64 image: the infotext, other text items, and the parsed parameters."""
    if not data.strip():
        return {"info": "", "items": {}, "parameters": {}}
    if (len(data) - 64) * 3 // 4 > max_bytes:
        raise InvalidRequest("image", f"must be at most {max_bytes} bytes once decoded")
    raw = decode_base64(data, field="image")
    if len(raw) > max_bytes:
        raise InvalidRequest("image", f"must be at most {max_bytes} bytes, got {len(raw)}")
    # Only the header and text chunks are read, never pixels; Pillow refuses absurd pixel counts at open.
    try:
        with Image.open(io.BytesIO(raw)) as image:
            text = read_infotext(image) or ""
            items = {k: v for k, v in image.info.items() if isinstance(v, str) and k != "parameters"}
    except Image.DecompressionBombError:
        raise InvalidRequest("image", "declares too many pixels to be a real image (a decompression bomb)") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidRequest("image", f"is not a readable PNG, JPEG or WebP image ({type(exc).__name__})") from None
    return {"info": text, "items": items, "parameters": infotext_parameters(text) if text else {}}


def infotext_parameters(text: str) -> dict[str, Any]:
    """A1111's parsed-parameters dict: ``Prompt``, ``Negative prompt``, each ``key: value``, Size as Size-1/Size-2."""
    info = parse_infotext(text)
    params: dict[str, Any] = {"Prompt": info.prompt, "Negative prompt": info.negative_prompt}
    values = {
        "Steps": info.steps,
        "Sampler": info.sampler,
        "Schedule type": info.schedule_type,
        "CFG scale": info.cfg_scale,
        "Seed": info.seed,
        "Model hash": info.model_hash,
        "Model": info.model,
        "Denoising strength": info.denoising_strength,
        "Refiner": info.refiner,
        "Refiner switch at": info.refiner_switch_at,
        "Version": info.version,
    }
    params.update({key: value for key, value in values.items() if value is not None})
    if info.width is not None:
        params["Size-1"] = info.width
        params["Size-2"] = info.height
    params.update(info.extra)
    return params


@router.post("/png-info", response_model=A1111PngInfoResponse)
async def png_info_route(request: Request, body: A1111PngInfoRequest) -> dict[str, Any]:
    """The infotext embedded in an image (PNG text chunk or EXIF UserComment), parsed."""
    limits = service_limits(get_service(request))
    return await run_in_threadpool(png_info, body.image, max_bytes=limits.max_input_bytes)
