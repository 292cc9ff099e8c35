"""Helpers for server tests: fake model folders, waiting for readiness and jobs, ``imagegen serve`` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TESTS_DIR = Path(__file__).resolve().parents[1]
FAKE_FACTORY = "support.fake_engine:create"
#: Generous: a worker process start plus a few fake steps; only reached when something is broken.
WAIT = 60.0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def write_fake_model(folder: Path, *, family: str = "sd1") -> Path:
    """A diffusers folder with configs only: enough for the catalog (family, native 64x64), not for generation."""
    xl = family in ("sdxl", "sdxl-refiner")
    _write_json(
        folder / "model_index.json",
        {
            "_class_name": "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline",
            "text_encoder": [None, None] if family == "sdxl-refiner" else ["transformers", "CLIPTextModel"],
        },
    )
    unet: dict[str, Any] = {"sample_size": 8, "cross_attention_dim": 768}
    if xl:
        unet["addition_embed_type"] = "text_time"
    _write_json(folder / "unet" / "config.json", unet)
    _write_json(folder / "vae" / "config.json", {"block_out_channels": [8, 8, 8, 8]})
    return folder


def wait_ready(get: Callable[[str], httpx.Response], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError("the server did not become ready")


def wait_job(
    get: Callable[[str], httpx.Response],
    job_id: str,
    *,
    until: Callable[[dict[str, Any]], bool] | None = None,
    timeout: float = WAIT,
) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until ``until(job)`` (default: the job has ended)."""
    until = until or (lambda job: job["status"] in ("succeeded", "failed", "cancelled"))
    deadline = time.monotonic() + timeout
    while True:
        job = get(f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} stuck: {job}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``imagegen serve`` in a subprocess on a free loopback port; restartable on the same data directory."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log_path = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.headers: dict[str, str] = {}

    def start(self, *, ready: bool = True) -> ServerProcess:
        command = [sys.executable, "-m", "imagegen.cli", "serve", "--port", str(self.port), *self.args]
        with self.log_path.open("ab") as log:
            # A session of its own, so a test can signal the server's whole process group (as service managers do).
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True
            )
        if ready:
            wait_ready(self.get)
        return self

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, headers={**self.headers, **kwargs.pop("headers", {})}, timeout=30, **kwargs)

    def delete(self, path: str) -> httpx.Response:
        return httpx.delete(self.url + path, headers=self.headers, timeout=30)

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as after an OOM killer or a power cut."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)

    def terminate(self, timeout: float = WAIT) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
