"""What the A1111 and OpenAI adapters share: the service, input images under limits, job errors, renamed fields.

Both foreign dialects turn a request into one :class:`~imagegen.requests.GenerationRequest`, submit it to the
:class:`~imagegen.server.service.JobService` (the same queue the native API uses), wait for the job and answer in
their own shape. Error *rendering* is per dialect; what an error *is* (status, message, field) comes from
:func:`imagegen.server.errors.error_info`, so every dialect agrees on status codes.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from imagegen.errors import (
    Cancelled,
    GenerationFailed,
    ImagegenError,
    InvalidRequest,
    ModelLoadError,
    ModelNotFound,
    ResourceExhausted,
    UnsafeModelFile,
)
from imagegen.imageio import decode_base64, decode_image
from imagegen.requests import Limits
from imagegen.server.jobs import Job, JobStatus

if TYPE_CHECKING:
    from PIL.Image import Image

    from imagegen.loading import ModelInfo
    from imagegen.server.service import JobService

#: The exception a failed job's recorded error code stands for, so it gets the same status as when raised directly.
_JOB_ERRORS: Mapping[str, type[ImagegenError]] = MappingProxyType(
    {cls.code: cls for cls in (ModelNotFound, UnsafeModelFile, ModelLoadError, GenerationFailed, ResourceExhausted)}
)


def service_limits(service: JobService) -> Limits:
    return service.settings.limits


def status_value(job: Job) -> str:
    """The job's status as a plain string (``JobStatus`` is a ``str`` Enum; fakes may use plain strings)."""
    return str(getattr(job.status, "value", job.status))


class JobFailed(ImagegenError):
    """A job failed with an error code that has no exception class here (``worker_lost``, ``internal_error``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def job_exception(job: Job) -> ImagegenError:
    """The error a job that did not succeed ended with, as an exception the app's error handlers render."""
    status = status_value(job)
    if status == JobStatus.CANCELLED.value:
        return Cancelled(
            job.error_message or "the job was cancelled (interrupted) before it finished; no image was made"
        )
    code = job.error_code or "generation_failed"
    message = job.error_message or f"the job ended with status {status}"
    if code == InvalidRequest.code:
        # Recorded as str(InvalidRequest): "field: message".
        field, sep, rest = message.partition(": ")
        return InvalidRequest(field, rest) if sep else InvalidRequest("request", message)
    cls = _JOB_ERRORS.get(code)
    return cls(message) if cls is not None else JobFailed(code, message)


@contextmanager
def renamed_fields(names: Mapping[str, str], *, prefix: Mapping[str, str] | None = None) -> Iterator[None]:
    """Re-raise :class:`InvalidRequest` with the dialect's name of the field (``num_inference_steps`` -> ``steps``).

    ``prefix`` adds words in front of a renamed field's message, e.g. to say that ``batch_size`` counts
    ``n_iter × batch_size`` images.
    """
    try:
        yield
    except InvalidRequest as exc:
        name = names.get(exc.field)
        if name is None or name == exc.field:
            raise
        lead = (prefix or {}).get(exc.field, "")
        raise InvalidRequest(name, f"{lead}{exc.message}") from None


def decode_input_image(data: str | bytes, *, field: str, limits: Limits) -> Image:
    """Decode an untrusted image (base64 / data URI text, or raw bytes) under the configured limits.

    The encoded length is checked before base64 decoding and the declared pixel count before pixel decoding, so
    neither a huge string nor a decompression bomb costs memory.
    """
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
    return decode_image(raw, field=field, max_pixels=limits.max_input_pixels, max_bytes=limits.max_input_bytes)


def fit_size(width: int, height: int, limits: Limits) -> tuple[int, int]:
    """The largest size with ``width:height``'s aspect, multiples of 8, within the output limits.

    An image-to-image request without a size keeps the input's size; a large photo would then ask for more pixels
    than the operator allows, so it is scaled down here instead of failing.
    """
    scale = min(
        1.0,
        limits.max_width / width,
        limits.max_height / height,
        math.sqrt(limits.max_pixels / (width * height)),
    )
    return max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8)


def read_result_image(service: JobService, name: str) -> bytes:
    """The PNG bytes (with infotext) of a job's result image."""
    path: Path | None = service.image_path(name)
    if path is None:
        raise JobFailed("image_missing", f"result image {name} is missing")
    return path.read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def find_model(service: JobService, text: str, *, field: str) -> ModelInfo:
    """A configured model named the way A1111 and OpenAI clients name checkpoints.

    Accepts a title (``name [hash]``), a reference, a hash, or a file name with or without its suffix. Anything else
    goes to :meth:`JobService.resolve_model`, which only resolves inside the configured set (no paths, ``..``, URLs).
    """
    wanted = text.strip()
    if not wanted:
        raise InvalidRequest(field, "must name a model; see GET /sdapi/v1/sd-models or /v1/models")
    for info in service.models():
        names = {info.title, info.ref, info.path.name, info.path.stem}
        if info.hash:
            names.add(info.hash)
        if wanted in names:
            return info
    # A title of a model whose hash changed, e.g. "name [abcdef0123]": retry with the bare name.
    name, _, rest = wanted.rpartition(" [")
    bare = name if name and rest.endswith("]") else wanted
    with renamed_fields({"model": field}):
        return service.resolve_model(bare)


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (JSON has no NaN), for echoing requests back."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value
