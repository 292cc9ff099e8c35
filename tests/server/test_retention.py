"""Retention: finished jobs older than ``keep_results_hours`` go (rows, images, inputs, Idempotency-Keys), crash-safely.

Age is made by writing old timestamps into the store (and old mtimes onto files) or by moving a :class:`FakeClock`,
never by sleeping."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import replace

import pytest
from service_app import FakeClock, backdate, running_app, service_of

from imagegen.cli import _serve_settings, build_parser, main
from imagegen.errors import InvalidRequest
from imagegen.server.jobs.model import JobStatus
from imagegen.server.jobs.retention import STRAY_FILE_GRACE_SECONDS, RetentionReport
from imagegen.server.jobs.store import Insert, JobStore
from imagegen.server.settings import ServerSettings
from support.server_harness import WAIT, wait_job

DAY = 86400.0
HOUR = 3600.0


def _old_file(path, age=STRAY_FILE_GRACE_SECONDS + HOUR):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def _wait_gone(path):
    deadline = time.monotonic() + WAIT
    while path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not removed")
        time.sleep(0.05)


@pytest.fixture
def start(settings):
    """Start the app with overrides; returns its client once the retention thread's first sweep (at start) is over,
    which the removal of a planted old stray file shows, so that the test's own sweeps are the only ones left."""
    with ExitStack() as stack:

        def make(**overrides):
            clock = overrides.pop("clock", time.time)
            started = replace(settings, **overrides)
            marker = _old_file(started.images_dir / f"{uuid.uuid4().hex}-0.png")
            client = stack.enter_context(running_app(started, clock=clock))
            _wait_gone(marker)
            return client

        yield make


