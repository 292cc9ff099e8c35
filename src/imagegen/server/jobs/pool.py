"""What runs the jobs, as the API process sees it: a pool of workers it can wake, drain and ask about.

Two kinds: :class:`~imagegen.server.jobs.supervisor.WorkerSupervisor` (worker processes on this machine, the default)
and :class:`~imagegen.server.rayserve.pool.RayWorkerPool` (engine replicas that Ray Serve places and scales). Both take
jobs from the same store; only who starts the workers and how they are told about new jobs differ.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from imagegen.server.jobs.store import JobStore
from imagegen.server.settings import ServerSettings

__all__ = ["PoolFactory", "Readiness", "WorkerPool", "WorkerState", "wait_until"]

Readiness = Literal["ready", "draining", "not_running", "model_not_loadable", "worker_starting", "no_worker"]


@dataclass(frozen=True, kw_only=True)
class WorkerState:
    """One worker as ``/readyz`` reports it."""

    index: int
    alive: bool
    #: starting | ready | error | stopped (from the store), or down when no process runs.
    state: str


class WorkerPool(Protocol):
    #: Workers that died and were replaced, since start.
    restarts: int

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None:
        """Stop now: a running job goes back to the queue without counting as an attempt."""

    def drain(self) -> None:
        """Finish the running jobs, take no more."""

    def wake(self) -> None:
        """A job was queued."""

    def drained(self) -> bool: ...

    def wait_drained(self, timeout: float) -> bool: ...

    def readiness(self) -> Readiness: ...

    def workers(self) -> list[WorkerState]: ...


#: Builds a pool: (settings, store, the model workers load at start, the server's draining flag) -> pool.
PoolFactory = Callable[[ServerSettings, JobStore, Callable[[], "str | None"], threading.Event], WorkerPool]


def wait_until(done: Callable[[], bool], timeout: float) -> bool:
    """Poll ``done`` every 0.1 s for up to ``timeout`` seconds: whether it came true (a pool's ``wait_drained``)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
