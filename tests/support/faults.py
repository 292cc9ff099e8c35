"""Fault injection for the reliability suite (``bench/faults.py``, ``tests/server/test_faults.py``): find the worker
running a job at a given denoising step and ``kill -9`` it, time how long the service takes to generate again, put a
data directory on a small tmpfs and fill it, check the database's integrity.

The job store is read directly (read-only), as an operator would: the API does not say which process runs a job.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Seconds between reads of the store while waiting.
POLL = 0.02


@dataclass(frozen=True, kw_only=True)
class RunningJob:
    id: str
    step: int
    total_steps: int
    attempts: int
    worker: str
    #: The worker's process id (0 when the worker row is missing or stopped).
    pid: int


@dataclass(frozen=True, kw_only=True)
class WorkerKill:
    """A ``kill -9`` of the worker running ``jobs`` (one job or a batch), observed at ``step`` of ``total_steps``."""

    pid: int
    worker: str
    jobs: tuple[RunningJob, ...]
    step: int
    total_steps: int
    #: Unix time of the kill.
    at: float


@contextlib.contextmanager
def _reader(database: Path) -> Iterator[sqlite3.Connection]:
    # Read-only: the probe must never checkpoint or delete the WAL of a database it does not own.
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        yield connection
    finally:
        connection.close()


def running_jobs(database: Path) -> list[RunningJob]:
    """The running jobs with their worker's pid, from the store (an empty list while it cannot be read)."""
    try:
        with _reader(database) as db:
            rows = db.execute(
                "SELECT j.id, j.step, j.total_steps, j.attempts, j.worker, coalesce(w.pid, 0) FROM jobs j"
                " LEFT JOIN workers w ON w.id = j.worker WHERE j.status = 'running' ORDER BY j.seq"
            ).fetchall()
    except sqlite3.OperationalError:  # not created yet, or a restarting server recovering its WAL
        return []
    return [
        RunningJob(id=row[0], step=row[1], total_steps=row[2], attempts=row[3], worker=row[4], pid=row[5])
        for row in rows
    ]


def wait_mid_run(database: Path, *, min_step: int, timeout: float, first_attempt: bool = False) -> list[RunningJob]:
    """The running jobs of one worker once one of them has recorded a step >= ``min_step`` short of its last step.

    ``first_attempt`` waits for a worker whose jobs all run for the first time (a kill then re-queues each of them
    rather than failing one as ``worker_lost``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        by_worker: dict[str, list[RunningJob]] = {}
        for job in running_jobs(database):
            by_worker.setdefault(job.worker, []).append(job)
        for jobs in by_worker.values():
            if first_attempt and any(job.attempts != 1 for job in jobs):
                continue
            if jobs[0].pid and any(min_step <= job.step < job.total_steps for job in jobs):
                return jobs
        time.sleep(POLL)
    raise TimeoutError(f"no job reached step {min_step} within {timeout:g} s")


def kill_worker_mid_job(database: Path, *, min_step: int, timeout: float, first_attempt: bool = False) -> WorkerKill:
    """``kill -9`` the worker of a job at step >= ``min_step`` (see :func:`wait_mid_run`)."""
    jobs = wait_mid_run(database, min_step=min_step, timeout=timeout, first_attempt=first_attempt)
    leader = max(jobs, key=lambda job: job.step)
    at = time.time()
    os.kill(leader.pid, signal.SIGKILL)
    return WorkerKill(
        pid=leader.pid, worker=leader.worker, jobs=tuple(jobs), step=leader.step, total_steps=leader.total_steps, at=at
    )


def wait_resumed(database: Path, since: float, *, timeout: float, succeeded: bool = False) -> float:
    """Seconds from ``since`` (unix time) until a job started after it has made a denoising step (with
    ``succeeded``: has succeeded): the service generates again."""
    condition = "status = 'succeeded'" if succeeded else "(step >= 1 OR status = 'succeeded')"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with _reader(database) as db:
                query = f"SELECT 1 FROM jobs WHERE started_at > ? AND {condition} LIMIT 1"
                row = db.execute(query, (since,)).fetchone()
        except sqlite3.OperationalError:
            row = None
        if row is not None:
            return round(time.time() - since, 2)
        time.sleep(POLL)
    raise TimeoutError(f"no job started and {'succeeded' if succeeded else 'progressed'} within {timeout:g} s")


def integrity_check(database: Path) -> str:
    """``PRAGMA integrity_check``: ``ok`` for a sound database, else SQLite's list of problems."""
    with _reader(database) as db:
        return "; ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check").fetchall())


def tmpfs_unavailable() -> str | None:
    """Why a tmpfs cannot be mounted here (None when it can): mounting needs root and the mount command."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "no mount/umount command"
    return None


@contextlib.contextmanager
def tmpfs(folder: Path, *, size_mib: int) -> Iterator[Path]:
    """``folder`` as a tmpfs of ``size_mib`` MiB, unmounted (lazily if busy) on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(folder)],
        check=True,
        capture_output=True,
    )
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill_disk(folder: Path, name: str = "filler") -> Path:
    """A file in ``folder`` that takes every free byte of its file system; delete it to give the space back."""
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return path


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize
