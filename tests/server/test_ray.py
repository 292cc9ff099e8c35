"""``imagegen serve --ray`` on a local Ray cluster (2 CPUs, the built-in demo model): every dialect through the
ingress, a replica killed mid-job (the job is retried and succeeds), scaling 1 -> 2 -> 1 replicas, SIGTERM drain.

One cluster for the module (starting Ray and a replica takes seconds); the tests run in file order."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from support.server_harness import ServerProcess, wait_job, wait_ready

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (the 'ray' extra)")
pytestmark = pytest.mark.slow

#: Starting Ray, its Serve controller and proxy, and an engine replica loading the demo model, on 2 busy cores.
START = 240.0


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("ray")
    server = ServerProcess(
        ["--ray", "--replicas", "1:2", "--scale-down-delay", "5", "--data-dir", str(folder / "data")],
        folder / "server.log",
    )
    server.start(ready=False)
    try:
        wait_ready(server.get, timeout=START)
        yield server
    finally:
        assert server.process is not None
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(60)
            except Exception:
                os.killpg(server.process.pid, signal.SIGKILL)  # Ray's processes share the server's session
                server.process.wait(30)


def _database(server: ServerProcess) -> sqlite3.Connection:
    return sqlite3.connect(Path(server.args[server.args.index("--data-dir") + 1]) / "jobs.sqlite3")


def _live_workers(server: ServerProcess) -> list[dict]:
    return [w for w in server.get("/readyz").json()["workers"] if w["state"] == "ready"]


def _png(content: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(content))
    image.load()
    return image


def _run(server: ServerProcess, body: dict) -> dict:
    return wait_job(server.get, server.post("/v1/jobs", json=body).json()["id"], timeout=180)


def test_every_dialect_through_the_ingress(ray_server):
    native = _run(ray_server, {"prompt": "a red circle", "num_inference_steps": 8, "seed": 3})
    assert native["status"] == "succeeded", native
    picture = _png(httpx.get(native["images"][0], timeout=30).content)  # a signed URL
    assert "Seed: 3" in picture.info["parameters"]
    # The job's SSE stream, through Ray's proxy, ends with its outcome.
    with httpx.stream("GET", f"{ray_server.url}/v1/jobs/{native['id']}/events", timeout=60) as stream:
        events = [line for line in stream.iter_lines() if line.startswith("event:")]
    assert events[-1] == "event: done"

    a1111 = ray_server.post(
        "/sdapi/v1/txt2img", json={"prompt": "a blue square", "steps": 6, "batch_size": 2, "seed": 11}
    ).json()
    assert len(a1111["images"]) == 2
    assert json.loads(a1111["info"])["all_seeds"] == [11, 12]
    _png(base64.b64decode(a1111["images"][0]))

    openai = ray_server.post(
        "/v1/images/generations", json={"prompt": "a green triangle", "size": "auto", "response_format": "b64_json"}
    ).json()
    assert _png(base64.b64decode(openai["data"][0]["b64_json"])).size == (64, 64)

    metrics = ray_server.get("/metrics").text
    assert 'imagegen_jobs{status="succeeded"} 3.0' in metrics


def test_a_replica_killed_mid_job_is_replaced_and_the_job_retried(ray_server):
    job = ray_server.post(
        "/v1/jobs", json={"prompt": "a red circle", "num_inference_steps": 100, "width": 192, "height": 192}
    ).json()
    wait_job(ray_server.get, job["id"], until=lambda j: j["step"] >= 5, timeout=120)
    with _database(ray_server) as db:
        worker, pid = db.execute(
            "SELECT w.id, w.pid FROM jobs j JOIN workers w ON w.id = j.worker WHERE j.id = ?", (job["id"],)
        ).fetchone()
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    requeued = wait_job(ray_server.get, job["id"], until=lambda j: j["status"] != "running" or j["attempts"] == 2)
    released = time.monotonic() - killed
    again = wait_job(ray_server.get, job["id"], until=lambda j: j["attempts"] == 2, timeout=120)
    recovery = time.monotonic() - killed
    print(f"replica killed mid-job: job re-queued after {released:.1f} s, running again after {recovery:.1f} s")
    assert requeued["status"] in ("queued", "running")
    done = wait_job(ray_server.get, job["id"], timeout=240)
    assert (done["status"], done["attempts"]) == ("succeeded", 2), done
    assert again["status"] in ("running", "succeeded")
    with _database(ray_server) as db:
        state, detail = db.execute("SELECT state, detail FROM workers WHERE id = ?", (worker,)).fetchone()
    assert (state, detail) == ("stopped", "lease expired")  # found dead by lease, not by a supervisor
    # Ray replaced the replica: a live one runs the next job.
    wait_ready(ray_server.get, timeout=120)
    assert _run(ray_server, {"prompt": "a dot", "num_inference_steps": 4})["status"] == "succeeded"


def test_replicas_scale_up_while_jobs_wait_and_back_down(ray_server):
    ids = [
        ray_server.post(
            "/v1/jobs", json={"prompt": f"a red circle {i}", "num_inference_steps": 40, "width": 128, "height": 128}
        ).json()["id"]
        for i in range(10)
    ]
    deadline = time.monotonic() + 180
    most = 0
    while time.monotonic() < deadline and most < 2:
        most = max(most, len(_live_workers(ray_server)))
        time.sleep(0.5)
    assert most == 2, "Ray did not add a replica while jobs waited"
    for job_id in ids:
        assert wait_job(ray_server.get, job_id, timeout=300)["status"] == "succeeded"
    deadline = time.monotonic() + 120
    while len(_live_workers(ray_server)) > 1:
        assert time.monotonic() < deadline, "the extra replica was not removed once the queue was empty"
        time.sleep(0.5)
    assert len(_live_workers(ray_server)) == 1


def test_sigterm_lets_the_running_job_finish_and_stops_the_cluster(ray_server):
    job = ray_server.post(
        "/v1/jobs", json={"prompt": "a red circle", "num_inference_steps": 60, "width": 128, "height": 128}
    ).json()
    wait_job(ray_server.get, job["id"], until=lambda j: j["step"] >= 2, timeout=120)
    assert ray_server.terminate(timeout=120) == 0
    with _database(ray_server) as db:
        status, step, total = db.execute(
            "SELECT status, step, total_steps FROM jobs WHERE id = ?", (job["id"],)
        ).fetchone()
    assert (status, step) == ("succeeded", total)
    assert "stopping: running jobs finish" in ray_server.log()
