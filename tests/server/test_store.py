"""The job store on its own, on SQLite and on PostgreSQL alike: atomic claims across connections, recovery rules,
batching-ready claims. (PostgreSQL's own cases: test_store_postgres.py.)"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator

import pytest

from imagegen.server.jobs.model import JobStatus, Preview
from imagegen.server.jobs.store import Insert, JobStore, StoreVersionMismatch


@pytest.fixture
def db(tmp_path):
    return tmp_path / "jobs.sqlite3"


@pytest.fixture(params=["sqlite", "postgresql"])
def new_store(request: pytest.FixtureRequest, db) -> Iterator[Callable[[], JobStore]]:
    """Opens another store on this test's database (each one its own connections, as another process would)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    opened: list[JobStore] = []

    def make() -> JobStore:
        if url is None:
            store = JobStore(db)
        else:
            from imagegen.server.jobs.store_postgres import PostgresDatabase

            store = JobStore(PostgresDatabase(url))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def _add(store, job_id, *, key="", max_queue=100, **kwargs):
    outcome, job = store.insert(
        job_id=job_id,
        dialect="native",
        model="m",
        request={"prompt": job_id},
        batch_key=key,
        max_queue=max_queue,
        **kwargs,
    )
    return outcome, job


def test_each_job_is_claimed_by_exactly_one_worker(new_store):
    setup = new_store()
    for i in range(40):
        _add(setup, f"job{i:02d}")
    claimed: dict[str, list[str]] = {}

    def work(name):
        store = new_store()  # one connection per worker, as in separate processes
        mine = claimed.setdefault(name, [])
        while jobs := store.claim(name):
            mine.extend(job.id for job in jobs)
        store.close()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [job_id for ids in claimed.values() for job_id in ids]
    assert sorted(everything) == [f"job{i:02d}" for i in range(40)]
    assert setup.count(JobStatus.RUNNING) == 40


def test_claim_is_fifo_and_batches_only_consecutive_compatible_jobs(new_store):
    store = new_store()
    for job_id, key in (("a", "k1"), ("b", "k1"), ("c", "k2"), ("d", "k1")):
        _add(store, job_id, key=key)
    assert [j.id for j in store.claim("w", max_jobs=4)] == ["a", "b"]
    assert [j.id for j in store.claim("w", max_jobs=4)] == ["c"]
    assert [j.id for j in store.claim("w")] == ["d"]
    assert store.claim("w") == []


def test_queue_bound_and_idempotency_in_one_transaction(new_store):
    store = new_store()
    assert _add(store, "a", max_queue=1, idempotency_key="k", body_digest="d1")[0] is Insert.CREATED
    assert _add(store, "b", max_queue=1)[0] is Insert.FULL
    outcome, job = _add(store, "c", max_queue=1, idempotency_key="k", body_digest="d1")
    assert (outcome, job.id) == (Insert.EXISTING, "a")
    assert _add(store, "d", max_queue=1, idempotency_key="k", body_digest="d2")[0] is Insert.CONFLICT


def test_release_requeues_then_fails_and_a_stale_worker_cannot_finish(new_store):
    store = new_store()
    _add(store, "a")
    store.claim("w1")
    requeued, ended = store.release(retries=1, worker="w1")
    assert [j.id for j in requeued] == ["a"]
    assert store.get("a").status is JobStatus.QUEUED
    # The dead worker's late write is ignored: it no longer holds the job.
    assert store.finish("a", "w1", JobStatus.SUCCEEDED) is False
    store.claim("w2")
    assert store.get("a").attempts == 2
    requeued, ended = store.release(retries=1)  # after a restart: any worker
    assert [j.id for j in ended] == ["a"]
    failed = store.get("a")
    assert (failed.status, failed.error_code) == (JobStatus.FAILED, "worker_lost")


def test_orderly_stop_does_not_count_an_attempt_and_cancel_wins(new_store):
    store = new_store()
    _add(store, "a")
    _add(store, "b")
    store.claim("w")
    store.release(retries=0, worker="w", penalize=False)
    assert (store.get("a").status, store.get("a").attempts) == (JobStatus.QUEUED, 0)
    store.claim("w")
    store.cancel("a")  # running: only flagged
    assert store.get("a").status is JobStatus.RUNNING
    assert store.cancel_requested("a")
    _, ended = store.release(retries=5, worker="w")
    assert [j.id for j in ended] == ["a"]
    assert store.get("a").status is JobStatus.CANCELLED
    assert store.cancel("b").status is JobStatus.CANCELLED  # queued: at once
    assert store.queue_position("b") is None


def test_progress_and_queue_position(new_store):
    store = new_store()
    for job_id in "abc":
        _add(store, job_id)
    assert [store.queue_position(j) for j in "abc"] == [0, 1, 2]
    store.claim("w")
    assert store.set_progress("a", "w", 3, 4) is True
    job = store.get("a")
    assert (job.step, job.total_steps, job.progress) == (3, 4, 0.75)
    assert store.set_progress("a", "intruder", 4, 4) is False  # not its job: it stops running it
    assert store.get("a").step == 3
    assert [store.queue_position(j) for j in "bc"] == [0, 1]


