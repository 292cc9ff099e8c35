"""The worker process: owns the engine and its loaded models, claims jobs from the store and runs them.

Started by the API process's supervisor as ``python -m imagegen.server.jobs.worker WORKER_ID``. The first line on
stdin is the settings (JSON, without secrets); the pipe then stays open as a control channel: ``wake`` (a job was
queued), ``drain`` (finish the running job, then exit). End of file means the API process is gone: the worker exits
at once, and the job it was running is re-queued or failed by whoever starts next (the store never trusts a dead
worker).

The engine comes from ``settings.engine_factory`` (``module:callable`` taking the settings), so tests can run the
whole service with a fake engine. Generation never runs in the API process.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import logging
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from imagegen.errors import Cancelled, DiskFull, GenerationFailed, ImagegenError, is_disk_full
from imagegen.requests import GenerationRequest, GenerationResult, UpscaleRequest, UpscaleResult
from imagegen.server.jobs.model import (
    REQUEST_ID_FIELD,
    Job,
    JobStatus,
    Preview,
    input_names,
    preview_interval,
    request_from_record,
)
from imagegen.server.jobs.store import JobStore, open_store
from imagegen.server.metrics import MULTIPROC_ENV
from imagegen.server.settings import ServerSettings

if TYPE_CHECKING:
    from PIL.Image import Image

    from imagegen.server.metrics import WorkerMetrics

logger = logging.getLogger("imagegen.worker")

#: JPEG quality of stored live previews (approximate pictures: a few kilobytes each).
PREVIEW_QUALITY = 85
#: Free bytes the data directory needs before a worker claims a job: below this its images could not be saved, so
#: queued jobs wait for space rather than fail one after another.
MIN_FREE_BYTES = 1 << 20


class ProgressLike(Protocol):
    """What the worker reads from a progress event (:class:`imagegen.engine.ProgressEvent` or a test fake's)."""

    @property
    def step(self) -> int: ...

    @property
    def total(self) -> int: ...

    @property
    def preview(self) -> Image | None: ...


class EngineLike(Protocol):
    """What a worker needs from an engine (:class:`imagegen.engine.Engine` or a test fake)."""

    def load(self, ref: str | None = None) -> object: ...

    def generate(
        self,
        request: GenerationRequest,
        *,
        progress: Callable[[ProgressLike], None] | None = None,
        cancel: threading.Event | None = None,
        previews: int = 0,
    ) -> GenerationResult: ...

    def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        *,
        progress: Callable[[int, ProgressLike], None] | None = None,
        cancels: Sequence[threading.Event] | None = None,
        previews: Sequence[int] | None = None,
    ) -> list[GenerationResult | ImagegenError]: ...

    def upscale(
        self,
        request: UpscaleRequest,
        *,
        progress: Callable[[ProgressLike], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> UpscaleResult: ...


def default_engine(settings: ServerSettings) -> EngineLike:
    """The real engine with the configured options (imports torch and diffusers: only ever called in a worker)."""
    options = settings.engine
    if options.threads is None:
        options = dataclasses.replace(options, threads=worker_threads(settings.workers, os.cpu_count() or 1))
    return options.engine(default_model=settings.default_model, limits=settings.limits)


def worker_threads(workers: int, cpus: int) -> int:
    """CPU threads of each worker when the operator sets none: the API process keeps a core, the workers share the
    rest. Measured on 2 cores with 16 clients polling every 50 ms (bench/poll_load.py, demo model): a worker with
    both cores loses 17-34 % of its images per second to the API process answering the polls (its parallel regions
    wait for the preempted thread), one with one core nothing, for 10-15 % less speed when nobody polls."""
    return max(1, (cpus - 1) // max(1, workers))


def load_factory(spec: str) -> Callable[[ServerSettings], EngineLike]:
    """Import ``module:callable``."""
    module_name, _, attribute = spec.partition(":")
    factory: Callable[[ServerSettings], EngineLike] | None = getattr(
        importlib.import_module(module_name), attribute, None
    )
    if not callable(factory):
        raise ImportError(f"engine factory {spec!r}: {attribute!r} is not a callable in {module_name}")
    return factory


class Worker:
    """Claims and runs jobs until told to drain: one job, or consecutive compatible jobs as one batch."""

    def __init__(
        self,
        settings: ServerSettings,
        worker_id: str,
        store: JobStore,
        engine: EngineLike,
        *,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.id = worker_id
        self.store = store
        self.engine = engine
        self.metrics = metrics
        self.wake = threading.Event()
        self.drain = threading.Event()
        #: Set by :func:`create_worker`; stopped when the worker goes away for good.
        self.heartbeat: Heartbeat | None = None
        self._full = False

    def load_default_model(self) -> None:
        """Load the default model now (readiness means "a job can run", and the first job should not pay for it);
        the worker's row says ``ready``, or ``error`` with the reason (the worker stays up: other models may load)."""
        try:
            self.engine.load(self.settings.default_model)
        except ImagegenError as exc:
            self.store.set_worker(self.id, pid=os.getpid(), state="error", detail=f"{exc.code}: {exc}")
            logger.error("default model not loadable: %s", exc, extra={"worker": self.id})
        else:
            self.store.set_worker(self.id, pid=os.getpid(), state="ready")
            logger.info("worker ready", extra={"worker": self.id, "pid": os.getpid()})

    def stop(self) -> None:
        """Finish the running job, then return from :meth:`serve` (``drain`` on the control pipe, or SIGTERM)."""
        self.drain.set()
        self.wake.set()

    @property
    def batching(self) -> bool:
        return self.settings.max_batch > 1 and hasattr(self.engine, "generate_batch")

    def serve(self) -> None:
        idle_wait = max(self.settings.poll_interval * 5, 0.2)
        idle = False
        while not self.drain.is_set():
            if idle and self.batching and self.settings.batch_wait:
                # Just woken: jobs submitted together arrive a few milliseconds apart; wait for their company.
                time.sleep(self.settings.batch_wait)
            if not self.step():
                # Woken at once by the API on submit; the timeout only covers a lost wake-up.
                self.wake.wait(idle_wait)
                self.wake.clear()
                idle = True
                continue
            idle = False

    def step(self) -> list[str]:
        """One turn of the job loop (a worker process's, or a Ray engine replica's per request): claim and run the
        next job or batch, unless the disk is full. Returns the ids run: none when there was nothing to run."""
        try:
            return [] if self._out_of_space() else self.run_next()
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            # Not even a claim can be written: wait for space rather than die (a restarted worker fares no better).
            logger.warning("disk full: cannot claim a job; waiting for space", extra={"worker": self.id})
            return []

    def _out_of_space(self) -> bool:
        """Whether the data directory is (nearly) full; says so in the log when that changes."""
        try:
            full = shutil.disk_usage(self.settings.data_dir).free < MIN_FREE_BYTES
        except OSError:
            full = False
        if full != self._full:
            message = "disk full: no job is claimed until space is freed in %s" if full else "disk space is back in %s"
            logger.warning(message, self.settings.data_dir, extra={"worker": self.id})
            self._full = full
        return full

    def run_next(self) -> list[str]:
        """Claim the next job (with the compatible jobs queued right behind it, when batching) and run it to its end.
        Returns the ids of the jobs run: none when the queue was empty."""
        jobs = self.store.claim(
            self.id,
            max_jobs=self.settings.max_batch if self.batching else 1,
            max_images=self.settings.max_batch_images,
        )
        if len(jobs) == 1:
            self.run(jobs[0])
        elif jobs:
            self.run_batch(jobs)
        return [job.id for job in jobs]

    def run(self, job: Job) -> None:
        """Run one claimed job to its end and record the outcome."""
        started = time.monotonic()
        logger.info("job started", extra=self._log(job))
        cancel = threading.Event()
        status, fields = JobStatus.FAILED, {}
        try:
            request = request_from_record(job.request, inputs_dir=self.settings.inputs_dir)
            if self.store.cancel_requested(job.id):
                raise Cancelled("cancelled before it started")
            if isinstance(request, UpscaleRequest):
                result: GenerationResult | UpscaleResult = self.engine.upscale(
                    request, progress=self._progress(job, cancel), cancel=cancel
                )
            else:
                if self.metrics is not None:
                    self.metrics.batch_jobs.observe(1)
                result = self.engine.generate(
                    request, progress=self._progress(job, cancel), cancel=cancel, previews=preview_interval(job.request)
                )
            fields = self._save(job, result)
            status = JobStatus.SUCCEEDED
        except Cancelled:
            status = JobStatus.CANCELLED
        except ImagegenError as exc:
            fields = {"error_code": exc.code, "error_message": str(exc)}
        except Exception as exc:  # the engine or a model raised something unforeseen: fail this job, keep serving
            logger.error("job crashed", extra=self._log(job), exc_info=True)
            fields = _crash(exc, self.settings.data_dir)
        self._finish(job, status, fields, started)

    def run_batch(self, jobs: list[Job]) -> None:
        """Run claimed jobs of one batch key as one denoising batch (:meth:`Engine.generate_batch`): each job keeps
        its own progress, cancel and outcome; a job that cannot even start ends alone."""
        started = time.monotonic()
        batch = {"batch": len(jobs), "batch_jobs": [job.id for job in jobs]}
        runnable: list[tuple[Job, GenerationRequest, threading.Event]] = []
        for job in jobs:
            logger.info("job started", extra={**self._log(job), **batch})
            try:
                request = request_from_record(job.request, inputs_dir=self.settings.inputs_dir)
                if self.store.cancel_requested(job.id):
                    raise Cancelled("cancelled before it started")
                if not isinstance(request, GenerationRequest):  # pragma: no cover - upscales never share a batch key
                    raise TypeError("only generation jobs run in batches")
            except Cancelled:
                self._finish(job, JobStatus.CANCELLED, {}, started)
                continue
            except ImagegenError as exc:
                self._finish(job, JobStatus.FAILED, {"error_code": exc.code, "error_message": str(exc)}, started)
                continue
            runnable.append((job, request, threading.Event()))
        if not runnable:
            return
        if self.metrics is not None:
            self.metrics.batch_jobs.observe(len(runnable))
        # Every member sees every step: only the first one times it, so a batch's step counts once.
        handlers = [self._progress(job, cancel, time_steps=k == 0) for k, (job, _, cancel) in enumerate(runnable)]
        try:
            outcomes: list[GenerationResult | ImagegenError] = self.engine.generate_batch(
                [request for _, request, _ in runnable],
                progress=lambda k, event: handlers[k](event),
                cancels=[cancel for _, _, cancel in runnable],
                previews=[preview_interval(job.request) for job, _, _ in runnable],
            )
        except Exception as exc:  # the engine failed as a whole: every job of the batch fails with the cause
            logger.error("batch crashed", extra={"worker": self.id, **batch}, exc_info=True)
            outcomes = [GenerationFailed(str(exc)[:1000]) for _ in runnable]
            crash: dict[str, Any] | None = _crash(exc, self.settings.data_dir)
        else:
            crash = None
        for (job, _, _), outcome in zip(runnable, outcomes, strict=True):
            if crash is not None:
                self._finish(job, JobStatus.FAILED, crash, started)
            elif isinstance(outcome, Cancelled):
                self._finish(job, JobStatus.CANCELLED, {}, started)
            elif isinstance(outcome, ImagegenError):
                self._finish(
                    job, JobStatus.FAILED, {"error_code": outcome.code, "error_message": str(outcome)}, started
                )
            else:
                try:
                    fields = self._save(job, outcome)
                except Exception as exc:  # a disk error writing one job's images fails that job only
                    logger.error("saving failed", extra=self._log(job), exc_info=True)
                    self._finish(job, JobStatus.FAILED, _crash(exc, self.settings.data_dir), started)
                    continue
                self._finish(job, JobStatus.SUCCEEDED, fields, started)

    def _log(self, job: Job) -> dict[str, Any]:
        return {
            "job": job.id,
            "worker": self.id,
            "attempts": job.attempts,
            "request_id": job.request.get(REQUEST_ID_FIELD),
        }

    def _finish(self, job: Job, status: JobStatus, fields: dict[str, Any], started: float) -> None:
        delay = 0.2
        while True:
            try:
                held = self.store.finish(job.id, self.id, status, **fields)
                break
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                # Dying would leave the job to a retry that fails the same way: hold it, record the end once space
                # is freed (or a stop of the server re-queues it).
                logger.warning("disk full: cannot record the job's end; retrying", extra=self._log(job))
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        if held:
            # The inputs are only kept for a retry; once the job has ended they are no longer needed.
            for name in input_names(job.request):
                (self.settings.inputs_dir / name).unlink(missing_ok=True)
        else:
            # Taken away while we ran it: the images this attempt wrote (its own names) belong to no job.
            for name in fields.get("images", ()):
                (self.settings.images_dir / name).unlink(missing_ok=True)
        seconds = round(time.monotonic() - started, 3)
        if held and self.metrics is not None:
            self.metrics.ended(status, images=len(fields.get("images", ())), seconds=seconds)
        logger.info(
            "job %s",
            status.value if held else "finished after it was taken away",
            extra={**self._log(job), "seconds": seconds},
        )

    def _progress(
        self, job: Job, cancel: threading.Event, *, time_steps: bool = True
    ) -> Callable[[ProgressLike], None]:
        last = 0.0
        previous: tuple[int, float] | None = None  # (step, when) of the last event, for the step-time histogram

        def on_step(event: ProgressLike) -> None:
            nonlocal last, previous
            now = time.monotonic()
            if time_steps and self.metrics is not None:
                if previous is not None and event.step == previous[0] + 1:
                    self.metrics.step_seconds.observe(now - previous[1])
                previous = (event.step, now)
            picture = event.preview
            # Throttled: a write per step would dominate fast steps; the last step is always written, and so is a
            # step with a preview (followers read previews when the progress moves).
            if (
                picture is not None
                or event.step == 1
                or event.step >= event.total
                or now - last >= self.settings.progress_interval
            ):
                if not self.store.set_progress(job.id, self.id, event.step, event.total):
                    # Taken away (our lease ran out while we were slow; the job runs elsewhere): stop, record nothing.
                    logger.warning("job taken away from this worker; stopping it", extra=self._log(job))
                    cancel.set()
                last = now
            if picture is not None:
                self.store.set_preview(job.id, self.id, encode_preview(picture, event.step, event.total))
            # Read every step, so a cancel takes effect within one step (the engine checks the event after this).
            if self.store.cancel_requested(job.id):
                cancel.set()

        return on_step

    def _save(self, job: Job, result: GenerationResult | UpscaleResult) -> dict[str, Any]:
        from imagegen.metadata import write_image

        folder = self.settings.images_dir
        folder.mkdir(parents=True, exist_ok=True)
        names: list[str] = []
        # A retry writes names of its own: an earlier attempt still running somewhere (presumed dead, only slow)
        # must not overwrite, or clean up, the images of the attempt that is recorded.
        attempt = "" if job.attempts <= 1 else f".a{job.attempts}"
        try:
            for i, (image, infotext) in enumerate(zip(result.images, result.infotexts, strict=True)):
                name = f"{job.id}-{i}{attempt}.png"
                partial = folder / f".{name}.partial"
                write_image(image, infotext, partial)
                os.replace(partial, folder / name)  # atomic: the API never serves half a file
                names.append(name)
        except BaseException:
            # A failed job keeps no images, and on a full disk every byte given back helps record the failure.
            for name in [*names, f".{job.id}-{len(names)}{attempt}.png.partial"]:
                (folder / name).unlink(missing_ok=True)
            raise
        return {
            "model": result.model,
            "images": names,
            "seeds": list(result.seeds),
            "infotexts": list(result.infotexts),
            "warnings": list(result.warnings),
            "timings": {k: round(float(v), 4) for k, v in result.timings.items()},
        }


class Heartbeat:
    """A worker's sign of life in the store every ``settings.worker_lease / 5`` seconds, from its own thread (a long
    denoising step must not let the lease run out): where servers share a store, a worker that stops beating has its
    jobs re-queued by another server (:class:`~imagegen.server.jobs.leases.LeaseReaper`)."""

    def __init__(self, store: JobStore, worker_id: str, settings: ServerSettings) -> None:
        self._store = store
        self._id = worker_id
        self._interval = settings.worker_lease / 5
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._store.heartbeat(self._id)
            except Exception:  # a locked or unreachable store: the next beat tries again
                logger.warning("heartbeat failed", extra={"worker": self._id}, exc_info=True)


def create_worker(settings: ServerSettings, worker_id: str, store: JobStore) -> Worker:
    """A worker's start-up, the same in a worker process and a Ray engine replica: register as ``starting``, start
    the heartbeat, create the engine (and the Prometheus metrics where the environment asks for them).

    Raises ``ImportError`` or :class:`ImagegenError` when the engine cannot be created, after recording why in the
    worker's row (a bad device or factory will not fix itself)."""
    store.set_worker(worker_id, pid=os.getpid(), state="starting")
    heartbeat = Heartbeat(store, worker_id, settings)
    heartbeat.start()
    try:
        engine = load_factory(settings.engine_factory)(settings)
    except (ImportError, ImagegenError) as exc:
        store.set_worker(worker_id, pid=os.getpid(), state="error", detail=f"cannot create the engine: {exc}")
        logger.error("cannot create the engine: %s", exc, extra={"worker": worker_id})
        heartbeat.stop()
        raise
    metrics = None
    if os.environ.get(MULTIPROC_ENV):
        from imagegen.server.metrics import WorkerMetrics

        metrics = WorkerMetrics()
    worker = Worker(settings, worker_id, store, engine, metrics=metrics)
    worker.heartbeat = heartbeat
    return worker


def encode_preview(picture: Image, step: int, total: int) -> Preview:
    """A live preview as stored and served: JPEG."""
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
    return Preview(step=step, total_steps=total, media_type="image/jpeg", image=buffer.getvalue())


def _crash(exc: BaseException, data_dir: Path) -> dict[str, Any]:
    """The recorded failure of an exception nobody foresaw: its type and message, as ``internal_error`` (or as
    ``disk_full`` when the data directory ran out of space: the operator's to fix, not a bug)."""
    message = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:1000]
    if is_disk_full(exc):
        return {
            "error_code": DiskFull.code,
            "error_message": f"no space left in the data directory {data_dir}: the job's progress or images could "
            f"not be written ({message}); submit it again once space is freed",
        }
    return {"error_code": "internal_error", "error_message": message}


def _control(worker: Worker) -> None:
    for line in sys.stdin:
        command = line.strip()
        if command == "wake":
            worker.wake.set()
        elif command == "drain":
            worker.stop()
    # The API process closed the pipe or died (kill -9 included): stop now. The store is crash-safe, and a job left
    # "running" is recovered by the next supervisor.
    logging.shutdown()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    from imagegen.server.logs import configure_logging

    args = sys.argv[1:] if argv is None else argv
    worker_id = args[0] if args else f"w{os.getpid()}"
    settings = ServerSettings.from_worker_json(sys.stdin.readline())
    configure_logging()
    store = open_store(settings)
    try:
        worker = create_worker(settings, worker_id, store)
    except (ImportError, ImagegenError):
        return 1  # recorded and logged; the supervisor restarts us with a growing back-off
    # Ctrl-C in a terminal reaches the whole process group, and service managers often send SIGTERM to every process
    # of the service: the API process decides when workers stop, so SIGINT is ignored and SIGTERM means "drain".
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.stop())
    threading.Thread(target=_control, args=(worker,), name="control", daemon=True).start()
    worker.load_default_model()
    worker.serve()
    store.set_worker(worker_id, pid=os.getpid(), state="stopped")
    logger.info("worker drained", extra={"worker": worker_id})
    return 0


if __name__ == "__main__":
    sys.exit(main())
