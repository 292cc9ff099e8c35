"""Server test fixtures: settings on a temporary data directory, an in-process ``client`` and a real ``server``.

Both run the real service with real worker processes; the engine is :mod:`support.fake_engine` (solid colours, real
infotext, no torch) unless a test passes another ``engine_factory``. Worker processes import the fake from ``tests/``,
so ``PYTHONPATH`` gets ``tests/`` for every test here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imagegen.options import EngineOptions
from imagegen.server.app import create_app
from imagegen.server.settings import ServerSettings
from support.postgres import PostgresServer, unavailable
from support.server_harness import FAKE_FACTORY, TESTS_DIR, ServerProcess, wait_ready, write_fake_model

#: What in-process clients address: a server without API keys answers only loopback Host headers.
LOOPBACK_BASE_URL = "http://127.0.0.1"


@pytest.fixture(scope="session")
def fake_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models directory with ``fake-sd1``, ``fake-sd1-b``, ``fake-sdxl`` and ``fake-refiner`` (configs only)."""
    root = tmp_path_factory.mktemp("models")
    write_fake_model(root / "fake-sd1")
    write_fake_model(root / "fake-sd1-b")
    write_fake_model(root / "fake-sdxl", family="sdxl")
    write_fake_model(root / "fake-refiner", family="sdxl-refiner")
    return root


@pytest.fixture(autouse=True)
def _tests_on_worker_path(monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(TESTS_DIR), path) if p))


@pytest.fixture
def settings(tmp_path: Path, fake_models_dir: Path) -> ServerSettings:
    return ServerSettings(
        engine=EngineOptions(models_dir=fake_models_dir),
        default_model="fake-sd1",
        data_dir=tmp_path / "data",
        engine_factory=FAKE_FACTORY,
        poll_interval=0.05,
        progress_interval=0.0,
        max_queue=8,
    )


@pytest.fixture
def make_client(settings: ServerSettings) -> Iterator[Callable[..., TestClient]]:
    """Start an in-process app (real workers) with settings overrides; stopped at the end of the test."""
    clients: list[TestClient] = []

    def make(*, ready: bool = True, **overrides: Any) -> TestClient:
        # A loopback base URL: a server without keys refuses other Host headers (TestClient's default is
        # "testserver").
        client = TestClient(create_app(replace(settings, **overrides)), base_url=LOOPBACK_BASE_URL)
        client.__enter__()
        clients.append(client)
        if ready:
            wait_ready(client.get)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def make_server(tmp_path: Path, fake_models_dir: Path) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def make(*extra: str, data_dir: Path | None = None) -> ServerProcess:
        args = [
            "--data-dir",
            str(data_dir or tmp_path / "data"),
            "--models-dir",
            str(fake_models_dir),
            "--model",
            "fake-sd1",
            "--engine-factory",
            FAKE_FACTORY,
            *extra,
        ]
        server = ServerProcess(args, tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return make_server().start()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (started on first use; the tests that need it skip without it)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh database of its own for this test, as a URL with a password (which nothing may show)."""
    return postgres.database()
