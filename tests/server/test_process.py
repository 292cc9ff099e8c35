"""``imagegen serve`` as a real process on a loopback port: HTTP client, kill -9 and restart, SIGTERM drain, logs."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from support.server_harness import wait_job


def test_happy_path_over_http_with_banner_and_access_log(server):
    response = server.post("/v1/jobs", json={"prompt": "over the wire", "seed": 9}, headers={"X-Request-ID": "abc-1"})
    assert response.status_code == 202
    assert response.headers["x-request-id"] == "abc-1"
    job = wait_job(server.get, response.json()["id"])
    assert job["status"] == "succeeded"
    image = server.get(job["images"][0].replace(server.url, ""))
    assert image.status_code == 200
    assert image.content.startswith(b"\x89PNG")

    log = server.log()
    assert f"imagegen serve: http://127.0.0.1:{server.port}" in log
    assert "auth:    OFF" in log
    assert "limits:  2048x2048 (4194304 pixels), 150 steps, 8 images per request" in log
    assert "fake-sd1" in log
    access = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"imagegen.access"' in line]
    posted = [entry for entry in access if entry["path"] == "/v1/jobs" and entry["method"] == "POST"]
    assert [(entry["status"], entry["request_id"]) for entry in posted] == [(202, "abc-1")]
    assert all(len(entry["request_id"]) == 32 for entry in access if entry not in posted)


def test_kill_9_with_queued_jobs_then_restart_runs_them_all(make_server):
    server = make_server().start()
    first = server.post("/v1/jobs", json={"prompt": "running [sleep=0.1]", "num_inference_steps": 150, "seed": 0})
    running_id = first.json()["id"]
    wait_job(server.get, running_id, until=lambda job: job["status"] == "running")
    ids = [
        server.post("/v1/jobs", json={"prompt": f"job {i}", "num_inference_steps": 4, "seed": i}).json()["id"]
        for i in range(1, 20)
    ]
    before = {job_id: server.get(f"/v1/jobs/{job_id}").json()["status"] for job_id in [running_id, *ids]}
    server.kill()
    assert before[running_id] == "running"
    assert [before[job_id] for job_id in ids] == ["queued"] * 19

    server.start()
    # The job that was running when the server died is not left "running": it runs again, as a second attempt.
    again = wait_job(server.get, running_id, until=lambda job: job["status"] == "running" and job["attempts"] == 2)
    assert again["step"] < 150
    server.delete(f"/v1/jobs/{running_id}")
    for i, job_id in enumerate(ids, start=1):
        job = wait_job(server.get, job_id)
        assert job["status"] == "succeeded", job
        assert job["seeds"] == [i]
        assert job["attempts"] == 1
        assert server.get(job["images"][0].replace(server.url, "")).status_code == 200
    assert wait_job(server.get, running_id)["status"] == "cancelled"
    assert server.get("/v1/jobs", params={"status": "running"}).json()["total"] == 0


@pytest.mark.parametrize("whole_group", [False, True], ids=["server", "process-group"])
def test_sigterm_drains_running_job_refuses_new_work_and_exits(make_server, whole_group):
    server = make_server().start()
    # Long enough (10 s) that the checks below land while it drains, even on a loaded machine.
    job = server.post("/v1/jobs", json={"prompt": "draining [sleep=0.2]", "num_inference_steps": 50}).json()
    wait_job(server.get, job["id"], until=lambda j: j["status"] == "running")
    queued = server.post("/v1/jobs", json={"prompt": "waits for the restart"}).json()
    if whole_group:  # systemd and `docker stop` of a shell wrapper signal the workers too
        os.killpg(server.process.pid, signal.SIGTERM)
    else:
        server.process.send_signal(signal.SIGTERM)

    deadline = time.monotonic() + 30
    while server.get("/readyz").status_code != 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.get("/readyz").json()["reason"] == "draining"
    refused = server.post("/v1/jobs", json={"prompt": "too late"})
    assert refused.status_code == 503
    assert "retry-after" in refused.headers
    assert server.process.wait(60) == 0

    server.start()
    assert server.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    assert server.get(f"/v1/jobs/{job['id']}").json()["attempts"] == 1
    assert wait_job(server.get, queued["id"])["status"] == "succeeded"
    assert server.get("/v1/jobs").json()["total"] == 2  # the refused job was never stored


def test_second_server_on_the_same_data_dir_is_refused(make_server):
    first = make_server().start()
    second = make_server()
    second.start(ready=False)
    assert second.process.wait(60) != 0
    assert "another imagegen server" in second.log()
    assert first.get("/readyz").status_code == 200


def test_no_auth_off_loopback_refuses_to_start(make_server):
    server = make_server("--host", "0.0.0.0")
    server.start(ready=False)
    assert server.process.wait(60) == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in server.log()
    try:
        httpx.get(server.url + "/healthz", timeout=1)
    except httpx.TransportError:
        pass
    else:
        raise AssertionError("nothing should listen")


def test_unknown_model_is_a_usage_error(make_server):
    server = make_server("--model", "no-such-model")
    server.start(ready=False)
    assert server.process.wait(60) == 2
    assert "argument --model" in server.log()


def test_events_stream_live_over_http(server):
    job = server.post("/v1/jobs", json={"prompt": "live [sleep=0.1]", "num_inference_steps": 6}).json()
    names = []
    with httpx.stream("GET", f"{server.url}/v1/jobs/{job['id']}/events", timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                names.append(line.removeprefix("event: "))
    assert names[-1] == "done"
    assert "started" in names
    assert names.index("started") < names.index("progress") < len(names) - 1


def test_second_sigterm_stops_now_and_the_job_is_requeued_without_penalty(make_server):
    server = make_server().start()
    job = server.post("/v1/jobs", json={"prompt": "long [sleep=0.1]", "num_inference_steps": 150}).json()
    wait_job(server.get, job["id"], until=lambda j: j["status"] == "running")
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while server.get("/readyz").status_code != 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0

    server.start()
    again = server.get(f"/v1/jobs/{job['id']}").json()
    assert again["status"] in ("queued", "running")
    assert again["attempts"] <= 1  # the interrupted run did not count
    server.delete(f"/v1/jobs/{job['id']}")
    assert wait_job(server.get, job["id"])["status"] == "cancelled"
