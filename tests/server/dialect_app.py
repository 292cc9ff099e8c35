"""A running imagegen app for the A1111 / OpenAI dialect tests: the real services and worker process, a fake engine.

The served models are configs-only copies of the bundled SD 1.5 and SDXL reference configs (no weights: the fake
engine never loads them), shrunk to 64x64 / 4 steps defaults through ``imagegen.json`` so every image is cheap.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import imagegen
from imagegen.options import EngineOptions
from imagegen.requests import Limits
from imagegen.server.app import create_app
from imagegen.server.settings import ServerSettings
from support.server_harness import wait_job

API_KEY = "test-key-123"
BASIC = ("alice", "wonderland")
CONFIGS = Path(imagegen.__file__).parent / "configs"
TESTS = Path(__file__).resolve().parents[1]
#: Small, so the 413 test need not build a 45 MB body.
MAX_BODY_BYTES = 4 * 1024 * 1024
SMALL_DEFAULTS = {"defaults": {"width": 64, "height": 64, "num_inference_steps": 4, "guidance_scale": 7.0}}


def make_models(root: Path) -> Path:
    """``root/models`` with ``fake-sd15`` and ``fake-sdxl`` (configs only)."""
    models = root / "models"
    for name, config in (("fake-sd15", "sd15"), ("fake-sdxl", "sdxl-base")):
        shutil.copytree(CONFIGS / config, models / name)
        (models / name / "imagegen.json").write_text(json.dumps(SMALL_DEFAULTS))
    return models


def fill_queue(client: TestClient, headers: dict[str, str]) -> tuple[str, ...]:
    """Make the queue full with native jobs (a bound of ``max_queue=1``): one running until cancelled, one waiting.

    Returns their ids, the waiting one first (cancel it first, or it starts when the running one ends)."""
    running = client.post(
        "/v1/jobs", json={"prompt": "blocker [sleep=0.1]", "num_inference_steps": 150}, headers=headers
    ).json()["id"]
    wait_job(lambda path: client.get(path, headers=headers), running, until=lambda job: job["status"] == "running")
    waiting = client.post("/v1/jobs", json={"prompt": "waiting"}, headers=headers)
    assert waiting.status_code == 202, waiting.text
    return waiting.json()["id"], running


@contextmanager
def dialect_client(root: Path, *, limits: Limits | None = None, max_queue: int = 64) -> Iterator[TestClient]:
    """A started app (worker process running the fake engine) and an unauthenticated client for it."""
    settings = ServerSettings(
        host="127.0.0.1",
        engine=EngineOptions(models_dir=make_models(root)),
        default_model="fake-sd15",
        data_dir=root / "data",
        api_keys=(API_KEY,),
        basic_auth=(BASIC,),
        engine_factory="support.fake_engine:create",
        limits=limits or Limits(max_images=8, max_width=1024, max_height=1024, max_pixels=1024 * 1024),
        max_body_bytes=MAX_BODY_BYTES,
        max_queue=max_queue,
        poll_interval=0.02,
        progress_interval=0.0,
    )
    with pytest.MonkeyPatch.context() as patch:
        # The worker process imports the fake engine from tests/support.
        path = os.environ.get("PYTHONPATH")
        patch.setenv("PYTHONPATH", f"{TESTS}{os.pathsep}{path}" if path else str(TESTS))
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client


def record_submit_threads(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Wrap the app's ``queue.submit``; the list gets, per call, whether it ran on the event loop's thread."""
    import asyncio

    queue = client.app.state.services.queue
    original = queue.submit
    on_loop: list[bool] = []

    def submit(*args: object, **kwargs: object) -> object:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # no loop in this thread: a threadpool worker
            on_loop.append(False)
        return original(*args, **kwargs)

    monkeypatch.setattr(queue, "submit", submit)
    return on_loop


def poll_progress(client: TestClient, until: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
    """``/sdapi/v1/progress`` read every 50 ms until ``until`` holds (the last answer after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        progress: dict[str, Any] = client.get("/sdapi/v1/progress").json()
        if until(progress) or time.monotonic() >= deadline:
            return progress
        time.sleep(0.05)
