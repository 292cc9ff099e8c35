"""``GET /metrics``: the server's own gauges and the workers' counters and histograms, in Prometheus text format."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

from prometheus_client.parser import text_string_to_metric_families

from imagegen.server.jobs.model import batch_key
from support.server_harness import wait_job, wait_ready


def _samples(client, **kwargs) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_metrics_count_jobs_images_steps_and_batches(client) -> None:
    first = _samples(client)
    assert first[("imagegen_queue_depth", ())] == 0
    assert first[("imagegen_jobs", (("status", "succeeded"),))] == 0
    assert first[("imagegen_workers", (("state", "ready"),))] == 1
    assert first[("imagegen_worker_restarts_total", ())] == 0
    ids = [
        client.post(
            "/v1/jobs", json={"prompt": f"job {i} [sleep=0.02]", "num_inference_steps": 5, "num_images": 2}
        ).json()["id"]
        for i in range(3)
    ]
    failed = client.post("/v1/jobs", json={"prompt": "[fail]", "num_inference_steps": 2}).json()["id"]
    for job_id in ids:
        assert wait_job(client.get, job_id)["status"] == "succeeded"
    assert wait_job(client.get, failed)["status"] == "failed"
    after = _samples(client)
    assert after[("imagegen_jobs", (("status", "succeeded"),))] == 3
    assert after[("imagegen_jobs", (("status", "failed"),))] == 1
    assert after[("imagegen_jobs_ended_total", (("status", "succeeded"),))] == 3
    assert after[("imagegen_jobs_ended_total", (("status", "failed"),))] == 1
    assert after[("imagegen_images_total", ())] == 6
    # 4 steps timed per 5-step job (the first step has no predecessor), each at least the fake's 20 ms sleep.
    assert after[("imagegen_step_seconds_count", ())] == 12
    assert after[("imagegen_step_seconds_bucket", (("le", "0.01"),))] == 0
    assert after[("imagegen_job_seconds_count", ())] == 4
    assert after[("imagegen_batch_jobs_count", ())] == 4  # the fake engine has no batches: one job per run
    assert after[("imagegen_batch_jobs_sum", ())] == 4


def test_metrics_count_a_worker_restart_and_keep_counting_after_it(client, settings) -> None:
    done = client.post("/v1/jobs", json={"prompt": "before", "num_inference_steps": 2}).json()["id"]
    wait_job(client.get, done)
    with sqlite3.connect(settings.database) as db:
        (pid,) = db.execute("SELECT pid FROM workers WHERE state = 'ready'").fetchone()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _samples(client)[("imagegen_worker_restarts_total", ())] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    wait_ready(client.get)
    again = client.post("/v1/jobs", json={"prompt": "after", "num_inference_steps": 2}).json()["id"]
    wait_job(client.get, again)
    after = _samples(client)
    # The dead worker's counts stay in: counters never go down while the server runs.
    assert after[("imagegen_jobs_ended_total", (("status", "succeeded"),))] == 2
    assert after[("imagegen_worker_restarts_total", ())] == 1


def test_metrics_need_the_key_when_keys_are_on(make_client) -> None:
    client = make_client(api_keys=("secret",))
    assert client.get("/metrics").status_code == 401
    assert _samples(client, headers={"Authorization": "Bearer secret"})[("imagegen_queue_depth", ())] == 0


def test_a_request_id_follows_its_job_into_the_worker_s_log(server) -> None:
    submitted = server.post(
        "/v1/jobs", json={"prompt": "traced", "num_inference_steps": 2}, headers={"X-Request-ID": "trace-4711"}
    )
    assert submitted.headers["x-request-id"] == "trace-4711"
    job = wait_job(server.get, submitted.json()["id"])
    assert job["request_id"] == "trace-4711"
    assert "request_id" not in job["request"]  # not a request field
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    worker_lines = [line for line in lines if line["logger"] == "imagegen.worker" and line.get("job") == job["id"]]
    assert {line["msg"] for line in worker_lines} >= {"job started", "job succeeded"}
    assert all(line["request_id"] == "trace-4711" for line in worker_lines)
    access = [line for line in lines if line.get("path") == "/v1/jobs" and line.get("method") == "POST"]
    assert access[-1]["request_id"] == "trace-4711"
    # Jobs from different requests still share a batch: the id is not part of the batch key.
    assert batch_key({"prompt": "a", "request_id": "x"}) == batch_key({"prompt": "b", "request_id": "y"})
