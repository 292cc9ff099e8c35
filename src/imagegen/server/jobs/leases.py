"""Recovery by lease where several servers share one job store (PostgreSQL, Ray Serve replicas).

On one machine the supervisor sees its worker die and re-queues the job it held. Where workers run elsewhere (another
API node, a Ray replica on another host) nobody sees the process die: each worker renews a lease by beating
(:class:`~imagegen.server.jobs.worker.Heartbeat`), and the :class:`LeaseReaper` of every server re-queues the jobs of
workers whose lease ran out (or fails them as ``worker_lost`` once their retries are spent). Two reapers releasing the
same worker is harmless: the release is one transaction and the second finds nothing left to release.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from imagegen.server.jobs.store import JobStore
from imagegen.server.settings import ServerSettings

logger = logging.getLogger("imagegen.server")

__all__ = ["LeaseReaper"]


class LeaseReaper:
    """Releases the jobs of workers whose heartbeat is older than ``settings.worker_lease``, every half lease."""

    def __init__(self, settings: ServerSettings, store: JobStore, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Workers presumed dead (their lease ran out while they held jobs), since start.
        self.expired = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="imagegen-lease-reaper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def sweep(self) -> list[str]:
        """One pass: the ids of the workers whose jobs were released."""
        released = []
        cutoff = self._clock() - self.settings.worker_lease
        for worker in self.store.stale_workers(before=cutoff):
            # Checked again in the release's transaction: a heartbeat since the look above keeps the jobs.
            requeued, ended = self.store.release(retries=self.settings.job_retries, worker=worker, silent_since=cutoff)
            if not requeued and not ended:
                continue
            self.expired += 1
            released.append(worker)
            logger.error(
                "worker lease expired; its jobs were released",
                extra={"worker": worker, "requeued": [j.id for j in requeued], "ended": [j.id for j in ended]},
            )
        return released

    def _run(self) -> None:
        while not self._stop.wait(self.settings.worker_lease / 2):
            try:
                self.sweep()
            except Exception:  # the reaper must outlive a locked or unreachable store
                logger.exception("lease sweep failed")
