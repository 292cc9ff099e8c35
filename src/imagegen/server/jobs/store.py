"""The durable job store: the jobs' tables in a database shared by the API and the workers.

One SQLite file (WAL mode) in the data directory by default; a PostgreSQL database (``--store postgresql://...``,
:mod:`imagegen.server.jobs.store_postgres`) where several servers share one queue. Both run the same SQL, written
once here; a :class:`Database` only supplies connections, transactions and the few words of the schema that differ.

Every state change is one short transaction, so a process killed at any moment leaves each job in a state it was
really in. A job is claimed by exactly one worker (write transactions are serialised: ``BEGIN IMMEDIATE`` across
SQLite's processes, an advisory lock across PostgreSQL's clients), and a worker only writes to a job it still holds
(``WHERE worker = ? AND status = 'running'``): a worker presumed dead whose job was re-queued cannot overwrite the
new attempt.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from string import Template
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from imagegen.errors import ImagegenError
from imagegen.server.jobs.model import Job, JobStatus, Preview

if TYPE_CHECKING:
    from imagegen.server.settings import ServerSettings

# The words that differ between the dialects are $-placeholders: $seq (an auto-incrementing key), $real (a float),
# $blob (bytes). Everything else is plain SQL both understand.
_SCHEMA = Template("""
CREATE TABLE IF NOT EXISTS jobs (
    seq $seq,   -- submission order: the queue is FIFO on it
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    dialect TEXT NOT NULL,
    model TEXT,
    request TEXT NOT NULL,
    batch_key TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT UNIQUE,
    body_digest TEXT,
    created_at $real NOT NULL,
    started_at $real,
    finished_at $real,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    error_message TEXT,
    images TEXT NOT NULL DEFAULT '[]',
    seeds TEXT NOT NULL DEFAULT '[]',
    infotexts TEXT NOT NULL DEFAULT '[]',
    warnings TEXT NOT NULL DEFAULT '[]',
    timings TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    state TEXT NOT NULL,          -- starting | ready | error | stopped
    detail TEXT NOT NULL DEFAULT '',
    updated_at $real NOT NULL
);
-- The latest live preview of each running job that asked for previews (deleted when the job ends or is re-queued).
-- Added without a version bump: CREATE TABLE IF NOT EXISTS gives an older database the table as it opens.
CREATE TABLE IF NOT EXISTS previews (
    job_id TEXT PRIMARY KEY,
    step INTEGER NOT NULL,
    total_steps INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    image $blob NOT NULL
);
""")


def schema(*, seq: str, real: str, blob: str) -> str:
    """The tables in one dialect: ``seq`` an auto-incrementing integer primary key, ``real`` a float, ``blob`` bytes."""
    return _SCHEMA.substitute(seq=seq, real=real, blob=blob)


#: Page cache of each SQLite read connection, KiB (SQLite's default is 2000).
READER_CACHE_KIB = 256

#: A worker's ``detail`` once its lease ran out and its jobs were released (:meth:`JobStore.release`).
LEASE_EXPIRED = "lease expired"

#: Bumped when the tables change; a database of another version is refused rather than misread.
SCHEMA_VERSION = 1


class StoreVersionMismatch(ImagegenError):
    code = "store_version_mismatch"


class StoreUnavailable(ImagegenError):
    """The store's database cannot be reached (the message names it, without its password)."""

    code = "store_unavailable"


class Insert(str, Enum):
    """Outcome of :meth:`JobStore.insert`."""

    CREATED = "created"
    EXISTING = "existing"  # same idempotency key, same body: the earlier job
    CONFLICT = "conflict"  # same idempotency key, other body
    FULL = "full"  # the queue is at its bound


@dataclass(frozen=True, kw_only=True)
class WorkerState:
    id: str
    pid: int
    state: str
    detail: str
    updated_at: float


class Row(Protocol):
    """A result row, read by column name (``sqlite3.Row``, psycopg's ``dict_row``)."""

    def __getitem__(self, key: str, /) -> Any: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...


