"""What a job is, as the API and the workers both see it, and the request <-> JSON record conversion they share."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from imagegen.requests import GenerationRequest, UpscaleRequest

#: Request fields stored in a job record (the image fields are stored as file names under ``data_dir/inputs``).
REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(GenerationRequest))
#: Request fields that are images: saved as PNG files under ``data_dir/inputs``, the record holds their names.
IMAGE_FIELDS = ("init_image", "mask")


def input_name(job_id: str, field: str) -> str:
    """The file under ``data_dir/inputs`` of a job's image field (``ID.png`` for the init image, ``ID-mask.png``)."""
    return f"{job_id}.png" if field == "init_image" else f"{job_id}-{field}.png"


def input_names(record: Mapping[str, Any]) -> list[str]:
    """The input files a job record names."""
    return [str(record[name]) for name in IMAGE_FIELDS if isinstance(record.get(name), str) and record[name]]


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True, kw_only=True)
class Job:
    """One row of the job store. Times are unix seconds; ``images`` are file names in ``data_dir/images``."""

    id: str
    status: JobStatus
    dialect: str
    model: str | None
    request: Mapping[str, Any]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: float = 0.0
    step: int = 0
    total_steps: int = 0
    attempts: int = 0
    cancel_requested: bool = False
    error_code: str | None = None
    error_message: str | None = None
    images: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    infotexts: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    idempotency_key: str | None = None
    #: The worker process that claimed it (``None`` while queued).
    worker: str | None = None
    #: Consecutive queued jobs with the same key could run as one batch (same model, size, steps, sampler).
    batch_key: str = ""

    @property
    def terminal(self) -> bool:
        return self.status.terminal


@dataclass(frozen=True, kw_only=True)
class JobEvent:
    """One Server-Sent Event: ``queued``, ``started``, ``progress``, ``preview``, ``done``, ``failed`` or
    ``cancelled``."""

    event: str
    job: Job
    #: The ``preview`` event's picture.
    preview: Preview | None = None


@dataclass(frozen=True, kw_only=True)
class Preview:
    """The latest live preview of a running job: an approximate picture of its latents at ``step``."""

    step: int
    total_steps: int
    media_type: str
    image: bytes


#: A job's option in its record (not a request field: previews never change the image): a live preview every this
#: many steps, 0 = none.
PREVIEW_EVERY = "preview_every"
#: A job's record field: the ``X-Request-ID`` of the HTTP request that submitted it (in the worker's log lines).
REQUEST_ID_FIELD = "request_id"
#: The most steps between two previews a job may ask for.
MAX_PREVIEW_EVERY = 1000


def preview_interval(record: Mapping[str, Any]) -> int:
    """The job's preview interval in steps (0: no previews)."""
    value = record.get(PREVIEW_EVERY, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


#: Record fields that may differ between the jobs of one denoising batch: each image has its own prompt and seed,
#: each job its previews.
PER_IMAGE_FIELDS = frozenset({"prompt", "negative_prompt", "seed", "num_images", PREVIEW_EVERY, REQUEST_ID_FIELD})


def batch_key(record: Mapping[str, Any]) -> str:
    """Jobs that could share one denoising batch: every request field equal but the per-image ones, no init image.

    Derived from the record rather than listed, so a new request field can never let two incompatible jobs share a
    batch."""
    if any(record.get(name) for name in IMAGE_FIELDS) or record.get("operation"):
        return ""
    shared = {name: value for name, value in record.items() if name not in PER_IMAGE_FIELDS}
    return json.dumps(shared, sort_keys=True, default=str)


def request_record(request: GenerationRequest, *, job_id: str | None = None) -> dict[str, Any]:
    """The JSON-able fields of ``request``; each image field names its file (:func:`input_name` of ``job_id``; the
    caller saves it), or is ``None``."""
    record = {name: _jsonable(getattr(request, name)) for name in REQUEST_FIELDS if name not in IMAGE_FIELDS}
    for name in IMAGE_FIELDS:
        present = getattr(request, name) is not None
        record[name] = input_name(job_id, name) if present and job_id is not None else None
    return record


def _jsonable(value: Any) -> Any:
    """Tuples of values or of frozen dataclasses (``loras``, ``styles``) as JSON lists of values or objects."""
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


#: An upscale job's record: ``operation`` says so; its image is stored as the init image is.
UPSCALE = "upscale"
UPSCALE_FIELDS = tuple(f.name for f in dataclasses.fields(UpscaleRequest) if f.name != "image")


def upscale_record(request: UpscaleRequest, *, job_id: str | None = None) -> dict[str, Any]:
    """The JSON-able fields of an upscale request; its image is saved by the caller as ``init_image``."""
    record: dict[str, Any] = {"operation": UPSCALE, **{name: getattr(request, name) for name in UPSCALE_FIELDS}}
    record["init_image"] = input_name(job_id, "init_image") if job_id is not None else None
    return record


def upscale_digest(request: UpscaleRequest, *, dialect: str) -> str:
    """A digest of an upscale request (fields + image pixels), for idempotency."""
    digest = hashlib.sha256()
    record = upscale_record(request)
    record["dialect"] = dialect
    digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    digest.update(f"{request.image.size}{request.image.mode}".encode())
    digest.update(request.image.tobytes())
    return digest.hexdigest()


def request_from_record(record: Mapping[str, Any], *, inputs_dir: Path) -> GenerationRequest | UpscaleRequest:
    """Rebuild the request a job was submitted with (validated again, as any request is when built)."""
    if record.get("operation") == UPSCALE:
        from PIL import Image

        with Image.open(inputs_dir / str(record["init_image"])) as image:
            rgb = image.convert("RGB")
        return UpscaleRequest(image=rgb, **{name: record[name] for name in UPSCALE_FIELDS if name in record})
    fields = {name: record[name] for name in REQUEST_FIELDS if name in record and name not in IMAGE_FIELDS}
    for name in IMAGE_FIELDS:
        if record.get(name):
            from PIL import Image

            with Image.open(inputs_dir / str(record[name])) as image:
                # A mask keeps its alpha (an RGBA mask's transparency says what to repaint).
                keep_alpha = name == "mask" and image.mode == "RGBA"
                fields[name] = image.convert("RGBA" if keep_alpha else "RGB")
    return GenerationRequest(**fields)


def request_digest(request: GenerationRequest, *, dialect: str) -> str:
    """A digest of what was asked (fields + init image pixels): the same request gives the same digest."""
    digest = hashlib.sha256()
    record = request_record(request)
    record["dialect"] = dialect
    digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    for name in IMAGE_FIELDS:
        image = getattr(request, name)
        if image is not None:
            digest.update(f"{name}{image.size}{image.mode}".encode())
            digest.update(image.tobytes())
    return digest.hexdigest()
