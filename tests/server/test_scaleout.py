"""The parts of scale-out that need no cluster: lease recovery, a shared store's start, the Ray pool's dispatching
(with a stand-in for Ray's handle), the Ray application's settings and scaling arguments, ``--replicas``."""

from __future__ import annotations

import threading
import time

import pytest

from imagegen.errors import InvalidRequest
from imagegen.options import EngineOptions
from imagegen.requests import Limits
from imagegen.server.jobs.leases import LeaseReaper
from imagegen.server.jobs.model import JobStatus
from imagegen.server.jobs.store import JobStore
from imagegen.server.services import DataDirInUse, Services
from imagegen.server.settings import ServerSettings


def _queue(store: JobStore, *ids: str) -> None:
    for job_id in ids:
        store.insert(
            job_id=job_id, dialect="native", model="m", request={"prompt": job_id}, batch_key="", max_queue=100
        )


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_reaper_releases_only_workers_whose_lease_ran_out(tmp_path, monkeypatch, caplog):
    import imagegen.server.jobs.store as store_module

    clock = _Clock(1000.0)
    monkeypatch.setattr(store_module.time, "time", clock)
    settings = ServerSettings(data_dir=tmp_path, worker_lease=5.0, job_retries=1)
    store = JobStore(settings.database)
    _queue(store, "a", "b", "c")
    for worker in ("dead", "alive"):
        store.set_worker(worker, pid=1, state="ready")
    store.claim("dead")
    store.release(retries=1, worker="dead")  # "a" ran once before: its retry is spent after this attempt
    assert [j.id for j in store.claim("dead")] == ["a"]
    assert [j.id for j in store.claim("alive")] == ["b"]
    assert [j.id for j in store.claim("dead")] == ["c"]
    clock.now = 1004.0
    store.heartbeat("alive")
    clock.now = 1006.0
    reaper = LeaseReaper(settings, store, clock=clock)
    assert reaper.sweep() == ["dead"]
    assert reaper.expired == 1
    jobs = {job.id: job for job in store.list_jobs(limit=10)}
    assert jobs["b"].status is JobStatus.RUNNING
    assert jobs["b"].worker == "alive"
    assert (jobs["a"].status, jobs["a"].error_code) == (JobStatus.FAILED, "worker_lost")
    assert (jobs["c"].status, jobs["c"].worker) == (JobStatus.QUEUED, None)
    dead = store.worker("dead")
    assert (dead.state, dead.detail, dead.pid) == ("stopped", "lease expired", 0)
    (record,) = [r for r in caplog.records if r.getMessage() == "worker lease expired; its jobs were released"]
    assert (record.worker, record.requeued, record.ended) == ("dead", ["c"], ["a"])
    assert reaper.sweep() == []  # released once
    clock.now = 1009.5  # the live worker's lease runs out too, once it stops beating
    assert reaper.sweep() == ["alive"]
    assert reaper.expired == 2


def test_the_reaper_thread_sweeps_every_half_lease(tmp_path):
    settings = ServerSettings(data_dir=tmp_path, worker_lease=1.0)
    store = JobStore(settings.database)
    _queue(store, "a")
    store.claim("ghost")  # a worker that never registered
    LeaseReaper(settings, store).stop()  # stopping one never started is harmless
    reaper = LeaseReaper(settings, store)
    reaper.start()
    (thread,) = [t for t in threading.enumerate() if t.name == "imagegen-lease-reaper"]
    assert thread.daemon  # never keeps a stopping server alive
    try:
        deadline = time.monotonic() + 5
        while store.get("a").status is not JobStatus.QUEUED:
            assert time.monotonic() < deadline, "the reaper thread never released the job"
            time.sleep(0.05)
    finally:
        reaper.stop()
    assert not thread.is_alive()


class _IdlePool:
    """A WorkerPool that runs nothing (the tests look at what the services do around it)."""

    restarts = 0

    def __init__(self, settings, store, default_model, draining) -> None:
        self.store = store
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 10.0) -> None:
        self.started = False

    def drain(self) -> None: ...

    def wake(self) -> None: ...

    def drained(self) -> bool:
        return True

    def wait_drained(self, timeout: float) -> bool:
        return True

    def readiness(self):
        return "ready"

    def workers(self):
        return []


