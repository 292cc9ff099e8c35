"""JobService: everything the route handlers of every dialect call, and the supervisor of the worker processes.

The service validates a request, resolves its model inside the configured set and enqueues it; it never generates.
Worker processes (:mod:`imagegen.server.worker`) claim jobs from the store. A supervisor thread watches them: a worker
that dies is restarted, and the job it held is re-queued (at most ``job_retries`` times) or failed as ``worker_lost``.
At start, jobs a previous server left ``running`` (``kill -9``, power loss) get the same treatment.

A retention thread deletes finished jobs older than ``keep_results_hours`` (rows first, then files), and the service
signs the image URLs it hands out (:mod:`imagegen.server.signing`) with a key kept in the data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from imagegen.errors import ImagegenError, InvalidRequest
from imagegen.loading import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    Family,
    ModelInfo,
    builtin_models,
    default_models_dir,
    resolve,
)
from imagegen.requests import GenerationRequest
from imagegen.server.errors import IdempotencyConflict, JobNotFound, QueueFull, ServiceUnavailable
from imagegen.server.jobs import Job, JobEvent, JobStatus, batch_key, request_digest, request_record
from imagegen.server.settings import ServerSettings
from imagegen.server.signing import URLSigner, load_or_create_key
from imagegen.server.store import Insert, JobStore

logger = logging.getLogger("imagegen.server")

_IMAGE_NAME = re.compile(r"[0-9a-f]{32}-[0-9]{1,4}\.png")
#: Files the service writes, by folder: result images (and a worker's ``.partial`` of one), init images.
_RESULT_FILE = re.compile(r"\.?(?P<job>[0-9a-f]{32})-[0-9]{1,4}\.png(?:\.partial)?")
_INPUT_FILE = re.compile(r"(?P<job>[0-9a-f]{32})\.png")
#: A file without a job row is only removed once it is this old: an init image is saved just before its job's row is
#: inserted, and a worker may still be writing a result.
STRAY_FILE_GRACE_SECONDS = 3600.0
#: Jobs deleted per transaction: workers wait for the write lock while it runs.
_RETENTION_BATCH = 500
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
#: SSE event name of each terminal status.
_END_EVENT = MappingProxyType(
    {JobStatus.SUCCEEDED: "done", JobStatus.FAILED: "failed", JobStatus.CANCELLED: "cancelled"}
)
#: Words that mark an ``IMAGEGEN_*`` environment variable as a secret (``IMAGEGEN_API_KEYS``): never passed to workers.
_SECRET_ENV_WORDS = frozenset({"KEY", "KEYS", "SECRET", "SECRETS", "TOKEN", "TOKENS", "PASSWORD", "PASSWORDS", "AUTH"})
#: A worker that dies sooner than this after starting counts as crash-looping: restarts back off.
_CRASH_LOOP_SECONDS = 10.0


class DataDirInUse(ImagegenError):
    code = "data_dir_in_use"


@dataclass(frozen=True, kw_only=True)
class RetentionReport:
    """What one clean-up sweep removed."""

    #: Ids of the deleted jobs.
    jobs: tuple[str, ...] = ()
    #: Files of those jobs (result images, init images).
    files: int = 0
    #: Files whose job had no row any more (a sweep interrupted between its rows and its files, a lost insert).
    stray_files: int = 0


@dataclass(kw_only=True)
class _Slot:
    """One worker position; its process is replaced when it dies."""

    index: int
    id: str = ""
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    #: Set when the supervisor killed the worker because its job ran past ``job_timeout``.
    timed_out: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class JobService:
    """The queue, the model catalog and the workers behind every HTTP dialect."""

    def __init__(self, settings: ServerSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        #: Unix seconds for URL expiry and retention (tests move it instead of sleeping).
        self._clock = clock
        #: A1111 ``/options`` state (``sd_model_checkpoint`` is the default model's title); the A1111 routes own it.
        self.options: dict[str, Any] = {}
        self._store: JobStore | None = None
        self._catalog: dict[str, ModelInfo] = {}
        self._default: ModelInfo | None = None
        self._slots: list[_Slot] = []
        self._stopping = threading.Event()
        self._draining = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._retention: threading.Thread | None = None
        self._retention_lock = threading.Lock()
        self._url_signer: URLSigner | None = None
        self._lock_file: IO[bytes] | None = None

    # Life cycle --------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store, recover jobs a dead server left running, build the model catalog, start the workers."""
        data_dir = self.settings.data_dir
        for folder in (data_dir, self.settings.images_dir, self.settings.inputs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.claim_data_dir()
        for warning in self.settings.warnings():
            logger.warning(warning)
        try:
            key = load_or_create_key(self.settings.url_key_path)
            self._url_signer = URLSigner(key, ttl=self.settings.url_ttl, clock=self._clock)
            self._store = JobStore(self.settings.database)
            requeued, ended = self._store.release(retries=self.settings.job_retries)
            if requeued or ended:
                logger.warning(
                    "recovered jobs left running by a previous server",
                    extra={"requeued": [j.id for j in requeued], "ended": [j.id for j in ended]},
                )
            if not self._catalog:  # `imagegen serve` builds it before binding, to report a bad --model cleanly
                self.refresh_models()
            self._slots = [_Slot(index=i) for i in range(self.settings.workers)]
            for slot in self._slots:
                self._spawn(slot)
        except BaseException:
            self.stop()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="imagegen-supervisor", daemon=True)
        self._supervisor.start()
        if self.settings.keep_results_hours > 0:
            self._retention = threading.Thread(target=self._retain, name="imagegen-retention", daemon=True)
            self._retention.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers now. A job they were running goes back to the queue without counting as an attempt."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        if self._retention is not None:
            self._retention.join(timeout)  # before the store closes under a sweep
        for slot in self._slots:
            self._stop_worker(slot, timeout)
        store, self._store = self._store, None  # later calls get ServiceUnavailable, not a closed database
        if store is not None:
            store.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def begin_drain(self) -> None:
        """SIGTERM: refuse new work (503), report not ready, let running jobs finish; workers then exit."""
        self._draining.set()
        self._send_all("drain")

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def drained(self) -> bool:
        return all(slot.process is None or slot.process.poll() is not None for slot in self._slots)

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.drained():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise ServiceUnavailable("the job service is not running")
        return self._store

    @property
    def url_signer(self) -> URLSigner:
        """Signs the image URLs the dialects hand out (its key is loaded when the service starts)."""
        if self._url_signer is None:
            raise ServiceUnavailable("the job service is not running")
        return self._url_signer

    # Models ------------------------------------------------------------------------------------------------------

    def refresh_models(self) -> list[ModelInfo]:
        """Rebuild the catalog: the built-in demo models, ``settings.models`` and the models directory."""
        catalog: dict[str, ModelInfo] = {}
        for name, folder in builtin_models().items():
            if (folder / "model_index.json").is_file():
                catalog[name] = resolve(name)
        for ref in self.settings.models:
            # The operator's own references may be paths or hub ids; a failure here is a configuration error.
            info = resolve(ref, models_dir=self.settings.models_dir, allow_pickle=self.settings.allow_pickle)
            catalog.setdefault(info.ref, info)
            catalog.setdefault(ref, info)
        catalog.update({k: v for k, v in self._scan_models_dir().items() if k not in catalog})
        default_ref = self.settings.default_model or (self.settings.models[0] if self.settings.models else None)
        if default_ref is None and DEFAULT_MODEL in catalog:
            default_ref = DEFAULT_MODEL
        if default_ref is None:
            # A refiner only refines: it cannot be the model of a plain text-to-image request.
            bases = [ref for ref, info in catalog.items() if info.family is not Family.SDXL_REFINER]
            default_ref = bases[0] if bases else None
        if default_ref is not None and default_ref not in catalog:
            raise InvalidRequest("default_model", f"{default_ref!r} is not one of the served models")
        self._catalog = catalog
        self._default = catalog[default_ref] if default_ref is not None else None
        if self._default is not None:
            self.options.setdefault("sd_model_checkpoint", self._default.title)
        return self.models()

    def _scan_models_dir(self) -> dict[str, ModelInfo]:
        folder = self.settings.models_dir or default_models_dir()
        if not folder.is_dir():
            return {}
        root = folder.resolve()
        found: dict[str, ModelInfo] = {}
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or entry.suffix == ".config" or entry.name in BUILTIN_MODELS:
                continue
            # A symlink pointing out of the models folder is not served: the folder is the operator's boundary.
            if not entry.resolve().is_relative_to(root):
                logger.warning("skipping %s: it points outside the models directory", entry.name)
                continue
            is_model = (entry / "model_index.json").is_file() or entry.suffix.lower() == ".safetensors"
            if not is_model:
                continue
            try:
                info = resolve(entry.name, models_dir=folder)
            except ImagegenError as exc:
                logger.warning("skipping %s: %s", entry.name, exc)
                continue
            found[info.ref] = info
        return found

    def models(self) -> list[ModelInfo]:
        """Each served model once, the default first."""
        unique = {id(info): info for info in self._catalog.values()}
        return sorted(unique.values(), key=lambda m: (m is not self._default, m.ref))

    def default_model(self) -> ModelInfo:
        if self._default is None:
            raise InvalidRequest(
                "model", "this server has no models: start it with --model REF or put models in --models-dir"
            )
        return self._default

    def resolve_model(self, ref: str | None) -> ModelInfo:
        """A served model by reference, A1111 title (``name [hash]``) or name without extension; never a path.

        The name is only ever looked up in the catalog, so ``..``, absolute paths, URLs and NUL cannot reach the
        file system."""
        if ref is None or ref == "":
            return self.default_model()
        if not isinstance(ref, str):
            raise InvalidRequest("model", f"must be a string, got {type(ref).__name__}")
        for info in self._catalog.values():
            if ref in (info.ref, info.title) or Path(info.ref).stem == ref:
                return info
        if ref in self._catalog:
            return self._catalog[ref]
        names = ", ".join(m.ref for m in self.models()) or "none"
        raise InvalidRequest("model", f"unknown model {ref[:200]!r}; this server serves: {names} (GET /v1/models)")

    # Jobs --------------------------------------------------------------------------------------------------------

    def submit(
        self,
        request: GenerationRequest,
        *,
        dialect: str = "native",
        idempotency_key: str | None = None,
        body_digest: str | None = None,
    ) -> Job:
        """Validate ``request`` against the limits and the served models, then enqueue it (no model work here).

        Raises :class:`InvalidRequest`, :class:`QueueFull` (429), :class:`IdempotencyConflict` (409) and
        :class:`ServiceUnavailable` (503, while draining). The same ``idempotency_key`` with the same request (or
        ``body_digest``) returns the job created the first time."""
        if self._draining.is_set():
            raise ServiceUnavailable("the server is shutting down and accepts no new jobs; retry shortly")
        if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise InvalidRequest("Idempotency-Key", "must be 1 to 255 printable ASCII characters without spaces")
        limits = self.settings.limits
        limits.check(request)
        base = self.resolve_model(request.model)
        if base.family is Family.SDXL_REFINER and request.init_image is None:
            raise InvalidRequest(
                "model", f"{base.ref} is an SDXL refiner, which only refines an image: give an init image or a base"
            )
        refiner = self._check_refiner(request, base)
        if request.init_image is None:
            # The model's native size is used when none is given; it must be within the limits too.
            sized = dataclasses.replace(
                request, width=request.width or base.defaults.width, height=request.height or base.defaults.height
            )
            limits.check(sized)
        request = dataclasses.replace(request, model=base.ref, refiner=refiner.ref if refiner else None)
        digest = body_digest or request_digest(request, dialect=dialect)
        job_id = uuid.uuid4().hex
        init_name = None
        if request.init_image is not None:
            init_name = f"{job_id}.png"
            request.init_image.save(self.settings.inputs_dir / init_name, format="PNG")
        record = request_record(request, init_image_name=init_name)
        outcome, job = self.store.insert(
            job_id=job_id,
            dialect=dialect,
            model=base.ref,
            request=record,
            batch_key=batch_key(record),
            max_queue=self.settings.max_queue,
            idempotency_key=idempotency_key,
            body_digest=digest,
        )
        if outcome is not Insert.CREATED and init_name is not None:
            (self.settings.inputs_dir / init_name).unlink(missing_ok=True)
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
            self._send_all("wake")
        return job

    def _check_refiner(self, request: GenerationRequest, base: ModelInfo) -> ModelInfo | None:
        if request.refiner is None:
            return None
        refiner = self.resolve_model(request.refiner)
        if base.family is not Family.SDXL:
            raise InvalidRequest("refiner", f"a refiner continues an SDXL base, but {base.ref} is {base.family.value}")
        if refiner.family is not Family.SDXL_REFINER:
            raise InvalidRequest("refiner", f"{refiner.ref} is a {refiner.family.value} model, not an SDXL refiner")
        return refiner

    def _retry_after(self) -> int:
        """Seconds until a queue slot is likely free: a recent job's run time over the number of workers."""
        durations = self.store.recent_durations()
        typical = sum(durations) / len(durations) if durations else 10.0
        return max(1, min(300, math.ceil(typical / self.settings.workers)))

    def get(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    def list(self, *, status: JobStatus | None = None, limit: int = 20, offset: int = 0) -> list[Job]:
        return self.store.list(status=status, limit=limit, offset=offset)

    def count(self, *, status: JobStatus | None = None) -> int:
        return self.store.count(status)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job now, or ask the worker to stop a running one (it ends ``cancelled`` within a step)."""
        job = self.store.cancel(job_id)
        if job is not None and job.status is JobStatus.CANCELLED and job.request.get("init_image"):
            (self.settings.inputs_dir / str(job.request["init_image"])).unlink(missing_ok=True)
        return job

    def interrupt_current(self, *, dialect: str) -> list[str]:
        """A1111 ``interrupt``: cancel the running jobs submitted through ``dialect``; returns their ids.

        Only that dialect's jobs: an A1111 UI's Interrupt button must not stop a job another client submitted through
        the native or OpenAI API. With several workers, every running job of the dialect is cancelled (A1111 has one
        global job, so its clients expect "the running job" to stop)."""
        cancelled = []
        for job in self.store.running():
            if job.dialect == dialect:
                self.store.cancel(job.id)
                cancelled.append(job.id)
        return cancelled

    def queue_position(self, job_id: str) -> int | None:
        return self.store.queue_position(job_id)

    def current(self) -> Job | None:
        running = self.store.running()
        return running[0] if running else None

    def image_path(self, name: str) -> Path | None:
        """A result image by file name (``<job id>-<index>.png`` only; anything else is not found)."""
        if not isinstance(name, str) or not _IMAGE_NAME.fullmatch(name):
            return None
        path = self.settings.images_dir / name
        return path if path.is_file() else None

    # Retention ---------------------------------------------------------------------------------------------------

    def remove_expired(self) -> RetentionReport:
        """Delete the jobs that ended more than ``keep_results_hours`` ago, their files and their Idempotency-Keys.

        Queued and running jobs are never touched. Safe against a crash at any point: rows go first (each batch in
        one transaction), then the files of those rows, so a job that still has a row never misses a file; files
        left behind by an interrupted sweep have no row and are removed by the next one (see
        :data:`STRAY_FILE_GRACE_SECONDS`)."""
        hours = self.settings.keep_results_hours
        if hours <= 0:
            return RetentionReport()
        with self._retention_lock:
            now = self._clock()
            removed: list[str] = []
            files = 0
            while True:
                # 1. Rows, in short transactions so that workers are never kept waiting long for the write lock.
                jobs = self.store.delete_finished(before=now - hours * 3600, limit=_RETENTION_BATCH)
                # 2. Then the files those rows referenced; nothing refers to them any more.
                for job in jobs:
                    files += self._remove_job_files(job)
                removed.extend(job.id for job in jobs)
                if len(jobs) < _RETENTION_BATCH:
                    break
            # 3. Files no row refers to (unreferenced results of a worker that died, a sweep cut short above).
            stray = self._remove_stray_files(now)
        report = RetentionReport(jobs=tuple(removed), files=files, stray_files=stray)
        if removed or stray:
            logger.info(
                "removed expired results",
                extra={
                    "removed_jobs": len(removed),
                    "removed_files": files,
                    "stray_files": stray,
                    "keep_hours": hours,
                    "jobs": removed[:100],
                },
            )
        return report

    def _remove_job_files(self, job: Job) -> int:
        paths = [self.settings.images_dir / name for name in job.images if _IMAGE_NAME.fullmatch(name)]
        init = job.request.get("init_image")
        if isinstance(init, str) and _INPUT_FILE.fullmatch(init):
            paths.append(self.settings.inputs_dir / init)
        return sum(_unlink(path) for path in paths)

    def _remove_stray_files(self, now: float) -> int:
        found: dict[str, list[Path]] = {}
        for folder, pattern in ((self.settings.images_dir, _RESULT_FILE), (self.settings.inputs_dir, _INPUT_FILE)):
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for entry in entries:
                match = pattern.fullmatch(entry.name)
                if match is not None:  # anything else is not ours to delete
                    found.setdefault(match["job"], []).append(Path(entry.path))
        known = self.store.existing(found)
        removed = 0
        for job_id, paths in found.items():
            if job_id in known:
                continue
            for path in paths:
                try:
                    young = path.lstat().st_mtime > now - STRAY_FILE_GRACE_SECONDS
                except FileNotFoundError:
                    continue
                if not young:
                    removed += _unlink(path)
        return removed

    def _retain(self) -> None:
        """The retention thread: a sweep at start, then one every ``cleanup_interval`` seconds until stopped."""
        while True:
            try:
                self.remove_expired()
            except Exception:  # a locked database or a full disk must not end retention for good
                logger.exception("removing expired results failed")
            if self._stopping.wait(self.settings.cleanup_interval):
                return

    async def wait(self, job_id: str) -> Job:
        """Return the job once it has ended. Raises :class:`ServiceUnavailable` if draining stranded it in the queue."""
        while True:
            job = self.get(job_id)
            if job is None:
                raise JobNotFound(f"no job {job_id[:100]!r}")
            if job.terminal:
                return job
            if job.status is JobStatus.QUEUED and self._draining.is_set() and self.drained():
                raise ServiceUnavailable("the server shut down before this job started; it runs after the restart")
            await asyncio.sleep(self.settings.poll_interval)

    async def events(self, job_id: str, *, keepalive: float | None = None) -> AsyncIterator[JobEvent]:
        """``queued``, ``started``, ``progress`` (per observed step), then ``done``/``failed``/``cancelled``.

        With ``keepalive``, a ``keepalive`` event comes whenever nothing else has for that many seconds (a long wait
        in the queue), so that proxies do not close an idle stream."""
        status: JobStatus | None = None
        step = 0
        started = False
        last = time.monotonic()
        while True:
            job = self.get(job_id)
            if job is None:
                return
            names = []
            if job.status is JobStatus.QUEUED and status is not JobStatus.QUEUED:
                step, started = 0, False  # a retried job starts over
                names.append("queued")
            elif job.status is JobStatus.RUNNING or (job.terminal and job.started_at is not None):
                if not started:
                    started = True
                    names.append("started")
                if job.status is JobStatus.RUNNING and job.step > step:
                    step = job.step
                    names.append("progress")
            if job.terminal:
                names.append(_END_EVENT[job.status])
            if not names and keepalive is not None and time.monotonic() - last >= keepalive:
                names.append("keepalive")
            for name in names:
                yield JobEvent(event=name, job=job)
                last = time.monotonic()
            if job.terminal:
                return
            status = job.status
            await asyncio.sleep(self.settings.poll_interval)

    # Health ------------------------------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): a worker is up with the default model loaded, and the server is not draining."""
        if self._draining.is_set():
            return False, "draining"
        if self._store is None or self._stopping.is_set():
            return False, "not_running"
        states = []
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is None:
                worker = self._store.worker(slot.id)
                states.append(worker.state if worker else "starting")
        if "ready" in states:
            return True, "ready"
        if "error" in states:
            return False, "model_not_loadable"
        return False, "worker_starting" if states else "no_worker"

    def ready(self) -> bool:
        return self.readiness()[0]

    def workers(self) -> list[dict[str, Any]]:
        """State of each worker slot (for /readyz)."""
        rows = []
        for slot in self._slots:
            alive = slot.process is not None and slot.process.poll() is None
            state = self._store.worker(slot.id) if self._store is not None and slot.id else None
            rows.append({"index": slot.index, "alive": alive, "state": state.state if state and alive else "down"})
        return rows

    # Workers -----------------------------------------------------------------------------------------------------

    def _worker_settings(self, slot: _Slot) -> ServerSettings:
        device = self.settings.device
        if self.settings.workers > 1 and device == "cuda":
            device = f"cuda:{slot.index}"  # one worker per GPU
        default = self._default.ref if self._default is not None else None
        return dataclasses.replace(self.settings, default_model=default, device=device)

    def _spawn(self, slot: _Slot) -> None:
        slot.id = f"{slot.index}-{uuid.uuid4().hex[:8]}"
        # stdin carries the settings and stays open: its end of file tells the worker that this process is gone.
        process = subprocess.Popen(
            [sys.executable, "-m", "imagegen.server.worker", slot.id],
            stdin=subprocess.PIPE,
            env={**worker_environment(os.environ), "PYTHONUNBUFFERED": "1"},
        )
        if process.stdin is not None:
            process.stdin.write(self._worker_settings(slot).worker_json().encode() + b"\n")
            process.stdin.flush()
            # From now on only short commands: a worker that stopped reading (frozen) must not block a request
            # thread, and a lost "wake" only costs the worker's idle poll.
            os.set_blocking(process.stdin.fileno(), False)
        with slot.lock:
            slot.process = process
            slot.started = time.monotonic()
        logger.info("worker started", extra={"worker": slot.id, "pid": process.pid})

    def _send(self, slot: _Slot, line: str) -> None:
        process = slot.process
        if process is None or process.stdin is None or process.stdin.closed:
            return
        with contextlib.suppress(OSError, ValueError):  # full pipe or dead worker: the supervisor handles the latter
            os.write(process.stdin.fileno(), line.encode() + b"\n")

    def _send_all(self, line: str) -> None:
        for slot in self._slots:
            with slot.lock:
                self._send(slot, line)

    def _supervise(self) -> None:
        while not self._stopping.wait(0.2):
            for slot in self._slots:
                try:
                    self._check(slot)
                except Exception:  # the supervisor must outlive any single failure (e.g. a locked database)
                    logger.exception("supervisor check failed")

    def _check(self, slot: _Slot) -> None:
        now = time.monotonic()
        if slot.process is None:
            if not self._draining.is_set() and now >= slot.restart_at:
                self._spawn(slot)
            return
        code = slot.process.poll()
        if code is None:
            self._enforce_timeout(slot)
            return
        with slot.lock:
            slot.process = None
        fail_as = None
        if slot.timed_out:
            message = f"the job ran longer than {self.settings.job_timeout:g} s (--job-timeout); its worker was stopped"
            fail_as = ("timeout", message)
        requeued, ended = self.store.release(retries=self.settings.job_retries, worker=slot.id, fail_as=fail_as)
        self.store.set_worker(slot.id, pid=0, state="stopped", detail=f"exit code {code}")
        if self._draining.is_set() and code == 0 and not requeued and not ended:
            return  # drained as asked
        crashed = now - slot.started < _CRASH_LOOP_SECONDS and not slot.timed_out
        slot.failures = slot.failures + 1 if crashed else 0
        slot.timed_out = False
        # A single crash restarts at once; only a crash loop (a bad device, a poisoned model) backs off.
        slot.restart_at = now + (min(30.0, 2.0 ** (slot.failures - 1)) if slot.failures > 1 else 0.0)
        logger.error(
            "worker died (exit code %s); restarting",
            code,
            extra={
                "worker": slot.id,
                "requeued": [j.id for j in requeued],
                "ended": [j.id for j in ended],
                "code": code,
            },
        )

    def _enforce_timeout(self, slot: _Slot) -> None:
        """Kill a worker whose job runs past ``job_timeout``: a hung generation must not hold the queue forever."""
        limit = self.settings.job_timeout
        if limit is None or slot.timed_out:
            return
        now = time.time()
        for job in self.store.running():
            if job.worker == slot.id and job.started_at is not None and now - job.started_at > limit:
                logger.error("job timed out; stopping its worker", extra={"job": job.id, "worker": slot.id})
                slot.timed_out = True
                with slot.lock:
                    if slot.process is not None:
                        slot.process.kill()
                return

    def _stop_worker(self, slot: _Slot, timeout: float) -> None:
        with slot.lock:
            process, slot.process = slot.process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # end of file: the worker exits at once
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._store is not None:
            self._store.release(retries=self.settings.job_retries, worker=slot.id, penalize=False)
            self._store.set_worker(slot.id, pid=0, state="stopped")

    def claim_data_dir(self) -> None:
        """Lock the data directory for this process: a second server would "recover" the first one's running jobs.

        Raises :class:`DataDirInUse`. The lock dies with the process, ``kill -9`` included."""
        if self._lock_file is not None:
            return
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks, run one server per data dir
            return
        handle = (self.settings.data_dir / "server.lock").open("wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise DataDirInUse(f"another imagegen server is using {self.settings.data_dir}") from None
        self._lock_file = handle


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without imagegen's secrets (``IMAGEGEN_API_KEYS`` and any ``IMAGEGEN_*`` key/token/password).

    A worker never checks credentials (:meth:`ServerSettings.worker_json` leaves them out too), and a worker runs the
    most third-party code (model loading, pipelines), so it should hold no secret that could leak from there."""
    return {name: value for name, value in environ.items() if not _is_secret_env(name)}


def _is_secret_env(name: str) -> bool:
    upper = name.upper()
    return upper.startswith("IMAGEGEN_") and not _SECRET_ENV_WORDS.isdisjoint(upper.split("_"))


def _unlink(path: Path) -> int:
    """1 if ``path`` was removed, 0 if it was already gone or cannot be removed (logged: one odd entry, such as a
    directory an operator made, must not stop every later sweep)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        logger.warning("cannot remove %s: %s", path.name, exc.strerror or exc)
        return 0
    return 1
