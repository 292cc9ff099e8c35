"""The PostgreSQL job store's own cases, on a real throw-away server (``postgres`` fixture; skipped without one):
several "nodes" claiming at once, the schema version, dropped connections, the URL setting and a real server.

What both backends share (every JobStore method's semantics) is tested on both in test_store.py.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from imagegen.cli import _serve_settings, build_parser
from imagegen.errors import InvalidRequest
from imagegen.server.jobs.model import JobStatus
from imagegen.server.jobs.store import JobStore, StoreUnavailable, StoreVersionMismatch, open_store
from imagegen.server.jobs.store_postgres import PostgresDatabase
from imagegen.server.settings import ServerSettings, redact_url
from support.postgres import PASSWORD, PostgresServer
from support.server_harness import ServerProcess, free_port, wait_job


def _store(url: str) -> JobStore:
    return JobStore(PostgresDatabase(url))


def test_two_nodes_claiming_from_four_threads_never_double_claim(postgres_url):
    """Two store objects (two API nodes), two claiming threads each, batches of consecutive same-key jobs."""
    nodes = [_store(postgres_url), _store(postgres_url)]
    # Runs of 1 to 4 jobs with the same batch key, so batch claims race on the boundaries too.
    keys = [f"k{run}" for run in range(30) for _ in range(run % 4 + 1)]
    for i, key in enumerate(keys):
        nodes[i % 2].insert(
            job_id=f"job{i:03d}", dialect="native", model="m", request={"prompt": "x"}, batch_key=key, max_queue=1000
        )
    claims: dict[str, list[list[str]]] = {}
    start = threading.Barrier(4)

    def work(name: str, store: JobStore) -> None:
        mine = claims.setdefault(name, [])
        start.wait()
        while jobs := store.claim(name, max_jobs=3):
            mine.append([job.id for job in jobs])

    threads = [threading.Thread(target=work, args=(f"n{i % 2}w{i}", nodes[i % 2])) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    batches = [batch for found in claims.values() for batch in found]
    claimed = [job_id for batch in batches for job_id in batch]
    assert sorted(claimed) == [f"job{i:03d}" for i in range(len(keys))]  # each exactly once
    for batch in batches:  # a batch is consecutive jobs of one key, as on SQLite
        numbers = [int(job_id[3:]) for job_id in batch]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert len({keys[n] for n in numbers}) == 1
    # Everybody holds what it claimed, and the store says so.
    assert nodes[0].count(JobStatus.RUNNING) == len(keys)
    for name, found in claims.items():
        held = {job.id for job in nodes[1].running() if job.worker == name}
        assert held == {job_id for batch in found for job_id in batch}
    assert len(claims) == 4
    assert all(claims.values())
    for node in nodes:
        node.close()


def test_a_queue_shared_by_two_nodes_stays_fifo_and_bounded(postgres_url):
    first, second = _store(postgres_url), _store(postgres_url)
    for i in range(4):
        (first if i % 2 else second).insert(
            job_id=f"j{i}", dialect="native", model="m", request={}, batch_key="", max_queue=4
        )
    outcome, _ = first.insert(job_id="j4", dialect="native", model="m", request={}, batch_key="", max_queue=4)
    assert outcome.value == "full"  # the bound counts the other node's jobs
    assert [second.queue_position(f"j{i}") for i in range(4)] == [0, 1, 2, 3]
    order = [job.id for _ in range(4) for job in (first, second)[_ % 2].claim("w")]
    assert order == ["j0", "j1", "j2", "j3"]
    first.close()
    second.close()


def test_a_database_of_another_schema_version_is_refused(postgres: PostgresServer, postgres_url):
    _store(postgres_url).close()
    database = postgres_url.rsplit("/", 1)[1]
    postgres.admin("UPDATE store_version SET version = 99", database=database)
    with pytest.raises(StoreVersionMismatch, match="schema version 99") as refused:
        _store(postgres_url)
    assert PASSWORD not in str(refused.value)
    assert redact_url(postgres_url) in str(refused.value)


def test_a_dropped_connection_is_recovered_on_the_next_call(postgres: PostgresServer, postgres_url):
    """pg_terminate_backend (a server restart, a proxy's idle timeout) between two calls: both connections come back."""
    store = _store(postgres_url)
    store.insert(job_id="a", dialect="native", model="m", request={}, batch_key="", max_queue=8)
    assert store.get("a") is not None  # the read connection is open too
    database = postgres_url.rsplit("/", 1)[1]

    def drop_connections() -> int:
        rows = postgres.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{database}' AND application_name = 'imagegen'",
        )
        return len(rows)

    assert drop_connections() == 2  # the store's write and read connections
    job = store.get("a")  # a read: retried on a new connection
    assert job is not None
    assert job.status is JobStatus.QUEUED
    assert [j.id for j in store.claim("w")] == ["a"]  # a write: reconnects before its first statement
    assert drop_connections() == 2
    assert store.finish("a", "w", JobStatus.SUCCEEDED)
    assert store.count_by_status() == {JobStatus.SUCCEEDED: 1}
    store.close()