def test_servers_sharing_a_store_leave_each_others_running_jobs_alone(settings):
    settings = ServerSettings(**{**settings.__dict__, "worker_lease": 5.0})
    store = JobStore(settings.database)
    _queue(store, "live", "stale")
    store.set_worker("other-node", pid=1, state="ready")
    store.claim("other-node")
    store.claim("gone-node")  # no heartbeat at all
    first = Services(settings, pool=_IdlePool, shared=True)
    second = Services(settings, pool=_IdlePool, shared=True)
    first.start()
    try:
        second.start()  # no data directory lock between servers of one store
        assert store.get("live").status is JobStatus.RUNNING  # its worker beats: not taken back
        assert store.get("stale").status is JobStatus.QUEUED
        assert first.supervisor.started
        assert second.supervisor.started
        with pytest.raises(DataDirInUse, match="sharing a job store"):  # a server of its own would steal their jobs
            Services(settings, pool=_IdlePool).start()
        second.stop()
    finally:
        first.stop()


def test_a_server_of_its_own_store_takes_back_every_running_job_and_locks_the_data_dir(settings):
    store = JobStore(settings.database)
    _queue(store, "live")
    store.set_worker("w", pid=1, state="ready")
    store.claim("w")
    services = Services(settings, pool=_IdlePool)
    services.start()
    try:
        assert store.get("live").status is JobStatus.QUEUED
        with pytest.raises(DataDirInUse):
            Services(settings, pool=_IdlePool).start()
        with pytest.raises(DataDirInUse, match="alone"):
            Services(settings, pool=_IdlePool, shared=True).start()
    finally:
        services.stop()


# The Ray application's arguments ------------------------------------------------------------------------------------

ray_app = pytest.importorskip("imagegen.server.rayserve.app", reason="Ray Serve is not installed (the 'ray' extra)")


def test_settings_travel_to_the_replicas_and_back(tmp_path):
    settings = ServerSettings(
        data_dir=tmp_path,
        models=("a", "b"),
        api_keys=("k1",),
        basic_auth=(("alice", "pw"),),
        limits=Limits(max_steps=20),
        engine=EngineOptions(device="cpu", max_loaded=3),
        job_timeout=None,
        worker_lease=7.0,
    )
    args = ray_app.settings_to_args(settings)
    assert ray_app.settings_from_args(args, environ={}) == settings


def test_partial_settings_keep_defaults_and_keys_may_come_from_the_environment(tmp_path):
    settings = ray_app.settings_from_args(
        {"data_dir": str(tmp_path), "engine": {"device": "cpu"}}, environ={"IMAGEGEN_API_KEYS": "k1, k2,"}
    )
    assert settings.max_queue == ServerSettings().max_queue
    assert settings.engine == EngineOptions(device="cpu")
    assert settings.api_keys == ("k1", "k2")


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"max_queeu": 3}, "settings.max_queeu"),
        ({"engine": {"devise": "cpu"}}, "settings.engine"),
        ({"limits": "big"}, "settings.limits"),
        ({"max_queue": 0}, "max_queue"),
    ],
)
def test_bad_settings_arguments_name_the_field(values, field):
    with pytest.raises(InvalidRequest) as error:
        ray_app.settings_from_args(values, environ={})
    assert error.value.field == field


@pytest.mark.parametrize(
    ("replicas", "field"),
    [
        ({"min_replicas": 0}, "replicas.min_replicas"),
        ({"min_replicas": 2, "max_replicas": 1}, "replicas.max_replicas"),
        ({"ingress_replicas": True}, "replicas.ingress_replicas"),
        ({"gpus": -1}, "replicas.gpus"),
        ({"cpus": "one"}, "replicas.cpus"),
        ({"downscale_delay_s": -5}, "replicas.downscale_delay_s"),
    ],
)
def test_bad_scaling_names_the_field(replicas, field):
    with pytest.raises(InvalidRequest) as error:
        ray_app.Scaling(**replicas)
    assert error.value.field == field


def test_the_application_builder_checks_its_arguments():
    with pytest.raises(InvalidRequest) as error:
        ray_app.app_builder({"setings": {}})
    assert error.value.field == "setings"
    with pytest.raises(InvalidRequest) as error:
        ray_app.app_builder({"replicas": {"max": 3}})
    assert error.value.field == "replicas"


def test_engine_replicas_get_a_gpu_when_the_device_is_cuda():
    assert ray_app.Scaling().gpus_for(EngineOptions(device="cuda")) == 1.0
    assert ray_app.Scaling().gpus_for(EngineOptions(device="cuda:1")) == 1.0
    assert ray_app.Scaling().gpus_for(EngineOptions()) == 0.0
    assert ray_app.Scaling(gpus=0.5).gpus_for(EngineOptions(device="cpu")) == 0.5


