"""The job store's tables in PostgreSQL (``imagegen serve --store postgresql://...``): one queue for several servers.

The SQL is :class:`~imagegen.server.jobs.store.JobStore`'s, the same as on SQLite; this module supplies connections
and transactions. Write transactions are serialised across every client of the database by a transaction-level
advisory lock, as SQLite's ``BEGIN IMMEDIATE`` serialises them across processes: a claim must see the head of the
queue and the jobs right behind it without gaps (``FOR UPDATE SKIP LOCKED`` would let a second server batch around a
job the first one is claiming), and an insert must count the queue and check its Idempotency-Key with no insert in
between. Frequent single-row writes (progress, previews, heartbeats) take the lock shared, so they wait only for the
exclusive ones.

A process holds two connections: one for writes and one for reads (autocommit; a read never waits for a write
transaction), each behind its own lock. A dropped connection (server restart, ``pg_terminate_backend``, a proxy's
idle timeout) is replaced on the next call: a read is retried once on a new connection, and a write transaction
reconnects when its first statement (the lock) fails, before it has changed anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg.rows import DictRow, dict_row

from imagegen.server.jobs.store import (
    SCHEMA_VERSION,
    Cursor,
    Row,
    StoreUnavailable,
    StoreVersionMismatch,
    Transaction,
    schema,
)
from imagegen.server.settings import redact_url

#: The advisory lock of the job store's write transactions ("imagegen" in ASCII), per database.
WRITE_LOCK_KEY = 0x696D61676567656E
#: How long a write connection may sit idle inside a transaction before the database ends its session.
IDLE_IN_TRANSACTION = "60s"
_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS store_version (version INTEGER NOT NULL)"
_T = TypeVar("_T")


class _Link:
    """One connection, opened on first use and again after it dropped; the caller holds ``lock`` around its use."""

    def __init__(self, url: str, *, autocommit: bool, connect_timeout: float, name: str) -> None:
        self.lock = threading.RLock()
        self._url = url
        self._autocommit = autocommit
        self._connect_timeout = connect_timeout
        self._name = name
        self._connection: psycopg.Connection[DictRow] | None = None
        try:
            password = psycopg.conninfo.conninfo_to_dict(url).get("password")
        except psycopg.Error:
            password = None
        self._password = str(password) if password else None

    def start(self, first: Callable[[psycopg.Connection[DictRow]], _T]) -> tuple[psycopg.Connection[DictRow], _T]:
        """The connection and what ``first`` returned on it, on a new connection if the old one turns out dropped."""
        connection = self._connection
        if connection is not None and not (connection.closed or connection.broken):
            try:
                return connection, first(connection)
            except psycopg.OperationalError as exc:
                if not connection.broken:
                    raise self._failed(connection, exc) from exc
            # A connection that worked before and is gone now: once more on a new one.
        self.close()
        connection = self._connect()
        try:
            return connection, first(connection)
        except psycopg.OperationalError as exc:
            raise self._failed(connection, exc) from exc

    def _failed(self, connection: psycopg.Connection[DictRow], exc: psycopg.Error) -> StoreUnavailable:
        """The error to raise for ``exc``; the connection is left ready for the next call (or dropped)."""
        if connection.broken:
            self.close()
        else:
            with suppress(psycopg.Error):
                connection.rollback()  # out of the failed transaction
        return self.unavailable(exc)

    def _connect(self) -> psycopg.Connection[DictRow]:
        try:
            self._connection = psycopg.connect(
                self._url,
                autocommit=self._autocommit,
                row_factory=dict_row,
                connect_timeout=max(1, round(self._connect_timeout)),
                application_name="imagegen",
            )
            if not self._autocommit:
                # A process stalled inside a write transaction would hold every server's write lock: the database
                # ends such a session after a minute (the store's transactions last milliseconds).
                self._connection.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}'")
                self._connection.commit()
        except psycopg.Error as exc:
            self.close()
            raise self.unavailable(exc) from exc
        return self._connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def unavailable(self, exc: psycopg.Error) -> StoreUnavailable:
        """The error to raise for a connection that failed: it names the database, never its password."""
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if self._password:
            detail = detail.replace(self._password, "***")
        return StoreUnavailable(f"cannot use the job store {self._name}: {detail}")


class _PostgresTransaction:
    """The store's SQL on a psycopg connection: ``?`` placeholders become ``%s`` (the SQL has no other ? or %)."""

    def __init__(self, connection: psycopg.Connection[DictRow], link: _Link) -> None:
        self._connection = connection
        self._link = link

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        try:
            return self._connection.execute(sql.replace("?", "%s"), parameters)
        except psycopg.OperationalError as exc:
            raise self._link.unavailable(exc) from exc


class PostgresDatabase:
    """A :class:`~imagegen.server.jobs.store.Database` on PostgreSQL, from a ``postgresql://`` or ``postgres://``
    URL (libpq's: ``?host=/path`` for a unix socket, ``?sslmode=...`` and so on)."""

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        self.name = redact_url(url)
        self._writer = _Link(url, autocommit=False, connect_timeout=connect_timeout, name=self.name)
        self._reader = _Link(url, autocommit=True, connect_timeout=connect_timeout, name=self.name)
        try:
            self._create_tables()
        except BaseException:
            self.close()
            raise

    def _create_tables(self) -> None:
        # Under the exclusive lock: two servers starting at once must not both create the tables (or the version row).
        with self.write() as db:
            db.execute(
                schema(seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", real="DOUBLE PRECISION", blob="BYTEA")
            )
            db.execute(_VERSION_TABLE)
            row = db.execute("SELECT version FROM store_version").fetchone()
            if row is None:
                db.execute("INSERT INTO store_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row["version"] != SCHEMA_VERSION:
                raise StoreVersionMismatch(
                    f"{self.name} has job store schema version {row['version']}, this imagegen uses {SCHEMA_VERSION};"
                    " use another --store database, or the imagegen version that made it"
                )

    def close(self) -> None:
        for link in (self._writer, self._reader):
            with link.lock:
                link.close()

    @contextmanager
    def write(self, *, exclusive: bool = True) -> Iterator[Transaction]:
        # The lock is the transaction's first statement (psycopg begins the transaction with it): if the connection
        # dropped since the last call, that is where it shows, and nothing has been changed yet.
        lock = f"SELECT {'pg_advisory_xact_lock' if exclusive else 'pg_advisory_xact_lock_shared'}(%s)"
        with self._writer.lock:
            connection, _ = self._writer.start(lambda c: c.execute(lock, (WRITE_LOCK_KEY,)))
            try:
                yield _PostgresTransaction(connection, self._writer)
            except BaseException:
                if not connection.closed:
                    # Undo it (a broken connection was rolled back by the server already; the next call reconnects).
                    with suppress(psycopg.Error):
                        connection.rollback()
                raise
            try:
                connection.commit()
            except psycopg.OperationalError as exc:
                raise self._writer.unavailable(exc) from exc

    def read(self, sql: str, parameters: Sequence[Any] = ()) -> Sequence[Row]:
        query = sql.replace("?", "%s")
        with self._reader.lock:
            _, rows = self._reader.start(lambda c: c.execute(query, parameters).fetchall())
        return rows
