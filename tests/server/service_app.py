"""A started app whose services read a clock the test controls: URL expiry and retention without sleeping."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager

from fastapi.testclient import TestClient

from imagegen.server.app import create_app
from imagegen.server.services import Services
from imagegen.server.settings import ServerSettings
from support.server_harness import wait_ready


class FakeClock:
    """Unix seconds that move only when the test says so."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def running_app(settings: ServerSettings, *, clock: Callable[[], float] = time.time) -> Iterator[TestClient]:
    """The app with real worker processes (the fake engine), ready; stopped on exit."""
    services = Services(settings, clock=clock)
    # A loopback base URL: a server without keys refuses other Host headers (TestClient's default is "testserver").
    with TestClient(create_app(settings, services=services), base_url="http://127.0.0.1") as client:
        wait_ready(client.get)
        yield client


def service_of(client: TestClient) -> Services:
    services: Services = client.app.state.services
    return services


def backdate(settings: ServerSettings, job_ids: Iterable[str], seconds: float) -> None:
    """Move the jobs' timestamps ``seconds`` into the past, as if they had been submitted and run that long ago."""
    ids = list(job_ids)
    marks = ",".join("?" * len(ids))
    with closing(sqlite3.connect(settings.database, timeout=30)) as db, db:
        db.execute(
            "UPDATE jobs SET created_at = created_at - ?, started_at = started_at - ?, finished_at = finished_at - ?"
            f" WHERE id IN ({marks})",
            (seconds, seconds, seconds, *ids),
        )
