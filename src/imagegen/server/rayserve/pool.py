"""The ingress's side of the engine replicas: one Ray Serve request per job waiting to run.

A job is never handed to a replica: it waits in the store, and each request (``run_queued``) makes the replica that
receives it claim and run the next job (or the next batch). So Ray's queue of requests is as long as the job queue,
its autoscaler scales the engine replicas on queued work, and a replica that dies loses no job: the store still has
it, re-queued by lease expiry (:class:`~imagegen.server.jobs.leases.LeaseReaper`) and asked for again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from imagegen.server.jobs.model import JobStatus
from imagegen.server.jobs.pool import Readiness, WorkerState, wait_until
from imagegen.server.jobs.store import JobStore
from imagegen.server.settings import ServerSettings

logger = logging.getLogger("imagegen.server")

__all__ = ["EngineHandle", "RayWorkerPool"]


class _Response(Protocol):
    def result(self, *, timeout_s: float | None = None) -> Any: ...


class _Method(Protocol):
    def remote(self) -> _Response: ...


class EngineHandle(Protocol):
    """The part of a Ray Serve ``DeploymentHandle`` to the engine deployment that the pool uses."""

    @property
    def run_queued(self) -> _Method: ...


class RayWorkerPool:
    """Keeps one ``run_queued`` request in flight per job queued or running (at most ``max_in_flight``)."""

    def __init__(
        self,
        settings: ServerSettings,
        store: JobStore,
        default_model: Callable[[], str | None],
        draining: threading.Event,
        *,
        engine: EngineHandle,
        max_in_flight: int,
        share: int = 1,
    ) -> None:
        self.settings = settings
        self.store = store
        self._engine = engine
        self._draining = draining
        self._max_in_flight = max_in_flight
        #: Ingress replicas, each running a pool over the same store: each asks for its share of the work.
        self._share = max(1, share)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._in_flight: set[Future[list[str]]] = set()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        #: Requests that failed: mostly lost with their replica (Ray restarts it; the job is re-queued by lease).
        self.restarts = 0

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self._max_in_flight, thread_name_prefix="imagegen-ray-request")
        self._thread = threading.Thread(target=self._dispatch, name="imagegen-ray-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop asking for replicas. Jobs running on replicas run on (they are the replicas' until they end)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def drain(self) -> None:
        self._wake.set()  # the dispatcher sees the draining flag and asks for nothing more

    def wake(self) -> None:
        self._wake.set()

    def drained(self) -> bool:
        with self._lock:
            return all(future.done() for future in self._in_flight)

    def wait_drained(self, timeout: float) -> bool:
        return wait_until(self.drained, timeout)

    def readiness(self) -> Readiness:
        if self._draining.is_set():
            return "draining"
        if self._stopping.is_set():
            return "not_running"
        states = {worker.state for worker in self._live()}
        if "ready" in states:
            return "ready"
        if "error" in states:
            return "model_not_loadable"
        return "worker_starting"  # Ray is (re)starting the engine replicas

    def workers(self) -> list[WorkerState]:
        return [WorkerState(index=i, alive=True, state=w.state) for i, w in enumerate(self._live())]

    def _live(self) -> list[Any]:
        return self.store.live_workers(since=time.time() - self.settings.worker_lease)

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(max(self.settings.poll_interval * 5, 0.2))
            self._wake.clear()
            if self._draining.is_set() or self._stopping.is_set():
                continue
            try:
                # A request per waiting job, and one per busy worker (a batch of N jobs holds one request, not N).
                busy = len({job.worker for job in self.store.running()})
                wanted = -(-(self.store.count(JobStatus.QUEUED) + busy) // self._share)
            except Exception:  # a locked or unreachable store: ask again on the next round
                logger.exception("cannot count queued jobs")
                continue
            with self._lock:
                self._in_flight = {future for future in self._in_flight if not future.done()}
                missing = min(self._max_in_flight, wanted) - len(self._in_flight)
                for _ in range(max(0, missing)):
                    assert self._executor is not None
                    future = self._executor.submit(self._request)
                    # A request that ran something frees a place at once; one that found nothing to claim (another
                    # replica was faster) waits for the next round rather than asking again in a tight loop.
                    future.add_done_callback(self._done)
                    self._in_flight.add(future)

    def _done(self, future: Future[list[str]]) -> None:
        if not future.cancelled() and future.result():
            self._wake.set()

    def _request(self) -> list[str]:
        try:
            ran: list[str] = self._engine.run_queued.remote().result()
        except Exception as exc:  # the replica died (RayActorError) or Serve refused: the job waits in the store
            with self._lock:
                self.restarts += 1
            logger.warning("engine request failed: %s: %s", type(exc).__name__, exc)
            time.sleep(self.settings.poll_interval)
            return []
        return ran
