"""Faults under load, bounded (``bench/faults.py`` is the long run on the demo model): ``kill -9`` of the worker in the
middle of jobs, ``kill -9`` of the API process, SIGTERM while clients keep submitting, and a full disk under the data
directory (a small tmpfs; needs root). Clients are those of the load benchmarks (:mod:`support.load`): they follow
their jobs by polls, SSE and long polls, retry through outages with their Idempotency-Key, and report every accepted
job the server later does not know.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from support.faults import (
    fill_disk,
    integrity_check,
    kill_worker_mid_job,
    running_jobs,
    tmpfs,
    tmpfs_unavailable,
    wait_mid_run,
    wait_resumed,
)
from support.load import LoadThread, final_states
from support.server_harness import WAIT, ServerProcess, wait_job

pytestmark = pytest.mark.slow

#: One second per job (20 fake steps of 50 ms): long enough to be caught mid-run, short enough for a test.
BODY = {"prompt": "under load [sleep=0.05]", "num_inference_steps": 20}
CLIENTS = 3


def _gone(pid: int) -> bool:
    """The process has exited (a zombie awaiting its reaper counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + WAIT
    while not _gone(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _follow_events(url: str, job_id: str, names: list[str]) -> None:
    """Append the event names of a job's SSE stream to ``names`` until the server ends the stream."""
    with (
        contextlib.suppress(httpx.TransportError),
        httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", timeout=WAIT) as stream,
    ):
        for line in stream.iter_lines():
            if line.startswith("event: ") and line != "event: keepalive":
                names.append(line.removeprefix("event: "))


def test_worker_killed_mid_job_again_and_again_under_load(make_server, tmp_path: Path) -> None:
    server = make_server().start()
    database = tmp_path / "data" / "jobs.sqlite3"
    load = LoadThread(server.url, CLIENTS, BODY).start()
    kills = []
    try:
        for step in (3, 9, 15):
            # A job on its first attempt, so the kill re-queues it (a second kill of the same job fails it).
            kill = kill_worker_mid_job(database, min_step=step, timeout=WAIT, first_attempt=True)
            kills.append(kill)
            _wait_gone(kill.pid)
            wait_resumed(database, kill.at, timeout=WAIT)
    finally:
        stats = load.stop(WAIT)

    assert len({kill.pid for kill in kills}) == 3  # three worker processes, each restarted
    outcome = final_states(server.url, stats.accepted)
    assert outcome.lost == 0, outcome
    assert outcome.succeeded == outcome.accepted, outcome  # no job failed: each killed one ran again, and once
    for kill in kills:
        (victim,) = kill.jobs  # the fake engine runs one job at a time
        assert 0 < kill.step < kill.total_steps
        job = server.get(f"/v1/jobs/{victim.id}").json()
        assert (job["status"], job["attempts"]) == ("succeeded", 2), job
        assert server.get(job["images"][0].replace(server.url, "")).status_code == 200
    killed = {job.id for kill in kills for job in kill.jobs}
    others = [server.get(f"/v1/jobs/{job_id}").json() for job_id in stats.accepted if job_id not in killed]
    assert others
    assert all(job["attempts"] == 1 for job in others)
    assert stats.missing == []
    assert stats.bad_downloads == 0
    assert server.get("/readyz").status_code == 200


def test_api_killed_under_load_restarts_and_recovers_the_running_job(make_server, tmp_path: Path) -> None:
    server = make_server().start()
    database = tmp_path / "data" / "jobs.sqlite3"
    load = LoadThread(server.url, CLIENTS, BODY).start()
    try:
        (victim,) = wait_mid_run(database, min_step=5, timeout=WAIT)
        server.kill()
        killed_at = time.time()
        # Its worker notices (the control pipe closes) and exits: no orphan keeps generating.
        _wait_gone(victim.pid)
        server.start()
        wait_resumed(database, killed_at, timeout=WAIT)
    finally:
        stats = load.stop(WAIT)

    assert stats.retries > 0  # the clients did meet the dead server
    outcome = final_states(server.url, stats.accepted)
    assert outcome.lost == 0, outcome
    assert outcome.succeeded == outcome.accepted, outcome
    job = server.get(f"/v1/jobs/{victim.id}").json()
    assert (job["status"], job["attempts"]) == ("succeeded", 2), job
    # A submit retried across the outage (same Idempotency-Key) made no second job: the store holds what was accepted.
    assert server.get("/v1/jobs").json()["total"] == len(set(stats.accepted))
    assert stats.missing == []
    assert stats.bad_downloads == 0


def test_sigterm_under_load_finishes_the_running_job_and_loses_none(make_server, tmp_path: Path) -> None:
    server = make_server().start()
    database = tmp_path / "data" / "jobs.sqlite3"
    load = LoadThread(server.url, CLIENTS, BODY).start()
    try:
        (running,) = wait_mid_run(database, min_step=3, timeout=WAIT)
        # Two more jobs, so that the last one surely waits in the queue when the signal comes; a client follows it.
        waiting = [server.post("/v1/jobs", json={"prompt": f"waiting {i}"}).json()["id"] for i in range(2)]
        events: list[str] = []
        follower = threading.Thread(target=_follow_events, args=(server.url, waiting[-1], events))
        follower.start()
        _wait_until(lambda: events == ["queued"])
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(WAIT) == 0
        stopped_at = time.time()
        assert running_jobs(database) == []  # the drain finished it: nothing is left "running"
        # The stream of the job left queued ended with the server (no last event: it runs after the restart), and no
        # open connection held the exit up until uvicorn's graceful-shutdown timeout.
        follower.join(WAIT)
        assert events == ["queued"]
        assert "graceful shutdown exceeded" not in server.log()
        server.start()
    finally:
        stats = load.stop(WAIT)

    assert stats.refused[503] > 0 or stats.retries > 0  # the clients met the drain or the stopped server
    outcome = final_states(server.url, stats.accepted)
    assert outcome.lost == 0, outcome
    assert outcome.succeeded == outcome.accepted, outcome
    job = server.get(f"/v1/jobs/{running.id}").json()
    # Finished during the drain, in its first attempt, not run again after the restart.
    assert (job["status"], job["attempts"]) == ("succeeded", 1), job
    assert job["finished_at"] < stopped_at
    assert [wait_job(server.get, job_id)["status"] for job_id in waiting] == ["succeeded"] * 2
    assert stats.missing == []


def _wait_for_log(server: ServerProcess, text: str, *, alive: int) -> None:
    """Wait for ``text`` in the server's log while process ``alive`` must not die."""
    deadline = time.monotonic() + WAIT
    while text not in server.log():
        assert not _gone(alive), f"process {alive} died before logging {text!r}"
        assert time.monotonic() < deadline, f"never logged: {text!r}"
        time.sleep(0.05)


def _png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.skipif(tmpfs_unavailable() is not None, reason=f"needs a tmpfs data directory: {tmpfs_unavailable()}")
def test_full_disk_fails_clearly_keeps_the_database_sound_and_recovers_without_restart(
    make_server, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    with tmpfs(data, size_mib=16):
        server = make_server(data_dir=data).start()
        database = data / "jobs.sqlite3"
        running = server.post("/v1/jobs", json={**BODY, "seed": 1}).json()
        queued = server.post("/v1/jobs", json={"prompt": "waits in the queue", "seed": 2}).json()
        (holder,) = wait_mid_run(database, min_step=3, timeout=WAIT)
        filler = fill_disk(data)
        try:
            # 1. Submits (with and without an input image) are refused, saying why, and store nothing.
            answers = [
                server.post("/v1/jobs", json={"prompt": "while full", "seed": 3}),
                server.post("/v1/jobs", json={"prompt": "while full", "init_image": _png_data_uri(), "seed": 4}),
            ]
            accepted = [answer.json()["id"] for answer in answers if answer.status_code == 202]
            refused = [answer for answer in answers if answer.status_code != 202]
            assert refused, "every submit was stored while the disk was full: the test did not fill it"
            for answer in refused:
                assert answer.status_code == 507, answer.text
                assert answer.headers["retry-after"]
                error = answer.json()["error"]
                assert error["code"] == "disk_full"
                assert str(data) in error["message"]
                assert "not stored" in error["message"]
            assert list((data / "inputs").iterdir()) == []  # the refused input image was not left behind
            # 2. The running job cannot record its progress or save its image: its worker holds it, alive.
            _wait_for_log(server, "disk full: cannot record the job's end", alive=holder.pid)
            assert server.get("/readyz").status_code == 200
        finally:
            filler.unlink()

        # 3. Space is back: the failure is recorded and explained, nothing else is lost, no restart needed.
        failed = wait_job(server.get, running["id"])
        assert failed["status"] == "failed", failed
        assert failed["error"]["code"] == "disk_full"
        assert str(data) in failed["error"]["message"]
        assert failed["images"] == []
        assert failed["attempts"] == 1
        leftovers = [path.name for path in (data / "images").iterdir() if path.name.startswith((".", running["id"]))]
        assert leftovers == []  # neither a partial file nor an image of the failed job
        assert wait_job(server.get, queued["id"])["status"] == "succeeded"
        for job_id in accepted:  # stored after all (a write found room): it must then run like any other
            assert wait_job(server.get, job_id)["status"] == "succeeded"
        after = server.post("/v1/jobs", json={"prompt": "after the space came back", "seed": 5}).json()
        done = wait_job(server.get, after["id"])
        assert done["status"] == "succeeded", done
        assert server.get(done["images"][0].replace(server.url, "")).content.startswith(b"\x89PNG")
        assert integrity_check(database) == "ok"
        assert server.terminate() == 0
        assert integrity_check(database) == "ok"
        assert not os.listdir(data / "inputs")


@pytest.mark.skipif(tmpfs_unavailable() is not None, reason=f"needs a tmpfs data directory: {tmpfs_unavailable()}")
def test_worker_killed_while_the_disk_is_full_has_its_job_released_once_space_returns(
    make_server, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    with tmpfs(data, size_mib=16):
        server = make_server(data_dir=data).start()
        database = data / "jobs.sqlite3"
        job = server.post("/v1/jobs", json={"prompt": "long [sleep=0.2]", "num_inference_steps": 50}).json()
        (victim,) = wait_mid_run(database, min_step=2, timeout=WAIT)
        filler = fill_disk(data)
        try:
            os.kill(victim.pid, signal.SIGKILL)
            # The supervisor cannot write the release: it must keep trying, not forget the dead worker's job.
            _wait_for_log(server, "supervisor check failed", alive=server.process.pid)
        finally:
            filler.unlink()
        # Re-queued (the kill counts as an attempt) and run again by a new worker.
        wait_job(server.get, job["id"], until=lambda j: j["status"] == "running" and j["attempts"] == 2)
        server.delete(f"/v1/jobs/{job['id']}")
        assert wait_job(server.get, job["id"])["status"] == "cancelled"
        after = server.post("/v1/jobs", json={"prompt": "the queue goes on"}).json()
        assert wait_job(server.get, after["id"])["status"] == "succeeded"
        assert integrity_check(database) == "ok"
        assert server.terminate() == 0