def _submit(client, prompt="kept", key=None, **body):
    headers = {"Idempotency-Key": key} if key else {}
    response = client.post("/v1/jobs", json={"prompt": prompt, **body}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _done(client, prompt="kept", key=None, **body):
    return wait_job(client.get, _submit(client, prompt, key, **body))


# --------------------------------------------------------------------------------------------------------------------
# The store on its own.


def _insert(store, job_id, key):
    return store.insert(
        job_id=job_id,
        dialect="native",
        model="m",
        request={"prompt": job_id},
        batch_key="",
        max_queue=100,
        idempotency_key=key,
        body_digest=job_id,
    )


def test_store_deletes_only_old_ended_jobs_oldest_first_and_frees_their_keys(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    for job_id in ("ok", "bad", "new", "run"):
        _insert(store, job_id, f"key-{job_id}")
    for job_id, status in (("ok", JobStatus.SUCCEEDED), ("bad", JobStatus.FAILED), ("new", JobStatus.SUCCEEDED)):
        assert [job.id for job in store.claim("w")] == [job_id]
        store.finish(job_id, "w", status, images=[f"{job_id}-0.png"])
    store.claim("w")  # "run" stays running
    _insert(store, "gone", "key-gone")
    store.cancel("gone")
    _insert(store, "wait", "key-wait")  # stays queued
    settings = ServerSettings(data_dir=tmp_path)
    backdate(settings, ["ok", "bad", "run", "gone", "wait"], 30 * DAY)
    cutoff = time.time() - 7 * DAY

    first = store.delete_finished(before=cutoff, limit=1)
    assert [job.id for job in first] == ["ok"]
    assert first[0].images == ("ok-0.png",)  # the caller removes the files after this
    rest = store.delete_finished(before=cutoff)
    assert sorted(job.id for job in rest) == ["bad", "gone"]
    assert store.delete_finished(before=cutoff) == []
    for job_id in ("ok", "bad", "gone"):
        assert store.get(job_id) is None
    assert [store.get(j).status for j in ("new", "run", "wait")] == [
        JobStatus.SUCCEEDED,
        JobStatus.RUNNING,
        JobStatus.QUEUED,
    ]
    assert store.existing(["ok", "new", "run", "nope", "new"]) == {"new", "run"}
    # A deleted job's Idempotency-Key is free again; a kept job's still answers with that job.
    assert _insert(store, "ok-again", "key-ok")[0] is Insert.CREATED
    assert _insert(store, "new-again", "key-new")[0] is Insert.CONFLICT
    store.close()


# --------------------------------------------------------------------------------------------------------------------
# The service.


class _Records(logging.Handler):
    """Records of one logger, whatever the logging configuration (``configure_logging`` stops propagation)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _logged(name):
    logger = logging.getLogger(name)
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_sweep_removes_old_ended_jobs_with_files_and_keys_and_keeps_the_rest(start, settings):
    # No job timeout: the backdated running job would look as if it had run for two days.
    client = start(keep_results_hours=24, cleanup_interval=3600, job_timeout=None)
    old = _done(client, "old", key="old-key", seed=1, num_images=2)
    failed = _done(client, "[fail]")
    recent = _done(client, "recent", num_images=2)
    assert (old["status"], failed["status"], recent["status"]) == ("succeeded", "failed", "succeeded")
    running = _submit(client, "blocker [sleep=0.1]", num_inference_steps=150)
    wait_job(client.get, running, until=lambda job: job["status"] == "running")
    queued = _submit(client, "behind the blocker")
    backdate(settings, [old["id"], failed["id"], running, queued], 2 * DAY)

    images = settings.images_dir
    stray_image = _old_file(images / f"{uuid.uuid4().hex}-3.png")
    stray_partial = _old_file(images / f".{uuid.uuid4().hex}-0.png.partial")
    stray_input = _old_file(settings.inputs_dir / f"{uuid.uuid4().hex}.png")
    young_stray = _old_file(images / f"{uuid.uuid4().hex}-0.png", age=60)
    not_ours = _old_file(images / "notes.txt")
    old_files = [images / f"{old['id']}-{i}.png" for i in range(2)]
    recent_files = [images / f"{recent['id']}-{i}.png" for i in range(2)]
    assert all(path.is_file() for path in old_files + recent_files)

    with _logged("imagegen.server") as records:
        report = service_of(client).retention.remove_expired()

    assert sorted(report.jobs) == sorted([old["id"], failed["id"]])
    assert (report.files, report.stray_files) == (2, 3)
    for job_id in (old["id"], failed["id"]):
        missing = client.get(f"/v1/jobs/{job_id}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
    assert client.get(f"/v1/images/{old['id']}-0.png").status_code == 404
    assert not any(path.exists() for path in [*old_files, stray_image, stray_partial, stray_input])
    assert all(path.exists() for path in [*recent_files, young_stray, not_ours])
    assert client.get(f"/v1/jobs/{recent['id']}").json()["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{running}").json()["status"] == "running"
    assert client.get(f"/v1/jobs/{queued}").json()["status"] == "queued"
    assert client.get("/v1/jobs").json()["total"] == 3
    # The old job's Idempotency-Key went with it: the same key and body make a new job.
    again = _submit(client, "old", key="old-key", seed=1, num_images=2)
    assert again != old["id"]

    [record] = [r for r in records if r.getMessage() == "removed expired results"]
    assert (record.removed_jobs, record.removed_files, record.stray_files) == (2, 2, 3)
    assert sorted(record.jobs) == sorted(report.jobs)
    client.delete(f"/v1/jobs/{running}")


def test_files_left_by_a_sweep_cut_short_go_with_the_next_one(start, settings):
    clock = FakeClock()
    client = start(keep_results_hours=1, cleanup_interval=3600, clock=clock)
    job = _done(client, num_images=2)
    files = [settings.images_dir / name.split("?")[0].rsplit("/", 1)[1] for name in job["images"]]
    assert all(path.is_file() for path in files)
    service = service_of(client)
    # The crash: the rows' transaction committed, the process died before removing the files.
    assert [j.id for j in service.store.delete_finished(before=float("inf"))] == [job["id"]]
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    # Young files without a row may belong to a job being submitted right now: kept for the grace period.
    assert service.retention.remove_expired() == RetentionReport()
    assert all(path.is_file() for path in files)
    clock.advance(STRAY_FILE_GRACE_SECONDS + 1)
    assert service.retention.remove_expired() == RetentionReport(stray_files=2)
    assert not any(path.exists() for path in files)


def test_sweeps_run_in_the_background(start, settings):
    client = start(keep_results_hours=1, cleanup_interval=0.05)
    job = _done(client)
    image = settings.images_dir / f"{job['id']}-0.png"
    assert image.is_file()
    backdate(settings, [job["id"]], 2 * HOUR)
    _wait_gone(image)
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404


def test_keep_results_zero_keeps_everything(make_client, settings):
    client = make_client(keep_results_hours=0)
    job = _done(client)
    backdate(settings, [job["id"]], 1000 * DAY)
    old_stray = _old_file(settings.images_dir / f"{uuid.uuid4().hex}-0.png")
    assert "imagegen-retention" not in {thread.name for thread in threading.enumerate()}
    assert service_of(client).retention.remove_expired() == RetentionReport()
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    assert old_stray.exists()


# --------------------------------------------------------------------------------------------------------------------
# Settings and flags.


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"keep_results_hours": -1}, "keep_results_hours"),
        ({"keep_results_hours": float("nan")}, "keep_results_hours"),
        ({"keep_results_hours": float("inf")}, "keep_results_hours"),
        ({"keep_results_hours": True}, "keep_results_hours"),
        ({"keep_results_hours": "168"}, "keep_results_hours"),
        ({"cleanup_interval": 0}, "cleanup_interval"),
    ],
)
def test_bad_retention_settings_name_the_setting(tmp_path, overrides, field):
    with pytest.raises(InvalidRequest) as error:
        ServerSettings(data_dir=tmp_path, **overrides)
    assert error.value.field == field


def test_keep_results_flag_and_help(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("IMAGEGEN_API_KEYS", raising=False)
    parse = build_parser().parse_args
    assert _serve_settings(parse(["serve", "--data-dir", str(tmp_path)])).keep_results_hours == 168
    assert _serve_settings(parse(["serve", "--data-dir", str(tmp_path), "--keep-results", "0"])).keep_results_hours == 0
    assert (
        _serve_settings(parse(["serve", "--data-dir", str(tmp_path), "--keep-results", "1.5"])).keep_results_hours
        == 1.5
    )
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--data-dir", str(tmp_path), "--keep-results", "-1"])
    assert exit_.value.code == 2
    assert (
        "argument --keep-results: must be a number of hours >= 0 (0 keeps results forever)" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--keep-results HOURS" in help_text
    assert "0 keeps them forever" in help_text
    assert "--url-ttl SECONDS" in help_text
