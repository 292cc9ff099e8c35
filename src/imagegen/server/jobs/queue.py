"""The API side of the job queue: submit, read, cancel, wait for and follow jobs. It never generates.

:meth:`JobQueue.submit` checks a request against the operator's limits and the served models (the same model rules
as the engine, :mod:`imagegen.rules`), saves its init image and inserts the job in one transaction with the queue
bound and the Idempotency-Key check. Workers (:mod:`imagegen.server.jobs.worker`) claim it from the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from imagegen.errors import DiskFull, InvalidRequest, is_disk_full
from imagegen.requests import GenerationRequest, UpscaleRequest
from imagegen.rules import (
    check_hires,
    check_models,
    check_networks,
    check_sd_upscale,
    check_upscale,
    effective_eta,
)
from imagegen.server.catalog import ModelCatalog
from imagegen.server.errors import IdempotencyConflict, JobNotEnded, JobNotFound, QueueFull, ServiceUnavailable
from imagegen.server.jobs.model import (
    IMAGE_FIELDS,
    MAX_PREVIEW_EVERY,
    PREVIEW_EVERY,
    REQUEST_ID_FIELD,
    Job,
    JobEvent,
    JobStatus,
    Preview,
    batch_key,
    input_names,
    preview_interval,
    request_digest,
    request_record,
    upscale_digest,
    upscale_record,
)
from imagegen.server.jobs.store import Insert, JobStore
from imagegen.server.logs import REQUEST_ID
from imagegen.server.settings import ServerSettings

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["IMAGE_NAME", "INPUT_NAME", "JobQueue", "job_files", "result_image_path"]

#: A result image's file name: ``<job id>-<index>.png``.
IMAGE_NAME = re.compile(r"[0-9a-f]{32}-[0-9]{1,4}(\.a[0-9]{1,3})?\.png")  # .aN: written by attempt N (a retry)
#: A job's input image files: ``<job id>.png`` (init image) and ``<job id>-mask.png``.
INPUT_NAME = re.compile(r"[0-9a-f]{32}(?:-mask)?\.png")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
#: SSE event name of each terminal status.
_END_EVENT = MappingProxyType(
    {JobStatus.SUCCEEDED: "done", JobStatus.FAILED: "failed", JobStatus.CANCELLED: "cancelled"}
)


class JobQueue:
    """Submit, read and cancel jobs in the store. ``wake`` tells idle workers a job is waiting; ``draining`` is set
    while the server shuts down (new work gets 503), and ``drained`` says whether the workers have all stopped."""

    def __init__(
        self,
        settings: ServerSettings,
        store: JobStore,
        catalog: ModelCatalog,
        *,
        wake: Callable[[], None],
        draining: threading.Event,
        drained: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self._wake = wake
        self._draining = draining
        self._drained = drained

    # Submitting ------------------------------------------------------------------------------------------------------

    def submit(
        self,
        request: GenerationRequest | UpscaleRequest,
        *,
        dialect: str = "native",
        idempotency_key: str | None = None,
        body_digest: str | None = None,
        preview_every: int = 0,
    ) -> Job:
        """Check ``request`` against the limits and the served models, then enqueue it (no model work here).
        ``preview_every=N`` asks for a live preview every N steps (:meth:`preview`, ``preview`` events).

        Raises :class:`InvalidRequest`, :class:`QueueFull` (429), :class:`IdempotencyConflict` (409) and
        :class:`ServiceUnavailable` (503, while draining). The same ``idempotency_key`` with the same request (or
        ``body_digest``) returns the job created the first time."""
        if self._draining.is_set():
            raise ServiceUnavailable("the server is shutting down and accepts no new jobs; retry shortly")
        if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise InvalidRequest("Idempotency-Key", "must be 1 to 255 printable ASCII characters without spaces")
        check_preview_every(preview_every)
        # 1. The limits, the served models and the rules that depend on them.
        job_id = uuid.uuid4().hex
        if isinstance(request, UpscaleRequest):
            model = request.upscaler
            check_upscale(request, self.settings.limits)
            digest = body_digest or upscale_digest(request, dialect=dialect)
            record = upscale_record(request, job_id=job_id)
            images: dict[str, Image] = {"init_image": request.image}
        else:
            request = self._checked(request)
            model = str(request.model)
            # 2. The input images go to files; the record names them.
            digest = body_digest or request_digest(request, dialect=dialect)
            record = request_record(request, job_id=job_id)
            images = {name: getattr(request, name) for name in IMAGE_FIELDS if getattr(request, name) is not None}
        if preview_every:
            record[PREVIEW_EVERY] = preview_every
        if (request_id := REQUEST_ID.get()) is not None:
            record[REQUEST_ID_FIELD] = request_id
        try:
            for name, image in images.items():
                image.save(self.settings.inputs_dir / str(record[name]), format="PNG")
            # 3. One transaction: idempotency, the queue bound, the insert.
            outcome, job = self.store.insert(
                job_id=job_id,
                dialect=dialect,
                model=model,
                request=record,
                batch_key=batch_key(record),
                max_queue=self.settings.max_queue,
                idempotency_key=idempotency_key,
                body_digest=digest,
            )
        except Exception as exc:
            # Nothing was stored (a failed insert rolls back): say so, rather than accept a job that is not there.
            for name in input_names(record):
                (self.settings.inputs_dir / name).unlink(missing_ok=True)
            if is_disk_full(exc):
                raise DiskFull(
                    f"no space left in the data directory {self.settings.data_dir}: the job was not stored; "
                    "retry once space is freed"
                ) from exc
            raise
        if outcome is not Insert.CREATED:
            for name in input_names(record):
                (self.settings.inputs_dir / name).unlink(missing_ok=True)
        if outcome is Insert.FULL:
            raise QueueFull(
                f"the queue is full ({self.settings.max_queue} jobs waiting); retry later",
                retry_after=self._retry_after(),
            )
        if outcome is Insert.CONFLICT:
            raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
        if job is None:  # pragma: no cover - insert returns a job for CREATED and EXISTING
            raise ServiceUnavailable("the job could not be stored")
        if outcome is Insert.CREATED:
            self._wake()
        return job

    def _checked(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` checked against the limits, the served models and their rules, with its models resolved."""
        limits = self.settings.limits
        limits.check(request)
        base = self.catalog.resolve(request.model)
        refiner = self.catalog.resolve(request.refiner) if request.refiner is not None else None
        check_models(request, base, refiner)
        effective_eta(request, base, refiner)
        check_networks(request, self.settings.engine)
        sized = dataclasses.replace(
            request, width=request.width or base.defaults.width, height=request.height or base.defaults.height
        )
        if request.init_image is None:
            # The model's native size is used when none is given; it must be within the limits too.
            limits.check(sized)
            if sized.enable_hr:
                check_hires(sized, limits)
        check_sd_upscale(sized, limits)
        return dataclasses.replace(request, model=base.ref, refiner=refiner.ref if refiner else None)

    def _retry_after(self) -> int:
        """Seconds until a queue slot is likely free: a recent job's run time over the number of workers."""
        durations = self.store.recent_durations()
        typical = sum(durations) / len(durations) if durations else 10.0
        return max(1, min(300, math.ceil(typical / self.settings.workers)))

    # Reading ---------------------------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    def require(self, job_id: str) -> Job:
        """The job, or :class:`JobNotFound` (404)."""
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id[:100]!r}")
        return job

    def list_jobs(self, *, status: JobStatus | None = None, limit: int = 20, offset: int = 0) -> list[Job]:
        return self.store.list_jobs(status=status, limit=limit, offset=offset)

    def count(self, *, status: JobStatus | None = None) -> int:
        return self.store.count(status)

    def queue_position(self, job_id: str) -> int | None:
        return self.store.queue_position(job_id)

    def current(self) -> Job | None:
        """The running job that started first (A1111 has one global job)."""
        running = self.store.running()
        return running[0] if running else None

    def preview(self, job_id: str) -> Preview | None:
        """The running job's latest live preview, if it asked for previews and one was made."""
        return self.store.preview(job_id)

    def image_path(self, name: str) -> Path | None:
        """A result image by file name (``<job id>-<index>.png`` only; anything else is not found)."""
        return result_image_path(self.settings, name)

    # Cancelling ------------------------------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now, or ask its worker to stop a running one (it ends ``cancelled`` within a step).
        Cancelling an ended job changes nothing. :class:`JobNotFound` for an unknown id."""
        job = self.store.cancel(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id[:100]!r}")
        if job.status is JobStatus.CANCELLED:
            for name in input_names(job.request):
                (self.settings.inputs_dir / name).unlink(missing_ok=True)
        return job

    def delete(self, job_id: str) -> Job:
        """Delete an ended job, its result images, its input images and its Idempotency-Key; returns the job as it
        was. :class:`JobNotFound` for an unknown id, :class:`JobNotEnded` for a queued or running one."""
        job, deleted = self.store.delete_ended(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id[:100]!r}")
        if not deleted:
            raise JobNotEnded(f"job {job_id} is {job.status.value}: cancel it first, then delete it once it has ended")
        for path in job_files(self.settings, job):
            path.unlink(missing_ok=True)
        return job

    def interrupt(self, *, dialect: str) -> list[str]:
        """Cancel the running jobs submitted through ``dialect``; returns their ids.

        Only that dialect's jobs: an A1111 UI's Interrupt button must not stop a job another client submitted through
        the native or OpenAI API. With several workers, every running job of the dialect is cancelled (A1111 has one
        global job, so its clients expect "the running job" to stop)."""
        cancelled = []
        for job in self.store.running():
            if job.dialect == dialect:
                self.store.cancel(job.id)
                cancelled.append(job.id)
        return cancelled

    # Waiting and following -------------------------------------------------------------------------------------------

    async def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job once it has ended, or as it is after ``timeout`` seconds. :class:`ServiceUnavailable` if draining
        stranded it in the queue."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.require(job_id)
            if job.terminal or (deadline is not None and time.monotonic() >= deadline):
                return job
            if job.status is JobStatus.QUEUED and self._draining.is_set() and self._drained():
                raise ServiceUnavailable("the server shut down before this job started; it runs after the restart")
            await asyncio.sleep(self.settings.poll_interval)

    async def events(self, job_id: str, *, keepalive: float | None = None) -> AsyncIterator[JobEvent]:
        """``queued``, ``started``, ``progress`` (per observed step), ``preview`` (per new live preview, for a job
        that asked for them), then ``done``/``failed``/``cancelled``.

        With ``keepalive``, a ``keepalive`` event comes whenever nothing else has for that many seconds (a long wait
        in the queue), so that proxies do not close an idle stream. A queued job's stream ends without a last event
        once a draining server has stopped its workers: follow it again after the restart."""
        status: JobStatus | None = None
        step = 0
        shown = 0  # the step of the last preview sent
        started = False
        last = time.monotonic()
        while True:
            job = self.get(job_id)
            if job is None:
                return
            names = []
            preview = None
            if job.status is JobStatus.QUEUED and status is not JobStatus.QUEUED:
                step, shown, started = 0, 0, False  # a retried job starts over
                names.append("queued")
            elif job.status is JobStatus.RUNNING or (job.terminal and job.started_at is not None):
                if not started:
                    started = True
                    names.append("started")
                if job.status is JobStatus.RUNNING and job.step > step:
                    step = job.step
                    names.append("progress")
                    # Read only when the job asked for previews and has moved on: status reads stay one query.
                    if preview_interval(job.request):
                        latest = self.store.preview(job_id)
                        if latest is not None and latest.step > shown:
                            shown, preview = latest.step, latest
                            names.append("preview")
            if job.terminal:
                names.append(_END_EVENT[job.status])
            if not names and keepalive is not None and time.monotonic() - last >= keepalive:
                names.append("keepalive")
            for name in names:
                yield JobEvent(event=name, job=job, preview=preview if name == "preview" else None)
                last = time.monotonic()
            if job.terminal:
                return
            if job.status is JobStatus.QUEUED and self._draining.is_set() and self._drained():
                # The server stops before this job starts: end the stream (it runs after the restart), or the open
                # connection would hold up the exit until the server's graceful-shutdown timeout.
                return
            status = job.status
            await asyncio.sleep(self.settings.poll_interval)


def check_preview_every(value: object) -> None:
    """``preview_every`` is 0 (no previews) or a step interval."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PREVIEW_EVERY:
        raise InvalidRequest(
            PREVIEW_EVERY,
            f"must be 0 (no previews) or a step interval from 1 to {MAX_PREVIEW_EVERY}, got {value!r}",
        )


def result_image_path(settings: ServerSettings, name: str) -> Path | None:
    """A result image by file name (``<job id>-<index>.png`` only; anything else is not found). Needs no running
    queue: the files are in the data directory."""
    if not isinstance(name, str) or not IMAGE_NAME.fullmatch(name):
        return None
    path = settings.images_dir / name
    return path if path.is_file() else None


def job_files(settings: ServerSettings, job: Job) -> list[Path]:
    """The files the service wrote for ``job``: its result images and its input images (init image, mask)."""
    paths = [settings.images_dir / name for name in job.images if IMAGE_NAME.fullmatch(name)]
    paths += [settings.inputs_dir / name for name in input_names(job.request) if INPUT_NAME.fullmatch(name)]
    return paths
