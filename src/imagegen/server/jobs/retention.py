"""Result retention: finished jobs, their images, init images and Idempotency-Keys are deleted ``keep_results_hours``
after they end. Queued and running jobs are never touched.

Safe against a crash at any point: rows go first (each batch in one transaction), then the files of those rows, so a
job that still has a row never misses a file; files left behind by an interrupted sweep have no row and are removed
by the next one (after :data:`STRAY_FILE_GRACE_SECONDS`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagegen.server.jobs.model import Job
from imagegen.server.jobs.queue import job_files
from imagegen.server.jobs.store import JobStore
from imagegen.server.settings import ServerSettings

logger = logging.getLogger("imagegen.server")

__all__ = ["STRAY_FILE_GRACE_SECONDS", "Retention", "RetentionReport"]

#: Files the service writes, by folder: result images (and a worker's ``.partial`` of one), init images.
_RESULT_FILE = re.compile(r"\.?(?P<job>[0-9a-f]{32})-[0-9]{1,4}\.png(?:\.partial)?")
_INPUT_FILE = re.compile(r"(?P<job>[0-9a-f]{32})(?:-mask)?\.png")
#: A file without a job row is only removed once it is this old: an init image is saved just before its job's row is
#: inserted, and a worker may still be writing a result.
STRAY_FILE_GRACE_SECONDS = 3600.0
#: Jobs deleted per transaction: workers wait for the write lock while it runs.
_RETENTION_BATCH = 500


@dataclass(frozen=True, kw_only=True)
class RetentionReport:
    """What one clean-up sweep removed."""

    #: Ids of the deleted jobs.
    jobs: tuple[str, ...] = ()
    #: Files of those jobs (result images, init images).
    files: int = 0
    #: Files whose job had no row any more (a sweep interrupted between its rows and its files, a lost insert).
    stray_files: int = 0


class Retention:
    """Sweeps expired results: once at start, then every ``cleanup_interval`` seconds. ``clock`` gives unix seconds
    (tests move it instead of sleeping)."""

    def __init__(self, settings: ServerSettings, store: JobStore, *, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.settings.keep_results_hours > 0:
            self._thread = threading.Thread(target=self._run, name="imagegen-retention", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)  # before the store closes under a sweep

    def remove_expired(self) -> RetentionReport:
        """Delete the jobs that ended more than ``keep_results_hours`` ago, their files and their Idempotency-Keys."""
        hours = self.settings.keep_results_hours
        if hours <= 0:
            return RetentionReport()
        with self._lock:
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
        return sum(_unlink(path) for path in job_files(self.settings, job))

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

    def _run(self) -> None:
        while True:
            try:
                self.remove_expired()
            except Exception:  # a locked database or a full disk must not end retention for good
                logger.exception("removing expired results failed")
            if self._stopping.wait(self.settings.cleanup_interval):
                return


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