def test_a_database_of_another_schema_version_is_refused(db):
    import sqlite3

    JobStore(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreVersionMismatch, match="schema version 99"):
        JobStore(db)


def test_a_read_does_not_wait_for_another_threads_write(new_store):
    """A status read on the event loop must not queue behind a write transaction held by another thread."""
    import threading

    store = new_store()
    outcome, job = store.insert(
        job_id="a" * 32, dialect="native", model="m", request={"prompt": "x"}, batch_key="", max_queue=8
    )
    assert outcome is Insert.CREATED
    writing, release = threading.Event(), threading.Event()

    def hold_a_write() -> None:
        with store._write():
            writing.set()
            release.wait(30)

    writer = threading.Thread(target=hold_a_write)
    writer.start()
    assert writing.wait(10)
    read: list[object] = []
    reader = threading.Thread(target=lambda: read.append(store.get("a" * 32)))
    reader.start()
    reader.join(10)  # generous: a read that waited would wait for `release`, set only below
    finished = not reader.is_alive()
    release.set()
    writer.join(10)
    reader.join(10)
    assert finished
    assert read[0] == job
    store.close()


def _preview(step: int, image: bytes = b"jpeg") -> Preview:
    return Preview(step=step, total_steps=10, media_type="image/jpeg", image=image)


def test_a_preview_is_kept_only_while_its_worker_runs_the_job(new_store):
    store = new_store()
    _add(store, "a")
    store.set_preview("a", "w", _preview(1))  # queued: nobody holds it
    assert store.preview("a") is None
    store.claim("w")
    store.set_preview("a", "other", _preview(2))  # not the holder
    assert store.preview("a") is None
    store.set_preview("a", "w", _preview(2, b"two"))
    store.set_preview("a", "w", _preview(4, b"four"))  # the latest replaces the earlier
    assert store.preview("a") == _preview(4, b"four")
    assert store.finish("a", "w", JobStatus.SUCCEEDED)
    assert store.preview("a") is None  # the result is the picture now


def test_a_requeued_or_failed_job_loses_its_preview(new_store):
    store = new_store()
    _add(store, "a")
    _add(store, "b")
    store.claim("w", max_jobs=1)
    store.claim("v", max_jobs=1)
    store.set_preview("a", "w", _preview(3))
    store.set_preview("b", "v", _preview(5))
    requeued, ended = store.release(retries=1, worker="w")
    assert [job.id for job in requeued] == ["a"]
    assert ended == []
    assert store.preview("a") is None  # the retry starts over
    assert store.preview("b") == _preview(5)  # another worker's job keeps its own
    requeued, ended = store.release(retries=0, worker="v", fail_as=("timeout", "too long"))
    assert [job.id for job in ended] == ["b"]
    assert store.preview("b") is None


def test_an_older_database_gets_the_previews_table_as_it_opens(db):
    import sqlite3

    JobStore(db).close()
    with sqlite3.connect(db) as connection:
        connection.execute("DROP TABLE previews")  # a database made before previews existed
    store = JobStore(db)
    _add(store, "a")
    store.claim("w")
    store.set_preview("a", "w", _preview(1))
    assert store.preview("a") == _preview(1)


def test_counts_and_lookups_of_unknown_jobs(new_store):
    store = new_store()
    assert (store.count(), store.count_by_status(), store.get("nope")) == (0, {}, None)
    assert store.cancel_requested("nope") is True  # a job that is gone must stop
    for job_id in "abc":
        _add(store, job_id)
    store.claim("w")
    store.finish("a", "w", JobStatus.SUCCEEDED, images=["a-0.png"], seeds=[7], infotexts=["t"], warnings=["w"])
    store.claim("w")
    assert store.cancel_requested("b") is False
    store.cancel("b")
    assert store.cancel_requested("b") is True
    assert store.count() == 3
    assert store.count(JobStatus.QUEUED) == 1
    assert store.count_by_status() == {JobStatus.SUCCEEDED: 1, JobStatus.RUNNING: 1, JobStatus.QUEUED: 1}
    done = store.get("a")
    assert (done.images, done.seeds, done.infotexts, done.warnings) == (("a-0.png",), (7,), ("t",), ("w",))


def test_a_batch_claim_stops_at_max_jobs_and_max_images(new_store):
    store = new_store()
    for job_id, images in (("a", 2), ("b", 3), ("c", 1), ("d", 1), ("e", 1)):
        store.insert(
            job_id=job_id,
            dialect="native",
            model="m",
            request={"prompt": job_id, "num_images": images},
            batch_key="k",
            max_queue=100,
        )
    assert [j.id for j in store.claim("w")] == ["a"]  # one job unless asked for more
    # 3 + 1 + 1 = 5 images fit in 5; the next job would make 6.
    assert [j.id for j in store.claim("w", max_jobs=8, max_images=5)] == ["b", "c", "d"]
    assert [j.id for j in store.claim("w", max_jobs=8, max_images=5)] == ["e"]
    for job_id in "fghij":
        _add(store, job_id, key="k")
    assert [j.id for j in store.claim("w", max_jobs=3)] == ["f", "g", "h"]
    assert [j.id for j in store.claim("w", max_jobs=2)] == ["i", "j"]
    assert all(job.started_at is not None for job in store.running())


