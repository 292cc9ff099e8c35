"""The OpenAI-compatible Images API: ``/v1/images/generations``, ``/v1/images/edits``, ``/v1/images/variations``.

Each call becomes one :class:`~imagegen.requests.GenerationRequest` on the shared job queue (``dialect="openai"``) and
blocks until its job ends, so the official OpenAI SDKs work with ``base_url`` pointed at imagegen.

Mapping decisions (also in the README's "Serving" section):

- ``model``: OpenAI's own names (``dall-e-2``, ``dall-e-3``, ``gpt-image-*``) and an omitted model mean the server's
  default model; any other name is looked up among the configured models only (reference, title, hash or file
  name: never a path or URL) and an unknown one is a 404 ``model_not_found``.
- ``size``: omitted or ``auto`` is the model's native size (for edits and variations, the input image's size,
  scaled down into the limits if needed); ``WxH`` is any size the limits allow in multiples of 8, OpenAI's names
  (``1024x1024``, ``1792x1024``, ``512x512``, ...) included.
- ``n``: 1 to 10 as in OpenAI (and at most the server's ``max_images``); image *i* uses seed + i.
- ``response_format``: ``b64_json`` or ``url``; the default is ``url`` as for DALL·E, except ``b64_json`` for
  ``gpt-image-*`` models (which only answer b64_json). URLs point at ``/v1/images/{name}`` on the host the request
  came to and are signed (``?expires=...&sig=...``): like OpenAI's, they work without the API key and expire, after
  ``--url-ttl`` seconds (default one hour). The images are deleted with their job after ``--keep-results`` hours.
- ``output_format`` ``png`` (default), ``jpeg`` or ``webp`` with ``output_compression`` 0-100 (b64_json only; the
  infotext is embedded in every format). ``background`` ``transparent`` is refused: the models paint opaque images.
- Accepted and ignored: ``quality``, ``style``, ``user``, ``moderation``, ``input_fidelity`` (their values are
  checked). ``stream`` true and ``partial_images`` > 0 are refused (no streaming).
- Edits: one ``image`` (or ``image[]``) file is image-to-image with the prompt at ``strength`` 0.75 (the A1111 and
  library default). A ``mask`` (a PNG of the image's size whose fully transparent pixels are the area to edit) makes
  it an inpainting: only that area is repainted (from scratch: ``strength`` 1 unless sent), every other pixel is the
  input's. Without a mask, an image with fully transparent pixels is inpainted there, as OpenAI does.
- Variations: image-to-image with an empty prompt at ``strength`` 0.6, enough to vary details while keeping the
  composition.
- imagegen extensions (the SDK sends them with ``extra_body``): ``seed``, ``negative_prompt``, and ``strength`` for
  edits and variations.
- Errors: ``{"error": {"message", "type", "param", "code"}}``; ``param`` names the OpenAI field.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from imagegen.errors import InvalidRequest
from imagegen.fields import dialect_names
from imagegen.imageio import encode_image
from imagegen.requests import Limits
from imagegen.server.catalog import ModelCatalog
from imagegen.server.deps import ServicesDep
from imagegen.server.dialects import core
from imagegen.server.dialects.examples import IMAGE_MEDIA_TYPES
from imagegen.server.dialects.openai.schemas import (
    BACKGROUNDS,
    EDIT_TEXT_FIELDS,
    INPUT_FIDELITIES,
    MAX_N,
    MODERATIONS,
    OUTPUT_FORMATS,
    QUALITIES,
    RESPONSE_FORMATS,
    STYLES,
    VARIATION_TEXT_FIELDS,
    OpenAIImage,
    OpenAIImageGenerationRequest,
    OpenAIImagesResponse,
)
from imagegen.server.errors import ErrorInfo, error_type, register_dialect_errors
from imagegen.server.jobs.model import Job
from imagegen.server.jobs.queue import JobQueue
from imagegen.server.jobs.urls import URLSigner
from imagegen.server.services import Services

__all__ = ["install_openai", "render_openai_error", "router", "submission"]

router = APIRouter(prefix="/v1/images", tags=["OpenAI compatible"])

#: Paths whose errors are rendered in OpenAI's shape (``/v1/images/{name}`` is the native image route).
PATHS = ("/v1/images/generations", "/v1/images/edits", "/v1/images/variations")
#: OpenAI model names that mean "the server's default model".
OPENAI_MODEL_PREFIXES = ("dall-e", "gpt-image")
#: The ``dialect`` of the jobs these routes submit.
DIALECT = "openai"
EDIT_STRENGTH = 0.75
VARIATION_STRENGTH = 0.6

#: GenerationRequest field -> the OpenAI parameter it comes from (for ``param`` in errors).
FIELD_NAMES: Mapping[str, str] = dialect_names("openai")
_SIZE = re.compile(r"\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*")
_MAX_FORM_FILES = 8
_MAX_FORM_FIELDS = 64


# --------------------------------------------------------------------------------------------------------------------
# Errors in OpenAI's shape.

_ERROR_CODES: Mapping[str, str] = MappingProxyType(
    {"unauthorized": "invalid_api_key", "queue_full": "rate_limit_exceeded", "invalid_request": ""}
)


def render_openai_error(request: Request, info: ErrorInfo) -> Response:
    """``{"error": {"message", "type", "param", "code"}}``; validation errors are 400 as in OpenAI."""
    status = 400 if info.status == 422 else info.status
    code = _ERROR_CODES.get(info.code, info.code) or None
    if info.code == "model_not_found" or (info.field == "model" and "unknown model" in info.message):
        # OpenAI answers an unknown model with 404 model_not_found.
        status, code = 404, "model_not_found"
    content = {"error": {"message": info.message, "type": error_type(status), "param": info.field, "code": code}}
    return JSONResponse(content, status_code=status, headers=dict(info.headers))


def install_openai(app: FastAPI) -> None:
    """Make the app's error handlers answer the OpenAI paths in OpenAI's shape (called by ``create_app``)."""
    register_dialect_errors(app, PATHS, render_openai_error)


# --------------------------------------------------------------------------------------------------------------------
# Parameters (pure functions, unit-tested without a server).


@dataclass(frozen=True, kw_only=True)
class OutputOptions:
    response_format: str
    output_format: str
    output_compression: int | None


def _choice(name: str, value: str | None, allowed: Sequence[str]) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise InvalidRequest(name, f"must be one of {', '.join(allowed)}, got {value[:80]!r}")
    return value


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """``(width, height)`` of an OpenAI size; ``(None, None)`` for omitted/``auto`` (the model's native size)."""
    if size is None or size.strip().lower() in ("", "auto"):
        return None, None
    match = _SIZE.fullmatch(size)
    if match is None:
        raise InvalidRequest(
            "size", f"must be 'auto' or WIDTHxHEIGHT in multiples of 8 such as 1024x1024, got {size[:80]!r}"
        )
    return int(match.group(1)), int(match.group(2))


def parse_n(n: int | None) -> int:
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise InvalidRequest("n", f"must be between 1 and {MAX_N}, got {n!r}")
    return n


def is_openai_model(model: str | None) -> bool:
    return model is None or not model.strip() or model.strip().lower().startswith(OPENAI_MODEL_PREFIXES)


def output_options(
    *,
    model: str | None,
    response_format: str | None,
    output_format: str | None,
    output_compression: int | None,
    background: str | None = None,
) -> OutputOptions:
    """Check the output parameters and fill OpenAI's defaults."""
    fmt = _choice("response_format", response_format, RESPONSE_FORMATS)
    if fmt is None:
        fmt = "b64_json" if (model or "").strip().lower().startswith("gpt-image") else "url"
    out = _choice("output_format", output_format, OUTPUT_FORMATS) or "png"
    if out != "png" and fmt == "url":
        raise InvalidRequest("output_format", f"{out} is only available with response_format b64_json; URLs serve PNG")
    if output_compression is not None and (isinstance(output_compression, bool) or not 0 <= output_compression <= 100):
        raise InvalidRequest("output_compression", f"must be between 0 and 100, got {output_compression!r}")
    if _choice("background", background, BACKGROUNDS) == "transparent":
        raise InvalidRequest("background", "transparent backgrounds are not supported: the models paint opaque images")
    return OutputOptions(response_format=fmt, output_format=out, output_compression=output_compression)


def check_ignored(
    *,
    quality: str | None = None,
    style: str | None = None,
    moderation: str | None = None,
    input_fidelity: str | None = None,
    stream: bool | None = None,
    partial_images: int | None = None,
) -> None:
    """Parameters accepted without effect are still checked, so a typo is not silently taken."""
    _choice("quality", quality, QUALITIES)
    _choice("style", style, STYLES)
    _choice("moderation", moderation, MODERATIONS)
    _choice("input_fidelity", input_fidelity, INPUT_FIDELITIES)
    if stream:
        raise InvalidRequest("stream", "streaming is not supported; send stream false or omit it")
    if partial_images:
        raise InvalidRequest("partial_images", "partial images need streaming, which is not supported; send 0")


def model_ref(catalog: ModelCatalog, model: str | None) -> str | None:
    """The served model an OpenAI ``model`` names (None: the server's default)."""
    if is_openai_model(model):
        return None
    return catalog.find(str(model), field="model").ref


def submission(
    *,
    prompt: str,
    n: int,
    size: str | None,
    model: str | None,
    seed: int | None = None,
    negative_prompt: str | None = None,
    init_image: bytes | None = None,
    mask: bytes | None = None,
    strength: float | None = None,
) -> core.Submission:
    """What an OpenAI call asks the dialect core for; ``size`` auto (or omitted) is the model's native size, or for
    edits and variations the input image's, scaled into the limits (the core fits it)."""
    width, height = parse_size(size)
    fields: dict[str, object] = {
        "prompt": prompt,
        "negative_prompt": negative_prompt or "",
        "seed": -1 if seed is None else seed,
        "width": width,
        "height": height,
        "num_images": n,
        "model": model,
    }
    if init_image is not None and strength is not None:
        fields["strength"] = strength
    return core.Submission(fields=fields, init_image=init_image, mask=mask, names=FIELD_NAMES, dialect=DIALECT)


def transparent_area(data: bytes, *, field: str, limits: Limits, required: bool) -> bytes | None:
    """OpenAI's mask convention as imagegen's: a PNG mask, white where ``data``'s image is fully transparent (the area
    to edit). ``None`` when the image has no such pixel and ``required`` is false (a plain image to edit whole)."""
    image = core.decode_input_image(data, field=field, limits=limits, keep_alpha=True)
    if image.mode == "RGBA":
        area = image.getchannel("A").point(lambda alpha: 255 if alpha == 0 else 0)
        if area.getbbox() is not None:
            buffer = io.BytesIO()
            area.save(buffer, format="PNG")
            return buffer.getvalue()
    if required:
        raise InvalidRequest(field, "has no fully transparent pixel: the area to edit is where the mask's alpha is 0")
    return None


# --------------------------------------------------------------------------------------------------------------------
# Results.


def images_response(
    queue: JobQueue, urls: URLSigner, job: Job, options: OutputOptions, *, base_url: str
) -> OpenAIImagesResponse:
    """OpenAI's ``{"created", "data": [...]}`` for a succeeded job (reads files: call off the event loop)."""
    data: list[OpenAIImage] = []
    for index, name in enumerate(job.images):
        if options.response_format == "url":
            data.append(OpenAIImage(url=f"{base_url}/v1/images/{name}?{urls.sign(name).query}"))
            continue
        infotext = job.infotexts[index] if index < len(job.infotexts) else None
        png = core.read_result_image(queue, name)
        encoded = encode_image(png, infotext, format=options.output_format, quality=options.output_compression)
        data.append(OpenAIImage(b64_json=core.b64(encoded)))
    return OpenAIImagesResponse(created=int(job.created_at), data=data)


async def _run(
    request: Request, services: Services, call: core.Submission, options: OutputOptions
) -> OpenAIImagesResponse:
    job = await core.run(services.queue, services.settings.limits, call)
    base_url = str(request.base_url).rstrip("/")
    return await run_in_threadpool(images_response, services.queue, services.urls, job, options, base_url=base_url)


# --------------------------------------------------------------------------------------------------------------------
# Multipart forms (edits, variations).


@dataclass(frozen=True, kw_only=True)
class _Form:
    text: Mapping[str, str]
    images: tuple[bytes, ...]
    mask: bytes | None


def _text(form: _Form, name: str) -> str | None:
    value = form.text.get(name)
    return value if value is None or value.strip() else None


def _int(form: _Form, name: str) -> int | None:
    value = _text(form, name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise InvalidRequest(name, f"must be an integer, got {value[:80]!r}") from None


def _float(form: _Form, name: str) -> float | None:
    value = _text(form, name)
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        raise InvalidRequest(name, f"must be a number, got {value[:80]!r}") from None


def _bool(form: _Form, name: str) -> bool | None:
    value = _text(form, name)
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered not in ("true", "false", "1", "0"):
        raise InvalidRequest(name, f"must be true or false, got {value[:80]!r}")
    return lowered in ("true", "1")


async def _read_form(request: Request, *, text_fields: Sequence[str], mask_allowed: bool, max_bytes: int) -> _Form:
    """Parse a multipart body: the image file(s), whether a mask came, and the known text fields."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InvalidRequest("image", "send multipart/form-data with the image as a file field")
    text: dict[str, str] = {}
    images: list[bytes] = []
    mask: bytes | None = None
    async with request.form(max_files=_MAX_FORM_FILES, max_fields=_MAX_FORM_FIELDS) as form:
        for key, value in form.multi_items():
            if key in ("image", "image[]"):
                if not isinstance(value, UploadFile):
                    raise InvalidRequest("image", "must be a file upload (multipart file field), not text")
                # One byte over the limit is enough to refuse the file without reading the rest.
                images.append(await value.read(max_bytes + 1))
            elif key == "mask" and mask_allowed:
                if not isinstance(value, UploadFile):
                    raise InvalidRequest("mask", "must be a file upload (a PNG with transparency), not text")
                mask = await value.read(max_bytes + 1)
            elif key in text_fields:
                if isinstance(value, UploadFile):
                    raise InvalidRequest(key, "must be a text field, not a file")
                text[key] = value
            else:
                raise InvalidRequest(key, f"unrecognized request argument; accepted: image, {', '.join(text_fields)}")
    return _Form(text=text, images=tuple(images), mask=mask)


def _one_image(form: _Form) -> bytes:
    if not form.images:
        raise InvalidRequest("image", "is required: send one PNG, JPEG or WebP file")
    if len(form.images) > 1:
        raise InvalidRequest("image", f"one input image per request is supported, got {len(form.images)}")
    return form.images[0]


def _multipart_doc(fields: Sequence[str], required: Sequence[str]) -> dict[str, Any]:
    properties: dict[str, Any] = {"image": {"type": "string", "format": "binary"}}
    properties.update({name: {"type": "string"} for name in fields})
    if "prompt" in fields:
        properties["mask"] = {
            "type": "string",
            "format": "binary",
            "description": "PNG of the image's size; its fully transparent pixels are the area to edit",
        }
    schema = {"type": "object", "properties": properties, "required": ["image", *required]}
    encoding = {"image": {"contentType": IMAGE_MEDIA_TYPES}}
    if "mask" in properties:
        encoding["mask"] = {"contentType": "image/png"}
    media = {"schema": schema, "encoding": encoding}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": media}}}


# --------------------------------------------------------------------------------------------------------------------
# Routes.


@router.post("/generations", response_model=OpenAIImagesResponse, response_model_exclude_none=True)
async def generations(
    request: Request, services: ServicesDep, body: OpenAIImageGenerationRequest
) -> OpenAIImagesResponse:
    """Text to image (OpenAI ``images.generate``)."""
    check_ignored(
        quality=body.quality,
        style=body.style,
        moderation=body.moderation,
        stream=body.stream,
        partial_images=body.partial_images,
    )
    options = output_options(
        model=body.model,
        response_format=body.response_format,
        output_format=body.output_format,
        output_compression=body.output_compression,
        background=body.background,
    )
    call = submission(
        prompt=body.prompt,
        n=parse_n(body.n),
        size=body.size,
        model=model_ref(services.catalog, body.model),
        seed=body.seed,
        negative_prompt=body.negative_prompt,
    )
    return await _run(request, services, call, options)


@router.post(
    "/edits",
    response_model=OpenAIImagesResponse,
    response_model_exclude_none=True,
    openapi_extra=_multipart_doc(EDIT_TEXT_FIELDS, ["prompt"]),
)
async def edits(request: Request, services: ServicesDep) -> OpenAIImagesResponse:
    """Image to image with a prompt (OpenAI ``images.edit``); with a mask (or transparent pixels), inpainting."""
    max_bytes = services.settings.limits.max_input_bytes
    form = await _read_form(request, text_fields=EDIT_TEXT_FIELDS, mask_allowed=True, max_bytes=max_bytes)
    prompt = form.text.get("prompt")
    if prompt is None or not prompt.strip():
        raise InvalidRequest("prompt", "is required: say what the edited image should show")
    return await _image_to_image(
        request,
        services,
        form,
        prompt=prompt,
        default_strength=EDIT_STRENGTH,
        text_fields=EDIT_TEXT_FIELDS,
        inpaint=True,
    )


@router.post(
    "/variations",
    response_model=OpenAIImagesResponse,
    response_model_exclude_none=True,
    openapi_extra=_multipart_doc(VARIATION_TEXT_FIELDS, []),
)
async def variations(request: Request, services: ServicesDep) -> OpenAIImagesResponse:
    """Variations of an image (OpenAI ``images.create_variation``): image to image with an empty prompt."""
    max_bytes = services.settings.limits.max_input_bytes
    form = await _read_form(request, text_fields=VARIATION_TEXT_FIELDS, mask_allowed=False, max_bytes=max_bytes)
    return await _image_to_image(
        request, services, form, prompt="", default_strength=VARIATION_STRENGTH, text_fields=VARIATION_TEXT_FIELDS
    )


async def _image_to_image(
    request: Request,
    services: Services,
    form: _Form,
    *,
    prompt: str,
    default_strength: float,
    text_fields: Sequence[str],
    inpaint: bool = False,
) -> OpenAIImagesResponse:
    model = _text(form, "model")
    check_ignored(
        quality=_text(form, "quality"),
        moderation=_text(form, "moderation"),
        input_fidelity=_text(form, "input_fidelity"),
        stream=_bool(form, "stream"),
        partial_images=_int(form, "partial_images"),
    )
    options = output_options(
        model=model,
        response_format=_text(form, "response_format"),
        output_format=_text(form, "output_format"),
        output_compression=_int(form, "output_compression"),
        background=_text(form, "background"),
    )
    strength = _float(form, "strength")
    init_image = _one_image(form)
    fields = submission(
        prompt=prompt,
        n=parse_n(_int(form, "n")),
        size=_text(form, "size"),
        model=model_ref(services.catalog, model),
        seed=_int(form, "seed"),
        negative_prompt=_text(form, "negative_prompt") if "negative_prompt" in text_fields else None,
    )
    core.check_fields(fields, services.settings.limits)  # the cheap checks first, before any image is decoded
    mask = None
    if inpaint:
        limits = services.settings.limits
        if form.mask is not None:
            mask = await run_in_threadpool(transparent_area, form.mask, field="mask", limits=limits, required=True)
        else:
            mask = await run_in_threadpool(transparent_area, init_image, field="image", limits=limits, required=False)
    if mask is not None and strength is None:
        strength = 1.0  # the masked area is painted anew, as OpenAI's edits do
    call = dataclasses.replace(
        fields,
        fields={**fields.fields, "strength": default_strength if strength is None else strength},
        init_image=init_image,
        mask=mask,
    )
    return await _run(request, services, call, options)
