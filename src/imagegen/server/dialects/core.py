"""The one dialect core: check → decode → fit → request → submit → wait → errors, the same for every HTTP dialect.

A dialect (:mod:`.native`, :mod:`.a1111`, :mod:`.openai`) turns its body into :class:`Submission` — request fields
under :class:`~imagegen.requests.GenerationRequest`'s names, the input image still encoded, and its own name for each
field (from :data:`imagegen.fields.FIELDS`) — and calls :func:`submit` (native: answer 202 at once) or :func:`run`
(A1111, OpenAI: block until the job ends). Errors come out as :class:`~imagegen.errors.InvalidRequest` naming the
field the way the dialect's client sent it; each dialect renders them in its own shape.

Upscale jobs (A1111's Extras, ``POST /v1/upscales``) take the same path with :class:`UpscaleSubmission` and
:func:`submit_upscale` (or :func:`prepare_upscale` + :func:`enqueue_upscale` to check a batch before queuing any).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from imagegen.errors import (
    Cancelled,
    DiskFull,
    GenerationFailed,
    ImagegenError,
    InvalidRequest,
    ModelLoadError,
    ModelNotFound,
    ResourceExhausted,
    UnsafeModelFile,
)
from imagegen.imageio import decode_base64, decode_image
from imagegen.metadata import read_infotext
from imagegen.requests import GenerationRequest, Limits, UpscaleRequest
from imagegen.rules import check_upscale
from imagegen.server.errors import JobNotFound
from imagegen.server.jobs.model import Job, JobStatus

if TYPE_CHECKING:
    from PIL.Image import Image

    from imagegen.server.jobs.queue import JobQueue
    from imagegen.server.upscalers import UpscalerCatalog

__all__ = [
    "JobFailed",
    "Submission",
    "UpscaleSubmission",
    "b64",
    "decode_input_image",
    "enqueue_upscale",
    "fit_size",
    "job_exception",
    "prepare_upscale",
    "read_result_image",
    "renamed_fields",
    "run",
    "submit",
    "submit_upscale",
    "succeeded",
]

#: The exception a failed job's recorded error code stands for, so it gets the same status as when raised directly.
_JOB_ERRORS: Mapping[str, type[ImagegenError]] = MappingProxyType(
    {
        cls.code: cls
        for cls in (ModelNotFound, UnsafeModelFile, ModelLoadError, GenerationFailed, ResourceExhausted, DiskFull)
    }
)


@dataclass(frozen=True, kw_only=True)
class Submission:
    """A dialect's request, translated: what the core needs to check, decode, fit and queue it."""

    #: :class:`GenerationRequest` keyword arguments, without ``init_image``.
    fields: Mapping[str, object]
    #: The input image as the client sent it (base64 / data URI text, or file bytes); ``None`` for text-to-image.
    init_image: str | bytes | None = None
    #: The inpainting mask as the client sent it (same forms), or ``None``.
    mask: str | bytes | None = None
    #: The dialect's name of each request field, for errors (``num_inference_steps`` -> ``steps``).
    names: Mapping[str, str] = field(default_factory=dict)
    #: Words put in front of a renamed field's message (``n_iter × batch_size images: ``).
    prefixes: Mapping[str, str] = field(default_factory=dict)
    #: ``dialect`` of the job (``/interrupt`` of A1111 only touches A1111's jobs).
    dialect: str = "native"
    idempotency_key: str | None = None
    #: Live previews every this many steps (0: none); see :meth:`JobQueue.submit`.
    preview_every: int = 0


async def submit(queue: JobQueue, limits: Limits, submission: Submission) -> Job:
    """Check, decode, fit, build and queue a submission; the queued job (or the earlier one of the same
    Idempotency-Key)."""
    with renamed_fields(submission.names, prefix=submission.prefixes):
        # 1. Check: every field rule and the operator's limits on the request without its image, so a bad step count
        #    is refused before megabytes of base64 are decoded.
        preview = check_fields(submission, limits)
        fields = dict(submission.fields)
        if submission.init_image is not None:
            image_field = submission.names.get("init_image", "init_image")
            # 2. Decode the input image under the size limits (off the event loop: decoding is CPU work).
            image = await run_in_threadpool(decode_input_image, submission.init_image, field=image_field, limits=limits)
            # 3. Fit: no size asked for keeps the input's, scaled down into the limits if it is larger.
            if preview.width is None and preview.height is None:
                fields["width"], fields["height"] = fit_size(*image.size, limits)
            fields["init_image"] = image
        if submission.mask is not None:
            mask_field = submission.names.get("mask", "mask")
            fields["mask"] = await run_in_threadpool(
                decode_input_image, submission.mask, field=mask_field, limits=limits, keep_alpha=True
            )
        # 4. The request, 5. queued (off the event loop: saving the init image, hashing, SQLite).
        request = GenerationRequest(**fields)  # type: ignore[arg-type]
        return await run_in_threadpool(
            queue.submit,
            request,
            dialect=submission.dialect,
            idempotency_key=submission.idempotency_key,
            preview_every=submission.preview_every,
        )