class Transaction(Protocol):
    """What a write transaction offers the SQL: ``?`` placeholders in both dialects."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...


class Database(Protocol):
    """Where a :class:`JobStore` keeps its tables: connections, transactions and the dialect, nothing about jobs.

    Opening one creates the tables and checks the schema version (:class:`StoreVersionMismatch`)."""

    #: The database as a message may name it (a path, or a URL without its password).
    name: str

    def write(self, *, exclusive: bool = True) -> AbstractContextManager[Transaction]:
        """One write transaction, serialised with every other (``exclusive=False``: only with exclusive ones, for
        single-row writes such as progress and heartbeats that cannot conflict with each other)."""
        ...

    def read(self, sql: str, parameters: Sequence[Any] = ()) -> Sequence[Row]:
        """One read statement, never waiting for a write transaction."""
        ...

    def close(self) -> None: ...


def open_store(settings: ServerSettings) -> JobStore:
    """The store ``settings`` name: PostgreSQL for a ``store_url``, else the SQLite database in the data directory."""
    if settings.store_url is None:
        return JobStore(settings.database)
    from imagegen.server.jobs.store_postgres import PostgresDatabase  # psycopg only where it is used

    return JobStore(PostgresDatabase(settings.store_url))


class SQLiteDatabase:
    """``jobs.sqlite3`` in WAL mode: one write connection behind a lock, one read connection per thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.name = str(path)
        self._path = path
        # Reads go through one connection per thread (_reader), so a read never waits for another thread's write
        # transaction: a status read on the event loop must not stall the loop behind a slow write.
        self._readers = threading.local()
        self._reader_connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._readers_lock = threading.Lock()  # not the write lock: a new reader must not wait for a write
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) so that a claim takes the write lock at once.
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes in WAL mode (only an OS crash may lose the last commits).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(schema(seq="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL", blob="BLOB"))
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                self._db.close()
                raise StoreVersionMismatch(
                    f"{path} has job store schema version {version}, this imagegen uses {SCHEMA_VERSION}; "
                    "use another --data-dir, or the imagegen version that made it"
                )

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._readers_lock:
            for _, connection in self._reader_connections:
                connection.close()

    @contextmanager
    def write(self, *, exclusive: bool = True) -> Iterator[Transaction]:
        # SQLite has one writer at a time anyway: every transaction is exclusive.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def read(self, sql: str, parameters: Sequence[Any] = ()) -> Sequence[Row]:
        rows: list[sqlite3.Row] = self._reader().execute(sql, parameters).fetchall()
        return rows

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (in WAL mode a read sees the last commit and takes no write lock)."""
        connection: sqlite3.Connection | None = getattr(self._readers, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self._path, timeout=30.0, isolation_level=None, check_same_thread=False)
            connection.row_factory = sqlite3.Row
            # A small page cache: there is a reader per thread (up to 40 in the API's thread pool), each would
            # otherwise cache up to 2 MiB of the database. Reads by key touch few pages; the OS caches the file.
            connection.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
            self._readers.connection = connection
            with self._readers_lock:
                # Pool threads come and go (anyio ends a thread idle for 10 s): the connections of threads that have
                # ended are closed here, or each would stay open, with its cache, for the life of the process
                # (measured: the API's RSS rose about 1.5 MiB a minute under load before this).
                live = [(thread, reader) for thread, reader in self._reader_connections if thread.is_alive()]
                for thread, reader in self._reader_connections:
                    if not thread.is_alive():
                        reader.close()
                self._reader_connections = [*live, (threading.current_thread(), connection)]
        return connection


class JobStore:
    """The jobs in a :class:`Database`: a path opens ``jobs.sqlite3`` there (see :func:`open_store` for PostgreSQL).
    Thread-safe; open one per process."""

    def __init__(self, database: Path | Database) -> None:
        self._database: Database = SQLiteDatabase(database) if isinstance(database, Path) else database

    @property
    def name(self) -> str:
        """The database, as messages may name it (no password)."""
        return self._database.name

    def close(self) -> None:
        self._database.close()

    def _write(self, *, exclusive: bool = True) -> AbstractContextManager[Transaction]:
        return self._database.write(exclusive=exclusive)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self._database.read(sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Row]:
        return self._database.read(sql, params)

    # Submitting and reading -----------------------------------------------------------------------------------------

    def insert(
        self,
        *,
        job_id: str,
        dialect: str,
        model: str | None,
        request: Mapping[str, Any],
        batch_key: str,
        max_queue: int,
        idempotency_key: str | None = None,
        body_digest: str | None = None,
    ) -> tuple[Insert, Job | None]:
        """Enqueue a job unless the key was used before or the queue is full (checked in the same transaction)."""
        with self._write() as db:
            if idempotency_key is not None:
                row = db.execute("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                if row is not None:
                    same = row["body_digest"] == body_digest
                    return (Insert.EXISTING, _job(row)) if same else (Insert.CONFLICT, None)
            queued = db.execute("SELECT count(*) AS n FROM jobs WHERE status = 'queued'").fetchone()["n"]
            if queued >= max_queue:
                return Insert.FULL, None
            db.execute(
                "INSERT INTO jobs (id, status, dialect, model, request, batch_key, idempotency_key, body_digest,"
                " created_at) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    dialect,
                    model,
                    json.dumps(dict(request)),
                    batch_key,
                    idempotency_key,
                    body_digest,
                    time.time(),
                ),
            )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Insert.CREATED, _job(row)

    def get(self, job_id: str) -> Job | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row is not None else None

    def list_jobs(self, *, status: JobStatus | None = None, limit: int = 20, offset: int = 0) -> list[Job]:
        """Newest first."""
        if status is None:
            rows = self._all("SELECT * FROM jobs ORDER BY seq DESC LIMIT ? OFFSET ?", (limit, offset))
        else:
            rows = self._all(
                "SELECT * FROM jobs WHERE status = ? ORDER BY seq DESC LIMIT ? OFFSET ?", (status.value, limit, offset)
            )
        return [_job(row) for row in rows]

    def count(self, status: JobStatus | None = None) -> int:
        if status is None:
            row = self._one("SELECT count(*) AS n FROM jobs")
        else:
            row = self._one("SELECT count(*) AS n FROM jobs WHERE status = ?", (status.value,))
        return int(row["n"]) if row is not None else 0

    def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs have each status (statuses without jobs are left out)."""
        rows = self._all("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        return {JobStatus(row["status"]): int(row["n"]) for row in rows}

    def queue_position(self, job_id: str) -> int | None:
        """0 for the next job to run; ``None`` unless the job is queued."""
        row = self._one(
            "SELECT (SELECT count(*) FROM jobs q WHERE q.status = 'queued' AND q.seq < j.seq) AS n FROM jobs j"
            " WHERE j.id = ? AND j.status = 'queued'",
            (job_id,),
        )
        return int(row["n"]) if row is not None else None

    def running(self) -> list[Job]:
        return [_job(row) for row in self._all("SELECT * FROM jobs WHERE status = 'running' ORDER BY started_at")]

    def recent_durations(self, limit: int = 20) -> list[float]:
        """Run times of the last succeeded jobs, for the Retry-After estimate."""
        rows = self._all(
            "SELECT finished_at - started_at AS seconds FROM jobs WHERE status = 'succeeded' AND started_at IS NOT NULL"
            " ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        return [float(row["seconds"]) for row in rows if row["seconds"] is not None]

    # Worker side -----------------------------------------------------------------------------------------------------

    def claim(self, worker: str, *, max_jobs: int = 1, max_images: int | None = None) -> list[Job]:
        """Atomically move the oldest queued job to ``running`` for ``worker``.

        With ``max_jobs > 1`` the jobs right behind it in the queue with the same ``batch_key`` are claimed in the same
        transaction (while their images stay within ``max_images``), so the worker can run them as one batch.
        """
        with self._write() as db:
            first = db.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if first is None:
                return []
            ids = [first["id"]]
            if max_jobs > 1 and first["batch_key"]:
                following = db.execute(
                    "SELECT id, batch_key, request FROM jobs WHERE status = 'queued' AND seq > ? ORDER BY seq LIMIT ?",
                    (first["seq"], max_jobs - 1),
                ).fetchall()
                images = _images(first["request"])
                for row in following:
                    if row["batch_key"] != first["batch_key"]:
                        break  # only consecutive jobs: batching must not reorder the queue
                    images += _images(row["request"])
                    if max_images is not None and images > max_images:
                        break
                    ids.append(row["id"])
            now = time.time()
            marks = ",".join("?" * len(ids))
            db.execute(
                f"UPDATE jobs SET status = 'running', worker = ?, started_at = ?, attempts = attempts + 1,"
                f" step = 0, total_steps = 0 WHERE status = 'queued' AND id IN ({marks})",
                (worker, now, *ids),
            )
            rows = db.execute(f"SELECT * FROM jobs WHERE id IN ({marks}) ORDER BY seq", ids).fetchall()
        return [_job(row) for row in rows]

    def set_progress(self, job_id: str, worker: str, step: int, total: int) -> bool:
        """Record a step of a job this worker holds; False if it no longer holds it (re-queued after its lease ran
        out): the worker then stops running it."""
        with self._write(exclusive=False) as db:
            cursor = db.execute(
                "UPDATE jobs SET step = ?, total_steps = ? WHERE id = ? AND worker = ? AND status = 'running'",
                (step, total, job_id, worker),
            )
            return cursor.rowcount == 1

    def set_preview(self, job_id: str, worker: str, preview: Preview) -> None:
        """Replace the job's live preview, if this worker still runs it."""
        with self._write(exclusive=False) as db:
            db.execute(
                "INSERT INTO previews (job_id, step, total_steps, media_type, image)"
                " SELECT id, ?, ?, ?, ? FROM jobs WHERE id = ? AND worker = ? AND status = 'running'"
                " ON CONFLICT (job_id) DO UPDATE SET step = excluded.step, total_steps = excluded.total_steps,"
                " media_type = excluded.media_type, image = excluded.image",
                (preview.step, preview.total_steps, preview.media_type, preview.image, job_id, worker),
            )

    def preview(self, job_id: str) -> Preview | None:
        """The running job's latest live preview (None before the first, and once the job has ended)."""
        row = self._one("SELECT * FROM previews WHERE job_id = ?", (job_id,))
        if row is None:
            return None
        return Preview(
            step=row["step"], total_steps=row["total_steps"], media_type=row["media_type"], image=bytes(row["image"])
        )

    def cancel_requested(self, job_id: str) -> bool:
        row = self._one("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return bool(row["cancel_requested"]) if row is not None else True

    def finish(
        self,
        job_id: str,
        worker: str,
        status: JobStatus,
        *,
        model: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        images: Sequence[str] = (),
        seeds: Sequence[int] = (),
        infotexts: Sequence[str] = (),
        warnings: Sequence[str] = (),
        timings: Mapping[str, float] | None = None,
    ) -> bool:
        """Record the end of a job this worker holds; False if it no longer holds it (re-queued meanwhile)."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, model = coalesce(?, model), error_code = ?,"
                " error_message = ?, images = ?, seeds = ?, infotexts = ?, warnings = ?, timings = ?,"
                " step = CASE WHEN ? = 'succeeded' THEN total_steps ELSE step END"
                " WHERE id = ? AND worker = ? AND status = 'running'",
                (
                    status.value,
                    time.time(),
                    model,
                    error_code,
                    error_message,
                    json.dumps(list(images)),
                    json.dumps(list(seeds)),
                    json.dumps(list(infotexts)),
                    json.dumps(list(warnings)),
                    json.dumps(dict(timings or {})),
                    status.value,
                    job_id,
                    worker,
                ),
            )
            if cursor.rowcount == 1:
                db.execute("DELETE FROM previews WHERE job_id = ?", (job_id,))
            return cursor.rowcount == 1

    def set_worker(self, worker: str, *, pid: int, state: str, detail: str = "") -> None:
        with self._write(exclusive=False) as db:
            db.execute(
                "INSERT INTO workers (id, pid, state, detail, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, state = excluded.state,"
                " detail = excluded.detail, updated_at = excluded.updated_at",
                (worker, pid, state, detail, time.time()),
            )

    def heartbeat(self, worker: str) -> None:
        """A live worker's sign of life: its lease on the jobs it runs is renewed (see :meth:`stale_workers`)."""
        with self._write(exclusive=False) as db:
            # A worker presumed dead while only slow (its jobs were re-queued) is live again: readiness counts it.
            db.execute(
                "UPDATE workers SET updated_at = ?, state = CASE WHEN detail = ? THEN 'ready' ELSE state END,"
                " detail = CASE WHEN detail = ? THEN '' ELSE detail END WHERE id = ?",
                (time.time(), LEASE_EXPIRED, LEASE_EXPIRED, worker),
            )

    def stale_workers(self, *, before: float) -> list[str]:
        """Workers that hold running jobs but gave no sign of life (:meth:`set_worker`, :meth:`heartbeat`) since
        ``before`` (unix seconds), or never registered: where several servers share the store, their jobs are released
        by lease expiry (:meth:`release` with ``worker=``), not by a supervisor that saw the process die."""
        rows = self._all(
            "SELECT DISTINCT j.worker AS worker FROM jobs j LEFT JOIN workers w ON w.id = j.worker"
            " WHERE j.status = 'running' AND j.worker IS NOT NULL AND (w.updated_at IS NULL OR w.updated_at < ?)",
            (before,),
        )
        return sorted(row["worker"] for row in rows)

    def worker(self, worker: str) -> WorkerState | None:
        row = self._one("SELECT * FROM workers WHERE id = ?", (worker,))
        if row is None:
            return None
        return WorkerState(
            id=row["id"], pid=row["pid"], state=row["state"], detail=row["detail"], updated_at=row["updated_at"]
        )

    def live_workers(self, *, since: float) -> list[WorkerState]:
        """Workers not stopped that gave a sign of life since ``since`` (unix seconds), by id."""
        rows = self._all("SELECT * FROM workers WHERE state <> 'stopped' AND updated_at >= ? ORDER BY id", (since,))
        return [
            WorkerState(
                id=row["id"], pid=row["pid"], state=row["state"], detail=row["detail"], updated_at=row["updated_at"]
            )
            for row in rows
        ]

    # API side --------------------------------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job | None:
        """A queued job ends ``cancelled`` now; a running one is flagged and its worker stops within a step."""
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?, cancel_requested = 1"
                " WHERE id = ? AND status = 'queued'",
                (time.time(), job_id),
            )
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (job_id,))
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row is not None else None

    def release(
        self,
        *,
        retries: int,
        worker: str | None = None,
        penalize: bool = True,
        fail_as: tuple[str, str] | None = None,
        silent_since: float | None = None,
    ) -> tuple[list[Job], list[Job]]:
        """Jobs left ``running`` by a worker that is gone (``worker=None``: by any worker, after a restart).

        Each is re-queued at its old place in the queue if it has run at most ``retries`` + 1 times, else failed as
        ``worker_lost``; a job whose cancel was requested ends ``cancelled``. ``penalize=False`` (an orderly stop
        interrupted it) does not count the attempt; ``fail_as=(code, message)`` fails the jobs without retry (a job
        that timed out). ``silent_since`` (lease expiry) releases nothing if ``worker`` gave a sign of life since then:
        checked in the same transaction, so a heartbeat landing between a check and the release is not overruled.
        Returns (re-queued, ended) jobs.
        """
        where, params = (
            ("status = 'running'", ()) if worker is None else ("status = 'running' AND worker = ?", (worker,))
        )
        requeued: list[str] = []
        ended: list[str] = []
        now = time.time()
        with self._write() as db:
            if silent_since is not None and worker is not None:
                beat = db.execute("SELECT updated_at FROM workers WHERE id = ?", (worker,)).fetchone()
                if beat is not None and beat["updated_at"] >= silent_since:
                    return [], []
                db.execute(
                    "UPDATE workers SET state = 'stopped', detail = ?, pid = 0 WHERE id = ?", (LEASE_EXPIRED, worker)
                )
            for row in db.execute(f"SELECT id, attempts, cancel_requested FROM jobs WHERE {where}", params).fetchall():
                attempts = row["attempts"] if penalize else max(0, row["attempts"] - 1)
                if row["cancel_requested"]:
                    db.execute(
                        "UPDATE jobs SET status = 'cancelled', finished_at = ?, worker = NULL WHERE id = ?",
                        (now, row["id"]),
                    )
                    ended.append(row["id"])
                elif fail_as is None and attempts <= retries:
                    db.execute(
                        "UPDATE jobs SET status = 'queued', worker = NULL, started_at = NULL, step = 0,"
                        " total_steps = 0, attempts = ? WHERE id = ?",
                        (attempts, row["id"]),
                    )
                    requeued.append(row["id"])
                else:
                    code, message = fail_as or (
                        "worker_lost",
                        f"the worker process died while running this job ({attempts} attempts)",
                    )
                    db.execute(
                        "UPDATE jobs SET status = 'failed', finished_at = ?, worker = NULL, error_code = ?,"
                        " error_message = ? WHERE id = ?",
                        (now, code, message, row["id"]),
                    )
                    ended.append(row["id"])
            for job_id in (*requeued, *ended):
                db.execute("DELETE FROM previews WHERE job_id = ?", (job_id,))
        jobs = {job_id: self.get(job_id) for job_id in (*requeued, *ended)}
        return [j for i in requeued if (j := jobs[i])], [j for i in ended if (j := jobs[i])]

    # Retention -------------------------------------------------------------------------------------------------------

    def delete_finished(self, *, before: float, limit: int = 500) -> list[Job]:
        """Delete up to ``limit`` ended jobs (succeeded, failed, cancelled) that ended before ``before`` (unix
        seconds), oldest first, in one transaction; their Idempotency-Keys go with their rows. Queued and running jobs
        are never deleted. Returns the deleted jobs: removing their files is the caller's job, after this commit."""
        with self._write() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')"
                " AND coalesce(finished_at, created_at) < ? ORDER BY seq LIMIT ?",
                (before, limit),
            ).fetchall()
            if rows:
                marks = ",".join("?" * len(rows))
                db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", [row["id"] for row in rows])
        return [_job(row) for row in rows]

    def delete_ended(self, job_id: str) -> tuple[Job | None, bool]:
        """Delete one job if it has ended (succeeded, failed, cancelled), with its Idempotency-Key, in one
        transaction. Returns the job as it was (None for an unknown id) and whether it was deleted: a queued or
        running job is not. Removing its files is the caller's job, after this commit."""
        with self._write() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None, False
            cursor = db.execute(
                "DELETE FROM jobs WHERE id = ? AND status IN ('succeeded', 'failed', 'cancelled')", (job_id,)
            )
        return _job(row), cursor.rowcount == 1

    def existing(self, job_ids: Iterable[str]) -> set[str]:
        """Those of ``job_ids`` that have a row."""
        wanted = list(dict.fromkeys(job_ids))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):  # below SQLite's limit on bound parameters
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(row["id"] for row in self._all(f"SELECT id FROM jobs WHERE id IN ({marks})", chunk))
        return found


def _job(row: Row) -> Job:
    return Job(
        id=row["id"],
        status=JobStatus(row["status"]),
        dialect=row["dialect"],
        model=row["model"],
        request=MappingProxyType(json.loads(row["request"])),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        progress=1.0
        if row["status"] == "succeeded"
        else (row["step"] / row["total_steps"] if row["total_steps"] else 0.0),
        step=row["step"],
        total_steps=row["total_steps"],
        attempts=row["attempts"],
        cancel_requested=bool(row["cancel_requested"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        images=tuple(json.loads(row["images"])),
        seeds=tuple(json.loads(row["seeds"])),
        infotexts=tuple(json.loads(row["infotexts"])),
        warnings=tuple(json.loads(row["warnings"])),
        timings=MappingProxyType(json.loads(row["timings"])),
        idempotency_key=row["idempotency_key"],
        worker=row["worker"],
        batch_key=row["batch_key"],
    )


def _images(record: str | None) -> int:
    """Images a job's stored request asks for."""
    try:
        value = json.loads(record or "{}").get("num_images", 1)
    except (ValueError, AttributeError):
        return 1
    return value if isinstance(value, int) and value > 0 else 1