def test_a_worker_whose_lease_ran_out_is_stale_until_it_beats_again(new_store, monkeypatch):
    import imagegen.server.jobs.store as store_module

    now = [1000.0]
    monkeypatch.setattr(store_module.time, "time", lambda: now[0])
    store = new_store()
    for job_id in "abc":
        _add(store, job_id)
    store.set_worker("alive", pid=1, state="ready")
    store.set_worker("idle", pid=2, state="ready")  # old too, but holds no job: nothing to release
    store.claim("alive")
    store.claim("ghost")  # never registered: its jobs are anybody's to release
    now[0] = 1010.0
    assert store.stale_workers(before=1005.0) == ["alive", "ghost"]
    assert store.stale_workers(before=1000.0) == ["ghost"]  # a beat at the cut-off is not stale
    store.heartbeat("alive")
    assert store.stale_workers(before=1005.0) == ["ghost"]
    assert store.worker("alive").updated_at == 1010.0
    store.release(retries=1, worker="ghost")
    assert store.stale_workers(before=2000.0) == ["alive"]


def test_live_workers_are_those_not_stopped_with_a_recent_sign_of_life(new_store, monkeypatch):
    import imagegen.server.jobs.store as store_module

    now = [1000.0]
    monkeypatch.setattr(store_module.time, "time", lambda: now[0])
    store = new_store()
    store.set_worker("b", pid=2, state="ready")
    store.set_worker("a", pid=1, state="starting")
    store.set_worker("gone", pid=3, state="stopped")
    now[0] = 1005.0
    store.set_worker("late", pid=4, state="error", detail="no model")
    assert [w.id for w in store.live_workers(since=1000.0)] == ["a", "b", "late"]
    assert [(w.id, w.state, w.detail) for w in store.live_workers(since=1001.0)] == [("late", "error", "no model")]


def test_a_lease_release_is_void_when_the_worker_beat_in_between(new_store, monkeypatch):
    import imagegen.server.jobs.store as store_module

    now = [1000.0]
    monkeypatch.setattr(store_module.time, "time", lambda: now[0])
    store = new_store()
    _add(store, "a")
    store.set_worker("slow", pid=7, state="ready")
    store.claim("slow")
    now[0] = 1010.0
    assert store.stale_workers(before=1005.0) == ["slow"]
    store.heartbeat("slow")  # lands between the reaper's look and its release
    assert store.release(retries=1, worker="slow", silent_since=1005.0) == ([], [])
    assert store.get("a").status is JobStatus.RUNNING
    now[0] = 1020.0
    requeued, ended = store.release(retries=1, worker="slow", silent_since=1015.0)
    assert ([j.id for j in requeued], ended) == (["a"], [])
    slow = store.worker("slow")
    assert (slow.state, slow.detail, slow.pid) == ("stopped", "lease expired", 0)
    assert store.live_workers(since=0) == []
    store.heartbeat("slow")  # it was only slow: live again (its job is gone: set_progress says so)
    slow = store.worker("slow")
    assert (slow.state, slow.detail, slow.updated_at) == ("ready", "", 1020.0)
    assert store.set_progress("a", "slow", 5, 10) is False
    store.set_worker("other", pid=8, state="error", detail="model_not_found")
    store.heartbeat("other")  # a beat changes no other state
    assert (store.worker("other").state, store.worker("other").detail) == ("error", "model_not_found")


def test_sqlite_readers_keep_a_small_page_cache(db):
    """One read connection per thread (40 in the API's pool): each caching SQLite's default 2 MiB of a growing
    database made the API's memory grow with the database under load."""
    from imagegen.server.jobs.store import READER_CACHE_KIB, SQLiteDatabase

    database = SQLiteDatabase(db)
    try:
        assert database._reader().execute("PRAGMA cache_size").fetchone()[0] == -READER_CACHE_KIB
        assert READER_CACHE_KIB <= 512
    finally:
        database.close()


def test_the_read_connections_of_ended_threads_are_closed(db):
    """Thread pools end idle threads and start new ones: their read connections must not pile up (each holds a
    page cache; they made the API's memory grow for as long as it ran)."""
    from imagegen.server.jobs.store import SQLiteDatabase

    database = SQLiteDatabase(db)
    try:
        for _ in range(5):
            thread = threading.Thread(target=database.read, args=("SELECT 1",))
            thread.start()
            thread.join()
        # Each new thread's reader closed the ended threads' ones: only the last ended thread's is left.
        assert len(database._reader_connections) == 1
        ended = [connection for _, connection in database._reader_connections]
        database.read("SELECT 1")  # a new thread's reader: the ended threads' are closed now
        assert [t for t, _ in database._reader_connections] == [threading.current_thread()]
        with pytest.raises(sqlite3.ProgrammingError):
            ended[0].execute("SELECT 1")
    finally:
        database.close()