def test_autoscaling_only_when_max_is_above_min(tmp_path):
    settings = ServerSettings(data_dir=tmp_path)
    fixed = ray_app.build_application(settings, ray_app.Scaling(min_replicas=2, max_replicas=2))
    scaled = ray_app.build_application(settings, ray_app.Scaling(min_replicas=1, max_replicas=3, gpus=1))
    engine_fixed = _engine_deployment(fixed)
    engine_scaled = _engine_deployment(scaled)
    assert engine_fixed.num_replicas == 2
    assert engine_fixed._deployment_config.autoscaling_config is None
    auto = engine_scaled._deployment_config.autoscaling_config
    assert (auto.min_replicas, auto.max_replicas, auto.target_ongoing_requests) == (1, 3, 1)
    assert engine_scaled.ray_actor_options["num_gpus"] == 1
    assert engine_scaled.max_ongoing_requests == 1
    ingress = scaled._bound_deployment
    assert ingress.name == ray_app.INGRESS_NAME
    assert ingress.init_args[2] == 6  # two requests in flight per replica


def _engine_deployment(application):
    return application._bound_deployment.init_args[1]._bound_deployment


# The Ray pool, with a stand-in for the engine deployment's handle -------------------------------------------------


class _FakeReplica:
    """Answers ``run_queued`` as an engine replica would: claims the next job and finishes it."""

    def __init__(self, store: JobStore, *, fail: int = 0) -> None:
        self.store = store
        self.fail = fail
        self.concurrent = 0
        self.most_concurrent = 0
        self.lock = threading.Lock()

    @property
    def run_queued(self):
        return self

    def remote(self):
        return self

    def result(self, *, timeout_s=None):
        with self.lock:
            if self.fail:
                self.fail -= 1
                raise RuntimeError("ActorDiedError: the replica died")
            self.concurrent += 1
            self.most_concurrent = max(self.most_concurrent, self.concurrent)
        try:
            time.sleep(0.05)
            jobs = self.store.claim("replica")
            for job in jobs:
                self.store.finish(job.id, "replica", JobStatus.SUCCEEDED)
            return [job.id for job in jobs]
        finally:
            with self.lock:
                self.concurrent -= 1


def test_the_pool_asks_for_a_replica_per_waiting_job_up_to_its_bound(tmp_path):
    from imagegen.server.rayserve.pool import RayWorkerPool

    settings = ServerSettings(data_dir=tmp_path, poll_interval=0.01)
    store = JobStore(settings.database)
    replica = _FakeReplica(store, fail=1)
    draining = threading.Event()
    pool = RayWorkerPool(settings, store, lambda: None, draining, engine=replica, max_in_flight=2)
    assert pool.readiness() == "worker_starting"
    store.set_worker("replica", pid=1, state="ready")
    assert pool.readiness() == "ready"
    assert [w.state for w in pool.workers()] == ["ready"]
    _queue(store, *(f"j{i}" for i in range(8)))
    pool.start()
    try:
        pool.wake()
        deadline = time.monotonic() + 10
        while store.count(JobStatus.SUCCEEDED) < 8:
            assert time.monotonic() < deadline, "the pool stopped asking for replicas"
            time.sleep(0.02)
        assert replica.most_concurrent == 2
        assert pool.restarts == 1  # the failed request was counted, and its job still ran
        assert pool.wait_drained(5)
        draining.set()
        pool.drain()
        _queue(store, "after-drain")
        pool.wake()
        time.sleep(0.3)
        assert store.get("after-drain").status is JobStatus.QUEUED  # draining: nothing more is asked for
        assert pool.readiness() == "draining"
    finally:
        pool.stop()
    assert pool.readiness() == "draining"


def test_the_pool_reports_a_replica_that_cannot_load_the_model(tmp_path):
    from imagegen.server.rayserve.pool import RayWorkerPool

    settings = ServerSettings(data_dir=tmp_path)
    store = JobStore(settings.database)
    pool = RayWorkerPool(settings, store, lambda: None, threading.Event(), engine=_FakeReplica(store), max_in_flight=1)
    store.set_worker("r1", pid=1, state="error", detail="model_not_found")
    assert pool.readiness() == "model_not_loadable"
    store.set_worker("r2", pid=2, state="stopped")
    assert [w.state for w in pool.workers()] == ["error"]
    pool.stop()
    assert pool.readiness() == "not_running"