def check_fields(submission: Submission, limits: Limits) -> GenerationRequest:
    """Every field rule and the operator's limits on the request before its images are decoded (cheap: run first);
    the request so far, with 8x8 stand-ins for its images. Errors name the dialect's fields."""
    from PIL import Image as PILImage

    # Stand-ins for the images still to decode, so the rules that ask whether there is one (a mask needs an init
    # image) see what the request will have; the real images are checked when decoded.
    stand_ins: dict[str, object] = {}
    if submission.init_image is not None:
        stand_ins["init_image"] = PILImage.new("RGB", (8, 8))
        if submission.mask is not None:
            stand_ins["mask"] = PILImage.new("L", (8, 8), 255)
    with renamed_fields(submission.names, prefix=submission.prefixes):
        preview = GenerationRequest(**submission.fields, **stand_ins)  # type: ignore[arg-type]
        limits.check(preview)
    return preview


async def run(queue: JobQueue, limits: Limits, submission: Submission) -> Job:
    """:func:`submit`, then 6. wait for the job to end and 7. raise its error if it did not succeed."""
    job = await submit(queue, limits, submission)
    return await succeeded(queue, job, names=submission.names, prefixes=submission.prefixes)


async def succeeded(
    queue: JobQueue, job: Job, *, names: Mapping[str, str], prefixes: Mapping[str, str] | None = None
) -> Job:
    """The job once it has ended; its error (fields named as the dialect names them) if it did not succeed."""
    job = await queue.wait(job.id)
    if job.status is not JobStatus.SUCCEEDED:
        with renamed_fields(names, prefix=prefixes):
            raise job_exception(job)
    return job


@dataclass(frozen=True, kw_only=True)
class UpscaleSubmission:
    """A dialect's upscale request, translated: :class:`UpscaleRequest` fields and the image still encoded."""

    #: :class:`UpscaleRequest` keyword arguments, without ``image``.
    fields: Mapping[str, object]
    #: The image as the client sent it (base64 / data URI text, or file bytes).
    image: str | bytes
    #: The dialect's name of each request field, for errors (``upscaler`` -> ``upscaler_1``).
    names: Mapping[str, str] = field(default_factory=dict)
    dialect: str = "native"
    idempotency_key: str | None = None


async def prepare_upscale(limits: Limits, upscalers: UpscalerCatalog, submission: UpscaleSubmission) -> UpscaleRequest:
    """Check an upscale submission's fields and upscaler names, then decode its image: the request to queue."""
    from PIL import Image

    with renamed_fields(submission.names):
        # 1. Check every field and the upscaler names before the image is decoded (a 1x1 image stands in for it),
        #    so a typo in a name costs no decoding of megabytes of base64.
        preview = UpscaleRequest(image=Image.new("RGB", (1, 1)), **submission.fields)  # type: ignore[arg-type]
        await run_in_threadpool(upscalers.check, preview)
        # 2. Decode the image under the input limits (off the event loop: decoding is CPU work).
        image = await run_in_threadpool(
            decode_input_image, submission.image, field=submission.names.get("image", "image"), limits=limits
        )
        request = dataclasses.replace(preview, image=image)
        # 3. The result's size against the limits. The queue checks it too; checked here as well, a batch of images
        #    (A1111's extra-batch-images) is refused as a whole before any of its jobs is queued.
        check_upscale(request, limits)
        return request


async def enqueue_upscale(queue: JobQueue, request: UpscaleRequest, submission: UpscaleSubmission) -> Job:
    """Queue a prepared upscale (the queue checks its sizes against the limits); the job, or the earlier one of the
    same Idempotency-Key."""
    with renamed_fields(submission.names):
        return await run_in_threadpool(
            queue.submit, request, dialect=submission.dialect, idempotency_key=submission.idempotency_key
        )


async def submit_upscale(
    queue: JobQueue, limits: Limits, upscalers: UpscalerCatalog, submission: UpscaleSubmission
) -> Job:
    """:func:`prepare_upscale`, then :func:`enqueue_upscale`."""
    request = await prepare_upscale(limits, upscalers, submission)
    return await enqueue_upscale(queue, request, submission)


