"""Queue behaviour: idempotency, the queue bound (429), cancel, Server-Sent Events, worker failures."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from support.server_harness import wait_job, wait_ready

SLOW = "[sleep=0.1]"  # 0.1 s per fake step


def _running(client, job_id):
    return wait_job(client.get, job_id, until=lambda job: job["status"] == "running" and job["step"] >= 1)


def _blocker(client, steps=150):
    """A job that keeps the single worker busy until cancelled."""
    job = client.post("/v1/jobs", json={"prompt": f"blocker {SLOW}", "num_inference_steps": steps}).json()
    _running(client, job["id"])
    return job["id"]


def test_idempotency_key_same_body_same_job_other_body_409(client):
    body = {"prompt": "a cat", "seed": 7}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "key-1"})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "key-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/v1/jobs", json={**body, "seed": 8}, headers={"Idempotency-Key": "key-1"})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    fresh = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "key-2"})
    assert fresh.json()["id"] != first.json()["id"]
    assert client.get("/v1/jobs").json()["total"] == 2


def test_queue_bound_gives_429_with_retry_after_and_accepted_jobs_complete(make_client):
    client = make_client(max_queue=2)
    blocker = _blocker(client)
    accepted = [client.post("/v1/jobs", json={"prompt": f"queued {i}"}) for i in range(2)]
    assert [r.status_code for r in accepted] == [202, 202]
    refused = client.post("/v1/jobs", json={"prompt": "one too many"})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "queue_full"
    client.delete(f"/v1/jobs/{blocker}")
    for response in accepted:
        assert wait_job(client.get, response.json()["id"])["status"] == "succeeded"
    assert client.get("/readyz").status_code == 200


def test_cancel_queued_job_never_runs(client):
    blocker = _blocker(client)
    queued = client.post("/v1/jobs", json={"prompt": "never"}).json()
    assert queued["queue_position"] == 0
    cancelled = client.delete(f"/v1/jobs/{queued['id']}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    client.delete(f"/v1/jobs/{blocker}")
    after = client.post("/v1/jobs", json={"prompt": "next"}).json()
    assert wait_job(client.get, after["id"])["status"] == "succeeded"
    job = client.get(f"/v1/jobs/{queued['id']}").json()
    assert job["status"] == "cancelled"
    assert job["started_at"] is None
    assert job["images"] == []


def test_cancel_running_job_stops_within_steps_and_next_job_runs(client):
    job = client.post("/v1/jobs", json={"prompt": f"long {SLOW}", "num_inference_steps": 150}).json()
    _running(client, job["id"])
    client.delete(f"/v1/jobs/{job['id']}")
    ended = wait_job(client.get, job["id"])
    assert ended["status"] == "cancelled"
    assert ended["step"] < 150
    assert ended["images"] == []
    nxt = client.post("/v1/jobs", json={"prompt": "after"}).json()
    assert wait_job(client.get, nxt["id"])["status"] == "succeeded"


def _sse(text):
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_events_come_in_order_and_end_with_the_job(client):
    blocker = _blocker(client)
    job = client.post("/v1/jobs", json={"prompt": f"watched {SLOW}", "num_inference_steps": 5}).json()
    queue = client.app.state.services.queue

    async def collect():
        events = []
        async for event in queue.events(job["id"]):
            events.append((event.event, event.job))
            if event.event == "queued":
                queue.cancel(blocker)  # only now may the watched job start
        return events

    events = asyncio.run(collect())
    names = [name for name, _ in events]
    assert names[0] == "queued"
    assert names[1] == "started"
    assert names[-1] == "done"
    assert set(names[2:-1]) == {"progress"}
    steps = [data.step for name, data in events if name == "progress"]
    # One progress event per step actually observed: never the same step twice, never past the total.
    assert steps, names
    assert all(earlier < later for earlier, later in itertools.pairwise(steps)), steps
    assert all(1 <= data.step <= data.total_steps == 5 for name, data in events if name == "progress")
    assert events[-1][1].status.value == "succeeded"
    assert (events[-1][1].step, events[-1][1].total_steps) == (5, 5)


def test_event_stream_of_a_finished_job_ends_at_once(client):
    job = client.post("/v1/jobs", json={"prompt": "quick", "num_inference_steps": 3}).json()
    wait_job(client.get, job["id"])
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse(response.read().decode())
    assert [name for name, _ in events] == ["started", "done"]
    assert events[-1][1]["status"] == "succeeded"
    assert len(events[-1][1]["images"]) == 1
    assert client.get("/v1/jobs/missing/events").status_code == 404


def test_worker_crash_is_retried_once_then_succeeds(client):
    job = client.post("/v1/jobs", json={"prompt": "[crash-once]"}).json()
    done = wait_job(client.get, job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    wait_ready(client.get)  # the worker was restarted


def test_worker_crashing_every_time_fails_clearly_and_queue_goes_on(client):
    job = client.post("/v1/jobs", json={"prompt": "[crash]"}).json()
    failed = wait_job(client.get, job["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "worker_lost"
    assert failed["attempts"] == 2
    after = client.post("/v1/jobs", json={"prompt": "fine"}).json()
    assert wait_job(client.get, after["id"])["status"] == "succeeded"


def test_worker_killed_from_outside_mid_job_is_retried(client, settings):
    job = client.post("/v1/jobs", json={"prompt": f"victim {SLOW}", "num_inference_steps": 150}).json()
    running = _running(client, job["id"])
    assert running["attempts"] == 1
    with sqlite3.connect(settings.database) as db:
        (pid,) = db.execute("SELECT pid FROM workers WHERE state = 'ready'").fetchone()
    os.kill(pid, signal.SIGKILL)
    # Re-queued at the front and started again by the restarted worker.
    wait_job(client.get, job["id"], until=lambda j: j["status"] == "running" and j["attempts"] == 2)
    client.delete(f"/v1/jobs/{job['id']}")
    assert wait_job(client.get, job["id"])["status"] == "cancelled"
    after = client.post("/v1/jobs", json={"prompt": "fine"}).json()
    assert wait_job(client.get, after["id"])["status"] == "succeeded"


def test_out_of_memory_fails_the_job_only(client):
    job = client.post("/v1/jobs", json={"prompt": "[oom]"}).json()
    failed = wait_job(client.get, job["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "out_of_memory"
    broken = wait_job(client.get, client.post("/v1/jobs", json={"prompt": "[fail]"}).json()["id"])
    assert broken["error"]["code"] == "internal_error"
    after = client.post("/v1/jobs", json={"prompt": "fine"}).json()
    assert wait_job(client.get, after["id"])["status"] == "succeeded"


def test_without_retries_the_first_crash_fails_the_job(make_client):
    client = make_client(job_retries=0)
    failed = wait_job(client.get, client.post("/v1/jobs", json={"prompt": "[crash-once]"}).json()["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "worker_lost"
    assert failed["attempts"] == 1


def test_two_workers_run_two_jobs_at_once(make_client):
    client = make_client(workers=2)
    ids = [
        client.post("/v1/jobs", json={"prompt": f"{i} {SLOW}", "num_inference_steps": 150}).json()["id"] for i in (1, 2)
    ]
    for job_id in ids:
        _running(client, job_id)
    assert client.get("/v1/jobs", params={"status": "running"}).json()["total"] == 2
    for job_id in ids:
        client.delete(f"/v1/jobs/{job_id}")
    assert {wait_job(client.get, job_id)["status"] for job_id in ids} == {"cancelled"}


def test_default_model_not_loadable_means_not_ready(make_client, monkeypatch):
    monkeypatch.setenv("IMAGEGEN_FAKE_LOAD_ERROR", "1")
    client = make_client(ready=False)
    deadline = time.monotonic() + 60
    while (body := client.get("/readyz").json())["reason"] != "model_not_loadable":
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_a_job_running_past_the_timeout_fails_and_the_queue_goes_on(make_client):
    client = make_client(job_timeout=1.0)
    hung = client.post("/v1/jobs", json={"prompt": "hangs [sleep=1]", "num_inference_steps": 100}).json()
    after = client.post("/v1/jobs", json={"prompt": "next"}).json()
    failed = wait_job(client.get, hung["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "timeout"
    assert failed["attempts"] == 1
    assert wait_job(client.get, after["id"])["status"] == "succeeded"


def test_api_process_never_imports_the_generation_stack(tmp_path, fake_models_dir):
    """Handlers validate and enqueue; torch and diffusers are only ever imported by the workers."""
    script = f"""
