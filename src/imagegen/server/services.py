"""What the app's routes use, started and stopped with the app: one owner per concern, composed here.

- :class:`~imagegen.server.catalog.ModelCatalog`: the served models;
- :class:`~imagegen.server.jobs.queue.JobQueue`: submit, read, cancel, follow jobs;
- a :class:`~imagegen.server.jobs.pool.WorkerPool`: what runs the jobs (worker processes of a
  :class:`~imagegen.server.jobs.supervisor.WorkerSupervisor` by default, Ray Serve replicas with ``serve --ray``);
- :class:`~imagegen.server.jobs.leases.LeaseReaper`: where servers share the store, re-queues the jobs of dead workers;
- :class:`~imagegen.server.jobs.retention.Retention`: deletes expired results;
- :class:`~imagegen.server.jobs.urls.URLSigner`: signs image URLs;
- :class:`~imagegen.server.upscalers.UpscalerCatalog`: the upscalers the workers offer.

:class:`Services` owns their life cycle (the data directory's lock, the store, start, drain, stop) and nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import IO, TypeVar

from imagegen.errors import ImagegenError
from imagegen.server.catalog import ModelCatalog
from imagegen.server.errors import ServiceUnavailable
from imagegen.server.jobs.leases import LeaseReaper
from imagegen.server.jobs.pool import PoolFactory, Readiness, WorkerPool, WorkerState
from imagegen.server.jobs.queue import JobQueue
from imagegen.server.jobs.retention import Retention
from imagegen.server.jobs.store import JobStore, open_store
from imagegen.server.jobs.supervisor import WorkerSupervisor
from imagegen.server.jobs.urls import URLSigner, load_or_create_key
from imagegen.server.metrics import reset_metrics_dir
from imagegen.server.settings import ServerSettings
from imagegen.server.upscalers import UpscalerCatalog

logger = logging.getLogger("imagegen.server")

__all__ = ["DataDirInUse", "Services"]


class DataDirInUse(ImagegenError):
    code = "data_dir_in_use"


class Services:
    """The running parts of a server. ``clock`` gives unix seconds for URL expiry and retention (tests move it).

    ``pool`` builds what runs the jobs (default: a :class:`WorkerSupervisor` of local worker processes). ``shared``
    says other servers use the same store (Ray Serve ingress replicas; a PostgreSQL store is always shared): then the
    data directory is not locked, jobs left running are not all taken back at start, and dead workers are found by
    lease (:class:`LeaseReaper`) instead."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        clock: Callable[[], float] = time.time,
        pool: PoolFactory | None = None,
        shared: bool = False,
    ) -> None:
        self.settings = settings
        self.shared = shared or settings.store_is_shared
        self._pool_factory: PoolFactory = pool or WorkerSupervisor
        self.catalog = ModelCatalog(settings)
        self.upscalers = UpscalerCatalog(settings.engine)
        self._clock = clock
        self._draining = threading.Event()
        self._store: JobStore | None = None
        self._queue: JobQueue | None = None
        self._supervisor: WorkerPool | None = None
        self._reaper: LeaseReaper | None = None
        self._retention: Retention | None = None
        self._urls: URLSigner | None = None
        self._lock_file: IO[bytes] | None = None

    # The parts (ServiceUnavailable before start and after stop: a request then gets a 503, not a closed database).

    @property
    def queue(self) -> JobQueue:
        return _running(self._queue)

    @property
    def supervisor(self) -> WorkerPool:
        return _running(self._supervisor)

    @property
    def retention(self) -> Retention:
        return _running(self._retention)

    @property
    def urls(self) -> URLSigner:
        return _running(self._urls)

    @property
    def store(self) -> JobStore:
        return _running(self._store)

    # Life cycle ------------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store, recover jobs a dead server left running, build the model catalog, start the workers."""
        settings = self.settings
        for folder in (settings.data_dir, settings.images_dir, settings.inputs_dir, settings.metrics_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.claim_data_dir()
        for warning in self.settings.warnings():
            logger.warning(warning)
        try:
            key = load_or_create_key(self.settings.url_key_path)
            self._urls = URLSigner(key, ttl=self.settings.url_ttl, clock=self._clock)
            store = self._store = open_store(self.settings)
            if self.shared:
                # Other servers' workers may be running jobs now: only those whose lease ran out are taken back.
                self._reaper = LeaseReaper(self.settings, store, clock=self._clock)
                self._reaper.sweep()
            else:
                requeued, ended = store.release(retries=self.settings.job_retries)
                if requeued or ended:
                    logger.warning(
                        "recovered jobs left running by a previous server",
                        extra={"requeued": [j.id for j in requeued], "ended": [j.id for j in ended]},
                    )
            if not self.catalog.models():  # `imagegen serve` builds it before binding, to report a bad --model cleanly
                self.catalog.refresh()
            supervisor = self._supervisor = self._pool_factory(
                self.settings, store, lambda: self.catalog.default_ref, self._draining
            )
            self._queue = JobQueue(
                self.settings,
                store,
                self.catalog,
                wake=supervisor.wake,
                draining=self._draining,
                drained=supervisor.drained,
            )
            self._retention = Retention(self.settings, store, clock=self._clock)
            if not self.shared:  # shared: other servers' live workers write there too
                reset_metrics_dir(self.settings.metrics_dir)
            supervisor.start()
            self._retention.start()
            if self._reaper is not None:
                self._reaper.start()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers now. A job they were running goes back to the queue without counting as an attempt."""
        if self._retention is not None:
            self._retention.stop(timeout)
        if self._reaper is not None:
            self._reaper.stop(timeout)
        if self._supervisor is not None:
            self._supervisor.stop(timeout)
        store, self._store = self._store, None
        self._queue = self._supervisor = self._retention = self._reaper = None
        if store is not None:
            store.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def begin_drain(self) -> None:
        """SIGTERM: refuse new work (503), report not ready, let running jobs finish; workers then exit."""
        self._draining.set()
        if self._supervisor is not None:
            self._supervisor.drain()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def wait_drained(self, timeout: float) -> bool:
        return self._supervisor.wait_drained(timeout) if self._supervisor is not None else True

    def readiness(self) -> Readiness:
        """``ready`` when a worker is up with the default model loaded and the server is not draining."""
        if self._draining.is_set():
            return "draining"
        if self._supervisor is None:
            return "not_running"
        return self._supervisor.readiness()

    def workers(self) -> list[WorkerState]:
        """Each worker slot's state (none before start and after stop)."""
        return self._supervisor.workers() if self._supervisor is not None else []

    def claim_data_dir(self) -> None:
        """Lock the data directory for this process: a second server would "recover" the first one's running jobs.

        Raises :class:`DataDirInUse`. The lock dies with the process, ``kill -9`` included. Servers of a shared store
        share the data directory by design (and recover jobs by lease): they take the lock shared, so they exclude
        only a server that owns the directory alone, and it them."""
        if self._lock_file is not None:
            return
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks, run one server per data dir
            return
        handle = (self.settings.data_dir / "server.lock").open("wb")
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            other = "alone" if self.shared else "with others sharing a job store"
            raise DataDirInUse(f"another imagegen server is using {self.settings.data_dir} ({other})") from None
        self._lock_file = handle


_Part = TypeVar("_Part")


def _running(part: _Part | None) -> _Part:
    if part is None:
        raise ServiceUnavailable("the job service is not running")
    return part
