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

from imagegen.requests import GenerationRequest

#: Request fields stored in a job record (``init_image`` is stored as a file name under ``data_dir/inputs``).
REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(GenerationRequest))


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
    """One Server-Sent Event: ``queued``, ``started``, ``progress``, ``done``, ``failed`` or ``cancelled``."""

    event: str
    job: Job


#: Request fields that may differ between the jobs of one denoising batch: each image has its own prompt and seed.
PER_IMAGE_FIELDS = frozenset({"prompt", "negative_prompt", "seed", "num_images"})


def batch_key(record: Mapping[str, Any]) -> str:
    """Jobs that could share one denoising batch: every request field equal but the per-image ones, no init image.

    Derived from the record rather than listed, so a new request field can never let two incompatible jobs share a
    batch."""
    if record.get("init_image"):
        return ""
    shared = {name: value for name, value in record.items() if name not in PER_IMAGE_FIELDS}
    return json.dumps(shared, sort_keys=True, default=str)


def request_record(request: GenerationRequest, *, init_image_name: str | None = None) -> dict[str, Any]:
    """The JSON-able fields of ``request``; the init image is saved by the caller and referenced by name."""
    record = {name: _jsonable(getattr(request, name)) for name in REQUEST_FIELDS if name != "init_image"}
    record["init_image"] = init_image_name if request.init_image is not None else None
    return record


def _jsonable(value: Any) -> Any:
    """Tuples of values or of frozen dataclasses (``loras``, ``styles``) as JSON lists of values or objects."""
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def request_from_record(record: Mapping[str, Any], *, inputs_dir: Path) -> GenerationRequest:
    """Rebuild the request a job was submitted with (validated again, as any request is when built)."""
    fields = {name: record[name] for name in REQUEST_FIELDS if name in record and name != "init_image"}
    if record.get("init_image"):
        from PIL import Image

        with Image.open(inputs_dir / str(record["init_image"])) as image:
            fields["init_image"] = image.convert("RGB")
    return GenerationRequest(**fields)


def request_digest(request: GenerationRequest, *, dialect: str) -> str:
    """A digest of what was asked (fields + init image pixels): the same request gives the same digest."""
    digest = hashlib.sha256()
    record = request_record(request)
    record["dialect"] = dialect
    digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    if request.init_image is not None:
        image = request.init_image
        digest.update(f"{image.size}{image.mode}".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()