import sys
from fastapi.testclient import TestClient
from imagegen.server.app import create_app
from imagegen.options import EngineOptions
from imagegen.server.settings import ServerSettings
from support.server_harness import wait_job, wait_ready
settings = ServerSettings(engine=EngineOptions(models_dir={str(fake_models_dir)!r}), default_model="fake-sd1",
                          data_dir={str(tmp_path / "data")!r}, engine_factory="support.fake_engine:create")
with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
    wait_ready(client.get)
    job = client.post("/v1/jobs", json={{"prompt": "x"}}).json()
    assert wait_job(client.get, job["id"])["status"] == "succeeded"
    client.post("/sdapi/v1/txt2img", json={{"prompt": "x"}})
    client.post("/v1/images/generations", json={{"prompt": "x"}})
print(sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_an_idle_event_stream_gets_keepalives(client):
    blocker = _blocker(client)
    job = client.post("/v1/jobs", json={"prompt": "waiting"}).json()
    queue = client.app.state.services.queue

    async def first_events():
        names = []
        async for event in queue.events(job["id"], keepalive=0.1):
            names.append(event.event)
            if len(names) == 3:
                return names
        return names

    assert asyncio.run(first_events()) == ["queued", "keepalive", "keepalive"]
    client.delete(f"/v1/jobs/{blocker}")
