"""The worker processes: started with the server, restarted when they die, drained on SIGTERM.

Each worker (``python -m imagegen.server.jobs.worker ID``) gets its settings on stdin and keeps the pipe as a control
channel (``wake``, ``drain``; end of file means the API process is gone). A supervisor thread watches them: a worker
that dies is restarted, and the job it held is re-queued (at most ``job_retries`` times) or failed as
``worker_lost``; a job that runs past ``job_timeout`` has its worker killed and fails as ``timeout``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from imagegen.server.jobs.pool import Readiness, WorkerState, wait_until
from imagegen.server.jobs.store import JobStore
from imagegen.server.metrics import MULTIPROC_ENV
from imagegen.server.settings import ServerSettings

logger = logging.getLogger("imagegen.server")

__all__ = ["WorkerSupervisor", "worker_environment"]

#: Words that mark an ``IMAGEGEN_*`` environment variable as a secret (``IMAGEGEN_API_KEYS``): never passed to workers.
_SECRET_ENV_WORDS = frozenset({"KEY", "KEYS", "SECRET", "SECRETS", "TOKEN", "TOKENS", "PASSWORD", "PASSWORDS", "AUTH"})
#: A worker that dies sooner than this after starting counts as crash-looping: restarts back off.
_CRASH_LOOP_SECONDS = 10.0


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


class WorkerSupervisor:
    """Starts ``settings.workers`` worker processes and keeps them running. ``default_model`` gives the model each
    worker loads at start (the catalog's default); ``draining`` is the server's shutdown flag."""

    def __init__(
        self,
        settings: ServerSettings,
        store: JobStore,
        default_model: Callable[[], str | None],
        draining: threading.Event,
    ) -> None:
        self.settings = settings
        self.store = store
        self._default_model = default_model
        self._draining = draining
        self._stopping = threading.Event()
        self._slots: list[_Slot] = []
        self._thread: threading.Thread | None = None
        #: Worker processes that died (or were killed for a timeout) and were replaced, since start.
        self.restarts = 0

    # Life cycle ------------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._slots = [_Slot(index=i) for i in range(self.settings.workers)]
        for slot in self._slots:
            self._spawn(slot)
        self._thread = threading.Thread(target=self._supervise, name="imagegen-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers now. A job they were running goes back to the queue without counting as an attempt."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for slot in self._slots:
            self._stop_worker(slot, timeout)

    def drain(self) -> None:
        """Tell every worker to finish its running job and exit."""
        self._send_all("drain")

    def wake(self) -> None:
        """Tell idle workers a job was queued (a lost wake-up only costs a worker's idle poll)."""
        self._send_all("wake")

    def drained(self) -> bool:
        return all(slot.process is None or slot.process.poll() is not None for slot in self._slots)

    def wait_drained(self, timeout: float) -> bool:
        return wait_until(self.drained, timeout)

    # Health ----------------------------------------------------------------------------------------------------------

    def readiness(self) -> Readiness:
        """``ready`` when a worker is up with the default model loaded, else why not."""
        if self._draining.is_set():
            return "draining"
        if self._stopping.is_set():
            return "not_running"
        states = []
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is None:
                worker = self.store.worker(slot.id)
                states.append(worker.state if worker else "starting")
        if "ready" in states:
            return "ready"
        if "error" in states:
            return "model_not_loadable"
        return "worker_starting" if states else "no_worker"

    def workers(self) -> list[WorkerState]:
        """State of each worker slot."""
        rows = []
        for slot in self._slots:
            alive = slot.process is not None and slot.process.poll() is None
            state = self.store.worker(slot.id) if slot.id else None
            rows.append(WorkerState(index=slot.index, alive=alive, state=state.state if state and alive else "down"))
        return rows

    # Workers ---------------------------------------------------------------------------------------------------------

    def _worker_settings(self, slot: _Slot) -> ServerSettings:
        engine = self.settings.engine
        if self.settings.workers > 1 and engine.device == "cuda":
            engine = dataclasses.replace(engine, device=f"cuda:{slot.index}")  # one worker per GPU
        return dataclasses.replace(self.settings, default_model=self._default_model(), engine=engine)

    def _spawn(self, slot: _Slot) -> None:
        slot.id = f"{slot.index}-{uuid.uuid4().hex[:8]}"
        # stdin carries the settings and stays open: its end of file tells the worker that this process is gone.
        process = subprocess.Popen(
            [sys.executable, "-m", "imagegen.server.jobs.worker", slot.id],
            stdin=subprocess.PIPE,
            env={
                **worker_environment(os.environ),
                "PYTHONUNBUFFERED": "1",
                # The worker's Prometheus metrics go to files the API process reads (imagegen.server.metrics).
                MULTIPROC_ENV: str(self.settings.metrics_dir),
            },
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
        fail_as = None
        if slot.timed_out:
            message = f"the job ran longer than {self.settings.job_timeout:g} s (--job-timeout); its worker was stopped"
            fail_as = ("timeout", message)
        # Release first: if the store cannot be written (a full disk), the dead process stays on record and the next
        # check tries again, rather than a new worker starting while the dead one's jobs stay "running" for good.
        requeued, ended = self.store.release(retries=self.settings.job_retries, worker=slot.id, fail_as=fail_as)
        with slot.lock:
            slot.process = None
        try:
            self.store.set_worker(slot.id, pid=0, state="stopped", detail=f"exit code {code}")
        except Exception:  # only the record of a worker that is gone; its jobs were released above
            logger.warning("cannot record a stopped worker", extra={"worker": slot.id}, exc_info=True)
        if self._draining.is_set() and code == 0 and not requeued and not ended:
            return  # drained as asked
        self.restarts += 1
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
        self.store.release(retries=self.settings.job_retries, worker=slot.id, penalize=False)
        self.store.set_worker(slot.id, pid=0, state="stopped")


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without imagegen's secrets (``IMAGEGEN_API_KEYS`` and any ``IMAGEGEN_*`` key/token/password).

    A worker never checks credentials (:meth:`ServerSettings.worker_json` leaves them out too), and a worker runs the
    most third-party code (model loading, pipelines), so it should hold no secret that could leak from there."""
    return {name: value for name, value in environ.items() if not _is_secret_env(name)}


def _is_secret_env(name: str) -> bool:
    upper = name.upper()
    return upper.startswith("IMAGEGEN_") and not _SECRET_ENV_WORDS.isdisjoint(upper.split("_"))