class _BlockedReplica:
    """Takes requests and holds them until released: what is in flight can be counted."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.lock = threading.Lock()

    @property
    def run_queued(self):
        return self

    def remote(self):
        with self.lock:
            self.calls += 1
        return self

    def result(self, *, timeout_s=None):
        self.release.wait(10)
        return []


def test_the_pool_keeps_one_request_per_job_waiting_or_running(tmp_path):
    from imagegen.server.rayserve.pool import RayWorkerPool

    settings = ServerSettings(data_dir=tmp_path, poll_interval=0.01)
    store = JobStore(settings.database)
    _queue(store, *(f"j{i}" for i in range(6)))
    for _ in range(2):  # two ended jobs: not work
        store.finish(store.claim("elsewhere")[0].id, "elsewhere", JobStatus.SUCCEEDED)
    store.claim("elsewhere")
    store.claim("elsewhere")  # two running jobs of one busy worker (as a batch): one request
    replica = _BlockedReplica()
    pool = RayWorkerPool(settings, store, lambda: None, threading.Event(), engine=replica, max_in_flight=8)
    shared = RayWorkerPool(
        settings, store, lambda: None, threading.Event(), engine=_BlockedReplica(), max_in_flight=8, share=2
    )
    pool.start()
    shared.start()
    try:
        time.sleep(1.0)  # several dispatch rounds: the count must hold, not grow
        assert replica.calls == 3  # 2 queued + 1 busy worker
        assert shared._engine.calls == 2  # one of two ingress replicas: half of it, rounded up
        assert not pool.drained()
        assert pool.wait_drained(0.2) is False
    finally:
        replica.release.set()
        shared._engine.release.set()
        pool.stop()
        shared.stop()
    assert pool.wait_drained(5) is True


def test_the_pool_counts_every_lost_request_and_lists_live_workers(tmp_path):
    from imagegen.server.jobs.pool import WorkerState
    from imagegen.server.rayserve.pool import RayWorkerPool

    settings = ServerSettings(data_dir=tmp_path, poll_interval=0.01)
    store = JobStore(settings.database)
    store.set_worker("a", pid=1, state="ready")
    store.set_worker("b", pid=2, state="starting")
    replica = _FakeReplica(store, fail=3)
    pool = RayWorkerPool(settings, store, lambda: None, threading.Event(), engine=replica, max_in_flight=1)
    assert pool.workers() == [
        WorkerState(index=0, alive=True, state="ready"),
        WorkerState(index=1, alive=True, state="starting"),
    ]
    _queue(store, "j")
    pool.start()
    try:
        deadline = time.monotonic() + 10
        while store.get("j").status is not JobStatus.SUCCEEDED:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        pool.stop()
    assert pool.restarts == 3


def test_a_worker_stops_running_a_job_taken_away_from_it(tmp_path):
    from types import SimpleNamespace

    from imagegen.server.jobs.worker import Worker

    settings = ServerSettings(data_dir=tmp_path, progress_interval=0.0)
    store = JobStore(settings.database)
    _queue(store, "a")
    (job,) = store.claim("w")
    on_step = Worker(settings, "w", store, engine=object())._progress(job, cancel := threading.Event())
    on_step(SimpleNamespace(step=1, total=4, preview=None))
    assert not cancel.is_set()
    store.release(retries=1, worker="w")  # another server found our lease expired
    on_step(SimpleNamespace(step=2, total=4, preview=None))
    assert cancel.is_set()  # the engine stops at this step; finish() then records nothing


def test_a_retry_writes_images_of_its_own_and_a_taken_away_attempt_leaves_none(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from imagegen.server.jobs.queue import IMAGE_NAME
    from imagegen.server.jobs.worker import Worker

    settings = ServerSettings(data_dir=tmp_path)
    store = JobStore(settings.database)
    _queue(store, "a" * 32)
    store.claim("old")
    store.release(retries=1, worker="old")  # the first attempt was presumed dead...
    (job,) = store.claim("new")
    worker = Worker(settings, "new", store, engine=object())
    result = SimpleNamespace(
        images=[Image.new("RGB", (8, 8))], infotexts=["x"], seeds=[1], warnings=[], timings={}, model="m"
    )
    fields = worker._save(job, result)
    assert fields["images"] == ["a" * 32 + "-0.a2.png"]  # ...and its images, named -0.png, are not these
    assert IMAGE_NAME.fullmatch(fields["images"][0])
    assert (settings.images_dir / fields["images"][0]).exists()
    store.release(retries=5, worker="new")  # now this attempt is taken away before it records its end
    worker._finish(job, JobStatus.SUCCEEDED, fields, time.monotonic())
    assert not (settings.images_dir / fields["images"][0]).exists()
    assert store.get("a" * 32).status is JobStatus.QUEUED
