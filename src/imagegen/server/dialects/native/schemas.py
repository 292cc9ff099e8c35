"""The native job API's request and response models.

:data:`JobCreate` is built from :data:`imagegen.fields.FIELDS` and the defaults of
:class:`~imagegen.requests.GenerationRequest`: the native API takes exactly the library's fields, under the same
names, so a new request field appears here (and in ``/docs``) without being written twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, JsonValue, create_model

from imagegen.fields import FIELDS
from imagegen.requests import MAX_UPSCALE, GenerationRequest, UpscaleRequest
from imagegen.server.dialects.examples import EXAMPLE_IMAGE, image_schema
from imagegen.server.jobs.model import IMAGE_FIELDS, MAX_PREVIEW_EVERY, PREVIEW_EVERY, JobStatus

__all__ = [
    "EmbeddingList",
    "ErrorOut",
    "JobCreate",
    "JobList",
    "JobOut",
    "LoraList",
    "ModelList",
    "ModelOut",
    "PngInfoIn",
    "PngInfoOut",
    "SamplerList",
    "SamplerOut",
    "StyleList",
    "UpscaleCreate",
    "UpscalerList",
]

_EXAMPLES: tuple[Mapping[str, JsonValue], ...] = (
    MappingProxyType({"prompt": "a lighthouse at dawn, oil painting", "seed": 1234, "num_inference_steps": 30}),
    MappingProxyType({"prompt": "the same, at night", "init_image": EXAMPLE_IMAGE, "strength": 0.6}),
)


class LoraIn(BaseModel):
    """A LoRA from the server's LoRA folder (GET /v1/loras) and its strength."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="the LoRA's file name without its suffix")
    weight: float = Field(1.0, description="strength on the UNet and the text encoders; 0 = off")
    te_weight: float | None = Field(None, description="text-encoder strength, when it differs from weight")
    unet_weight: float | None = Field(None, description="UNet strength, when it differs from weight")


#: Request fields whose JSON type is not their CLI type (lists).
_ANNOTATIONS: Mapping[str, Any] = MappingProxyType({"loras": list[LoraIn], "styles": list[str], "outpaint": list[int]})


def _job_create_model() -> type[BaseModel]:
    """``JobCreate``: one optional-or-defaulted property per request field, unknown fields refused."""
    defaults = {f.name: f.default for f in dataclasses.fields(GenerationRequest)}
    properties: dict[str, Any] = {}
    for spec in FIELDS:
        default = defaults[spec.field]
        annotation = _ANNOTATIONS.get(spec.field) or (spec.kind if default is not None else spec.kind | None)
        if isinstance(default, tuple):
            default = list(default)
        image = image_schema if spec.field in IMAGE_FIELDS else None  # format: image
        properties[spec.field] = (annotation, Field(default, description=spec.help, json_schema_extra=image))
    # A delivery option, not a request field: previews never change the image. Range-checked by the queue (400).
    properties[PREVIEW_EVERY] = (
        int,
        Field(
            0,
            description=f"live previews: a picture of the latents every this many steps, as 'preview' events on "
            f"/v1/jobs/{{id}}/events and at /v1/jobs/{{id}}/preview (0 = none, up to {MAX_PREVIEW_EVERY})",
        ),
    )
    model: type[BaseModel] = create_model(
        "JobCreate",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [dict(example) for example in _EXAMPLES]}),
        __doc__="A text-to-image or image-to-image job. Names follow diffusers; unset values take the model's "
        "defaults. init_image is base64 or a data: URI (PNG, JPEG, WebP).",
        **properties,
    )
    return model


if TYPE_CHECKING:
    # Type checkers see a plain model; FastAPI sees the real one (its fields come from FIELDS).
    JobCreate: TypeAlias = BaseModel
else:
    JobCreate = _job_create_model()


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. invalid_request, queue_full, not_found")
    message: str
    field: str | None = Field(None, description="the request field at fault, when there is one")
    type: str = Field(
        description="OpenAI's error type (invalid_request_error, requests, server_error), for OpenAI SDK clients"
    )
    param: str | None = Field(None, description="the same as field, under OpenAI's name")


class ErrorOut(BaseModel):
    error: ErrorDetail


class JobErrorOut(BaseModel):
    code: str = Field(description="out_of_memory, worker_lost, timeout, model_load_error, internal_error, ...")
    message: str | None