class JobFailed(ImagegenError):
    """A job failed with an error code that has no exception class here (``worker_lost``, ``internal_error``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def job_exception(job: Job) -> ImagegenError:
    """The error a job that did not succeed ended with, as an exception the app's error handlers render."""
    if job.status is JobStatus.CANCELLED:
        return Cancelled(
            job.error_message or "the job was cancelled (interrupted) before it finished; no image was made"
        )
    code = job.error_code or "generation_failed"
    message = job.error_message or f"the job ended with status {job.status.value}"
    if code == InvalidRequest.code:
        # Recorded as str(InvalidRequest): "field: message".
        name, sep, rest = message.partition(": ")
        return InvalidRequest(name, rest) if sep else InvalidRequest("request", message)
    cls = _JOB_ERRORS.get(code)
    return cls(message) if cls is not None else JobFailed(code, message)


@contextmanager
def renamed_fields(names: Mapping[str, str], *, prefix: Mapping[str, str] | None = None) -> Iterator[None]:
    """Re-raise :class:`InvalidRequest` with the dialect's name of the field (``num_inference_steps`` -> ``steps``).

    ``prefix`` adds words in front of a renamed field's message, e.g. to say that ``batch_size`` counts
    ``n_iter × batch_size`` images."""
    try:
        yield
    except InvalidRequest as exc:
        name = names.get(exc.field)
        if name is None or name == exc.field:
            raise
        lead = (prefix or {}).get(exc.field, "")
        raise InvalidRequest(name, f"{lead}{exc.message}") from None


def decode_input_image(data: str | bytes, *, field: str, limits: Limits, keep_alpha: bool = False) -> Image:
    """Decode an untrusted image (base64 / data URI text, or raw bytes) under the configured limits.

    The encoded length is checked before base64 decoding and the declared pixel count before pixel decoding, so
    neither a huge string nor a decompression bomb costs memory."""
    if isinstance(data, str):
        text = data.strip()
        if not text:
            raise InvalidRequest(field, "is empty: send a base64-encoded PNG, JPEG or WebP image")
        # 4 base64 characters carry 3 bytes; a data: header adds a few characters more.
        if (len(text) - 64) * 3 // 4 > limits.max_input_bytes:
            raise InvalidRequest(field, f"must be at most {limits.max_input_bytes} bytes once decoded")
        raw = decode_base64(text, field=field)
    else:
        raw = data
    return decode_image(
        raw, field=field, max_pixels=limits.max_input_pixels, max_bytes=limits.max_input_bytes, keep_alpha=keep_alpha
    )


def fit_size(width: int, height: int, limits: Limits) -> tuple[int, int]:
    """The largest size with ``width:height``'s aspect, multiples of 8, within the output limits.

    An image-to-image request without a size keeps the input's size; a large photo would then ask for more pixels
    than the operator allows, so it is scaled down here instead of failing."""
    scale = min(
        1.0,
        limits.max_width / width,
        limits.max_height / height,
        math.sqrt(limits.max_pixels / (width * height)),
    )
    return max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8)


def read_result_image(queue: JobQueue, name: str) -> bytes:
    """The PNG bytes (with infotext) of a job's result image; :class:`JobNotFound` when it is gone (retention)."""
    return read_image_file(lambda: queue.image_path(name), name)


def read_image_file(find: Callable[[], Path | None], name: str) -> bytes:
    """The bytes of the result image ``find`` locates; :class:`JobNotFound` when it is gone."""
    path = find()
    try:
        # Read now rather than streamed later: retention may delete the file at any moment, and a file gone between
        # the lookup and the send must be a 404, not a 500 in the middle of a response.
        if path is not None:
            return path.read_bytes()
    except FileNotFoundError:
        pass
    raise JobNotFound(f"no image {name[:100]!r}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def image_text(data: str, *, max_bytes: int) -> tuple[str, dict[str, str]]:
    """The A1111 infotext embedded in a base64 image (PNG text chunk, or EXIF UserComment of a JPEG or WebP; "" when
    none) and its other text items. Only the header and text chunks are read, never pixels; an empty string is an
    image without text, as A1111 answers it."""
    if not data.strip():
        return "", {}
    if (len(data) - 64) * 3 // 4 > max_bytes:
        raise InvalidRequest("image", f"must be at most {max_bytes} bytes once decoded")
    raw = decode_base64(data, field="image")
    if len(raw) > max_bytes:
        raise InvalidRequest("image", f"must be at most {max_bytes} bytes, got {len(raw)}")
    # Pillow refuses absurd pixel counts at open.
    try:
        with PILImage.open(io.BytesIO(raw)) as image:
            text = read_infotext(image) or ""
            items = {str(k): v for k, v in image.info.items() if isinstance(v, str) and k != "parameters"}
    except PILImage.DecompressionBombError:
        raise InvalidRequest("image", "declares too many pixels to be a real image (a decompression bomb)") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidRequest("image", f"is not a readable PNG, JPEG or WebP image ({type(exc).__name__})") from None
    return text, items