def test_an_unreachable_database_is_a_clear_error_without_the_password(tmp_path):
    url = f"postgresql://imagegen:{PASSWORD}@127.0.0.1:{free_port()}/jobs"
    with pytest.raises(StoreUnavailable) as failed:
        open_store(ServerSettings(data_dir=tmp_path, store_url=url))
    message = str(failed.value)
    assert f"cannot use the job store postgresql://imagegen:***@127.0.0.1:{url.split(':')[3]}" in message
    assert PASSWORD not in message
    assert not (tmp_path / "jobs.sqlite3").exists()


def test_the_store_setting_flag_and_variable(tmp_path, monkeypatch: pytest.MonkeyPatch):
    url = f"postgresql://user:{PASSWORD}@db.internal:5432/imagegen"
    settings = ServerSettings(data_dir=tmp_path, store_url=url)
    assert settings.store_is_shared
    assert not ServerSettings(data_dir=tmp_path).store_is_shared
    assert ServerSettings(data_dir=tmp_path, store_url="postgres://db/imagegen").store_is_shared
    assert ServerSettings.from_worker_json(settings.worker_json()).store_url == url  # the workers open it too
    assert PASSWORD not in repr(settings)
    for bad in ("mysql://user:pw@db/x", "jobs.sqlite3", "", "postgresql:/db"):
        with pytest.raises(InvalidRequest, match="postgresql://USER:PASSWORD@HOST:PORT/DATABASE") as refused:
            ServerSettings(data_dir=tmp_path, store_url=bad)
        assert refused.value.field == "store"
        assert "pw@" not in str(refused.value)
    parse: Callable[[list[str]], object] = build_parser().parse_args
    assert _serve_settings(parse(["serve", "--data-dir", str(tmp_path)])).store_url is None
    monkeypatch.setenv("IMAGEGEN_STORE", url)
    assert _serve_settings(parse(["serve", "--data-dir", str(tmp_path)])).store_url == url
    other = "postgres://other/db"
    assert _serve_settings(parse(["serve", "--data-dir", str(tmp_path), "--store", other])).store_url == other


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgres://h/db?password=pw&sslmode=require", "postgres://h/db?password=***&sslmode=require"),
        ("postgresql://u:p%40w@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_urls_are_shown_without_their_password(url, shown):
    assert redact_url(url) == shown


def test_serve_with_a_postgres_store_runs_a_job_into_postgres(make_server, postgres: PostgresServer, postgres_url):
    server: ServerProcess = make_server("--store", postgres_url)
    server.start()
    submitted = server.post("/v1/jobs", json={"prompt": "queued in postgres", "seed": 3, "num_inference_steps": 2})
    assert submitted.status_code == 202, submitted.text
    job = wait_job(server.get, submitted.json()["id"])
    assert job["status"] == "succeeded", job
    assert server.get(job["images"][0].replace(server.url, "")).status_code == 200  # the image is in the data dir
    database = postgres_url.rsplit("/", 1)[1]
    rows = postgres.admin(f"SELECT status, worker FROM jobs WHERE id = '{job['id']}'", database=database)
    assert len(rows) == 1
    assert rows[0][0] == "succeeded"
    assert rows[0][1]
    assert postgres.admin("SELECT count(*) FROM workers", database=database)[0][0] >= 1  # the worker wrote there
    server.terminate()
    log = server.log()
    assert f"store:   {redact_url(postgres_url)}" in log
    assert PASSWORD not in log
    assert not (Path(server.args[server.args.index("--data-dir") + 1]) / "jobs.sqlite3").exists()


def test_two_servers_share_one_queue_and_a_dead_nodes_job_is_run_by_the_other(make_server, postgres, postgres_url):
    """Two API nodes (each with its worker) on one PostgreSQL store and one data volume: a job submitted to one is
    seen from the other; when the node running it dies (API and worker killed), the other node's lease reaper
    re-queues the job and its worker runs it to the end."""
    first: ServerProcess = make_server("--store", postgres_url)
    data = first.args[first.args.index("--data-dir") + 1]
    second: ServerProcess = make_server("--store", postgres_url, data_dir=Path(data))
    first.start()
    second.start()  # the same data directory: servers of a shared store take no lock on it
    job = first.post("/v1/jobs", json={"prompt": "slow [sleep=0.2]", "num_inference_steps": 40}).json()
    running = wait_job(second.get, job["id"], until=lambda j: j["step"] >= 2)
    assert running["status"] == "running"
    database = postgres_url.rsplit("/", 1)[1]
    ((pid,),) = postgres.admin(
        f"SELECT w.pid FROM jobs j JOIN workers w ON w.id = j.worker WHERE j.id = '{job['id']}'", database=database
    )
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    owner, survivor = (first, second) if parent == first.process.pid else (second, first)
    assert parent == owner.process.pid
    owner.kill()  # the node dies: its API process, then its worker, without any clean-up
    os.kill(pid, signal.SIGKILL)
    done = wait_job(survivor.get, job["id"], timeout=60)
    assert (done["status"], done["attempts"]) == ("succeeded", 2), done
    assert survivor.get(done["images"][0].replace(survivor.url, "")).status_code == 200
    assert "worker lease expired" in survivor.log()
