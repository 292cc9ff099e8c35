"""A real, throw-away PostgreSQL server for the job store's tests, from Debian's ``postgresql`` package.

``initdb`` + ``pg_ctl start`` into a temporary folder: listening on a unix socket in that folder and on a free port of
127.0.0.1, trusting local connections (any password passes, so tests can check that one is never shown), without
fsync (a test server loses nothing worth keeping). PostgreSQL refuses to run as root, so under root it runs as the
``postgres`` user, which owns the folder. :func:`unavailable` says why a machine cannot run it (tests skip with it).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from support.server_harness import free_port

#: A password in every URL the tests use: the server ignores it (trust), and no message or log may show it.
PASSWORD = "pg-s3cret-do-not-log"


def _bindir() -> Path | None:
    """The newest installed PostgreSQL's programs (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, default=None)


def unavailable() -> str | None:
    """Why PostgreSQL cannot run here (None if it can)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'imagegen[serve]')"
    if _bindir() is None:
        return "PostgreSQL is not installed (apt-get install postgresql; `make install` does it when run as root)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run PostgreSQL as (it refuses to run as root)"
    return None


class PostgresServer:
    """One server; :meth:`database` creates a fresh database on it and returns its URL."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError(unavailable())
        self._bin = bindir
        self.root = Path(tempfile.mkdtemp(prefix="imagegen-pg-"))
        self.port = free_port()
        self._names = itertools.count()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.started_in = 0.0

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._as_user, *command], cwd=self.root, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stdout}{result.stderr}{tail}")

    def start(self) -> PostgresServer:
        started = time.monotonic()
        self._run(str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip
        options = (
            f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 -c max_connections=300"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                  "-t", "60", "-o", options, "start")  # fmt: skip
        self.started_in = time.monotonic() - started
        return self

    def url(self, database: str, *, password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str, *, database: str = "postgres") -> list[tuple[object, ...]]:
        """Run one statement as the superuser, outside the store (autocommit)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def database(self) -> str:
        """A new empty database; its URL (with :data:`PASSWORD`)."""
        name = f"test_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