class JobOut(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    dialect: str = Field(description="native, a1111 or openai: every dialect shares one queue")
    model: str | None
    created_at: float = Field(description="unix seconds")
    started_at: float | None
    finished_at: float | None
    progress: float = Field(ge=0.0, le=1.0)
    step: int
    total_steps: int
    queue_position: int | None = Field(description="0 = next to run; null unless queued")
    attempts: int = Field(description="times a worker started it (a job whose worker died runs again once)")
    cancel_requested: bool
    error: JobErrorOut | None
    images: list[str] = Field(
        description="signed URLs of the result PNGs (with their A1111 infotext): fetchable without the API key until "
        "they expire; each read of the job gives fresh ones"
    )
    seeds: list[int]
    infotexts: list[str]
    warnings: list[str]
    timings: dict[str, float] = Field(description="seconds per phase: load, denoise, refine, decode, total")
    request: dict[str, Any] = Field(description="what was asked, with the model resolved (init_image: present?)")
    request_id: str | None = Field(
        None, description="X-Request-ID of the HTTP request that submitted it (also in the worker's log lines)"
    )


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    family: str = Field(description="sd1, sd2, sdxl or sdxl-refiner")
    width: int = Field(description="native width")
    height: int = Field(description="native height")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class LoraOut(BaseModel):
    name: str = Field(description="what loras[].name and <lora:NAME:weight> take")
    family: str | None = Field(description="the model family it was trained for, when its keys show it")
    format: str | None = Field(description="kohya (A1111/civitai) or diffusers")
    parts: list[str] = Field(description="trained parts: unet, text_encoder, text_encoder_2")
    size: int = Field(description="file size in bytes")
    error: str | None = Field(description="why it cannot be used (unsupported LyCORIS variant, pickle, ...)")


class LoraList(BaseModel):
    object: Literal["list"] = "list"
    data: list[LoraOut]


class EmbeddingOut(BaseModel):
    name: str = Field(description="the word that stands for it in a prompt")
    vectors: int | None = Field(description="tokens it takes")
    usable: bool = Field(description="whether it fits the model's text encoders")
    reason: str | None = Field(description="why not, when not usable")


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[EmbeddingOut]


class StyleOut(BaseModel):
    name: str
    prompt: str
    negative_prompt: str


class StyleList(BaseModel):
    object: Literal["list"] = "list"
    data: list[StyleOut]


class WorkerOut(BaseModel):
    index: int
    alive: bool
    state: str = Field(description="starting, ready, error, stopped or down")


class ReadinessOut(BaseModel):
    ready: bool
    reason: str = Field(description="ready, draining, not_running, model_not_loadable, worker_starting, no_worker")
    workers: list[WorkerOut]


_UPSCALE_DEFAULTS: Mapping[str, Any] = MappingProxyType({f.name: f.default for f in dataclasses.fields(UpscaleRequest)})


class UpscaleCreate(BaseModel):
    """An upscale job (A1111's Extras): by ``scale``, or to ``width`` x ``height``. Upscaler names are those of
    GET /v1/upscalers."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"image": EXAMPLE_IMAGE, "upscaler": "Lanczos", "scale": 4},
                {"image": EXAMPLE_IMAGE, "upscaler": "Lanczos", "width": 256, "height": 128},
            ]
        },
    )
    image: str = Field(description="the image: base64 or a data: URI (PNG, JPEG, WebP)", json_schema_extra=image_schema)
    upscaler: str = Field(_UPSCALE_DEFAULTS["upscaler"], description="the upscaler's name (GET /v1/upscalers)")
    scale: float = Field(
        _UPSCALE_DEFAULTS["scale"],
        description=f"upscale factor, above 0, at most {MAX_UPSCALE:g}; unused with width",
        json_schema_extra={"exclusiveMinimum": 0, "maximum": MAX_UPSCALE},
    )
    width: int | None = Field(None, description="target width (with height), instead of scale")
    height: int | None = Field(None, description="target height (with width), instead of scale")
    crop: bool = Field(
        _UPSCALE_DEFAULTS["crop"],
        description="with width/height: cover the box and crop the overflow from the centre (exactly width x height); "
        "false keeps the aspect ratio, covering the box",
    )
    upscaler_2: str = Field(_UPSCALE_DEFAULTS["upscaler_2"], description="a second upscaler blended over the first")
    upscaler_2_visibility: float = Field(
        _UPSCALE_DEFAULTS["upscaler_2_visibility"],
        description="upscaler_2's share of the result, 0 (off) to 1",
        json_schema_extra={"minimum": 0, "maximum": 1},
    )


class UpscalerOut(BaseModel):
    name: str = Field(description="what upscaler, upscaler_2 and hr_upscaler take")
    scale: float = Field(description="the model's native factor (4 for the resamplers, as A1111 lists them)")
    model_name: str | None = Field(description="the weight file's stem; null for the resamplers")
    available: bool = Field(description="whether it can run on this server")
    reason: str | None = Field(description="why not, when not available")


class UpscalerList(BaseModel):
    object: Literal["list"] = "list"
    data: list[UpscalerOut]
    latent_modes: list[str] = Field(description="latent upscale modes: hr_upscaler also takes these")


class SamplerOut(BaseModel):
    name: str = Field(description="what sampler and hr_sampler take (A1111's sampler names)")
    aliases: list[str] = Field(description="other names accepted for it (k-diffusion's, diffusers')")


class SamplerList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SamplerOut]
    schedule_types: list[str] = Field(description="what schedule_type and hr_schedule_type take")


class PngInfoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field(
        description="a PNG, JPEG or WebP image: base64 or a data: URI",
        examples=[EXAMPLE_IMAGE],
        json_schema_extra=image_schema,
    )


class PngInfoOut(BaseModel):
    infotext: str = Field(description="the A1111 infotext embedded in the image; empty when there is none")
    fields: dict[str, Any] | None = Field(
        description="the job fields (POST /v1/jobs) that regenerate the image; null without an infotext"
    )
    items: dict[str, str] = Field(description="the image's other text chunks")
