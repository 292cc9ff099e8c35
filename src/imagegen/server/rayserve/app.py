"""The Ray Serve application: an ingress deployment running the service's FastAPI app (native, A1111, OpenAI, the
page) and an engine deployment whose replicas run the worker's job loop, one replica per GPU (or CPU replicas).

For ``serve run`` / ``serve deploy`` the import path is ``imagegen.server.rayserve.app:app_builder``; its arguments
(a config file's ``args:``) are ``settings`` (the fields of :class:`~imagegen.server.settings.ServerSettings`, as in
``deploy/serve-config.yaml``) and ``replicas`` (:class:`Scaling`'s fields). ``imagegen serve --ray`` builds the same
application from its command line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from imagegen.errors import InvalidRequest
from imagegen.options import EngineOptions
from imagegen.requests import Limits
from imagegen.server.jobs.store import open_store
from imagegen.server.jobs.worker import create_worker
from imagegen.server.metrics import MULTIPROC_ENV
from imagegen.server.rayserve.pool import RayWorkerPool
from imagegen.server.settings import ServerSettings

logger = logging.getLogger("imagegen.server")

__all__ = ["APP_NAME", "EngineReplica", "Ingress", "Scaling", "app_builder", "build_application", "settings_from_args"]

#: The application's and deployments' names, as ``serve status`` shows them.
APP_NAME = "imagegen"
INGRESS_NAME = "imagegen"
ENGINE_NAME = "imagegen-engine"


@dataclass(frozen=True, kw_only=True)
class Scaling:
    """How many engine replicas run, and what each needs from Ray."""

    #: Fewest engine replicas (at least 1: a job must always find an engine).
    min_replicas: int = 1
    #: Most engine replicas; above ``min_replicas``, Ray's autoscaler adds replicas while jobs wait.
    max_replicas: int = 1
    #: GPUs per engine replica (None: 1 when the engine's device is CUDA, else 0).
    gpus: float | None = None
    #: CPUs per engine replica.
    cpus: float = 1.0
    #: Ingress replicas (each runs the HTTP app; all share the job store).
    ingress_replicas: int = 1
    #: Seconds of waiting jobs before a replica is added, and of idleness before one is removed.
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0

    def __post_init__(self) -> None:
        for name, low in (("min_replicas", 1), ("max_replicas", 1), ("ingress_replicas", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InvalidRequest(f"replicas.{name}", f"must be an integer of at least {low}, got {value!r}")
        if self.max_replicas < self.min_replicas:
            raise InvalidRequest(
                "replicas.max_replicas", f"must be at least min_replicas ({self.min_replicas}), got {self.max_replicas}"
            )
        for name in ("gpus", "cpus", "upscale_delay_s", "downscale_delay_s"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise InvalidRequest(f"replicas.{name}", f"must be a number >= 0, got {value!r}")

    def gpus_for(self, engine: EngineOptions) -> float:
        if self.gpus is not None:
            return self.gpus
        return 1.0 if (engine.device or "").startswith("cuda") else 0.0


# Settings travel as JSON-friendly mappings (a config file's args, a deployment's init arguments) ----------------------


def settings_to_args(settings: ServerSettings) -> dict[str, Any]:
    """Every field of ``settings`` as JSON values (:func:`settings_from_args` reads them back)."""
    data = {f.name: getattr(settings, f.name) for f in fields(settings)}
    data["limits"] = dataclasses.asdict(settings.limits)
    data["engine"] = dataclasses.asdict(settings.engine)
    loaded: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return loaded


def settings_from_args(values: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> ServerSettings:
    """``ServerSettings`` from a mapping of some of its fields (the rest keep their defaults). Secrets may come from
    the replica's environment instead of a config file: ``IMAGEGEN_API_KEYS`` (added to ``api_keys``) and
    ``IMAGEGEN_STORE`` (the ``store_url`` when the mapping has none), as with ``imagegen serve``."""
    known = {f.name: f for f in fields(ServerSettings)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InvalidRequest(f"settings.{unknown[0]}", f"is not a server setting; known: {', '.join(sorted(known))}")
    data = dict(values)
    for name, kind in (("limits", Limits), ("engine", EngineOptions)):
        if name in data:
            part = data[name]
            names = {f.name for f in fields(kind)}
            if not isinstance(part, Mapping) or set(part) - names:
                raise InvalidRequest(f"settings.{name}", f"must be a mapping of {', '.join(sorted(names))}")
            data[name] = kind(**part)
    env = os.environ if environ is None else environ
    keys = [k.strip() for k in env.get("IMAGEGEN_API_KEYS", "").split(",") if k.strip()]
    if keys:
        data["api_keys"] = tuple(dict.fromkeys([*data.get("api_keys", ()), *keys]))
    if "store_url" not in data and env.get("IMAGEGEN_STORE"):
        data["store_url"] = env["IMAGEGEN_STORE"]
    if "basic_auth" in data:
        data["basic_auth"] = tuple(tuple(pair) for pair in data["basic_auth"])
    return ServerSettings(**data)


# The deployments ---------------------------------------------------------------------------------------------------


class EngineReplica:
    """One engine: loads the default model at start, then each ``run_queued`` request claims and runs the next job
    (or batch) from the store, exactly as a worker process does. Its worker id is ``ray-<replica id>``."""

    def __init__(self, worker_json: str) -> None:
        settings = self.settings = ServerSettings.from_worker_json(worker_json)
        self.id = f"ray-{serve.get_replica_context().replica_id.unique_id}"
        self.store = open_store(settings)
        for folder in (settings.images_dir, settings.inputs_dir, settings.metrics_dir):
            folder.mkdir(parents=True, exist_ok=True)  # the ingress may not have started yet
        # As a worker process starts (a factory that cannot start raises: Ray's retries then show it).
        self.worker = create_worker(settings, self.id, self.store)
        self.worker.load_default_model()
        threading.Thread(target=self._watch_timeout, name="imagegen-job-timeout", daemon=True).start()

    async def run_queued(self) -> list[str]:
        """Claim and run the next job (or batch); the ids run, none when the queue was empty."""
        if self.worker.batching and self.settings.batch_wait:
            await asyncio.sleep(self.settings.batch_wait)  # jobs submitted together arrive milliseconds apart
        return await asyncio.to_thread(self.worker.step)

    def _watch_timeout(self) -> None:
        """A job past ``job_timeout`` fails as ``timeout`` and the replica exits (Ray starts a fresh one): a hung
        generation cannot be interrupted from inside, as the supervisor does by killing a worker process."""
        limit = self.settings.job_timeout
        while limit is not None:
            time.sleep(1.0)
            now = time.time()
            try:
                late = [j for j in self.store.running() if j.worker == self.id and now - (j.started_at or now) > limit]
            except Exception:  # an unreachable store: look again in a second
                logger.warning("cannot check job timeouts", extra={"worker": self.id}, exc_info=True)
                continue
            if late:
                message = f"the job ran longer than {limit:g} s (job_timeout); its engine replica was restarted"
                self.store.release(retries=0, worker=self.id, fail_as=("timeout", message))
                logger.error("job timed out; restarting the replica", extra={"worker": self.id})
                os._exit(1)

    def __del__(self) -> None:
        """Scale-down or redeploy: Ray waits for the running request first, so nothing is held any more."""
        worker = getattr(self, "worker", None)
        if worker is not None and worker.heartbeat is not None:
            worker.heartbeat.stop()
            self.store.release(retries=self.settings.job_retries, worker=self.id, penalize=False)
            self.store.set_worker(self.id, pid=0, state="stopped")
            self.store.close()


@serve.ingress()
class Ingress:
    """The service's FastAPI app (every dialect and the page) over the shared job store; engines are asked for
    through ``engine``, a handle to the :class:`EngineReplica` deployment."""

    def __init__(self, settings_args: dict[str, Any], engine: DeploymentHandle[Any], max_in_flight: int) -> None:
        self.settings = settings_from_args(settings_args)
        self.engine = engine
        self.max_in_flight = max_in_flight

    def __serve_build_asgi_app__(self) -> Any:
        from imagegen.server.app import create_app
        from imagegen.server.services import Services

        share = serve.get_replica_context().world_size  # the ingress replicas, each with a pool over one store
        pool = functools.partial(RayWorkerPool, engine=self.engine, max_in_flight=self.max_in_flight, share=share)
        services = Services(self.settings, pool=pool, shared=True)
        return create_app(self.settings, services=services)


def build_application(
    settings: ServerSettings, scaling: Scaling, *, settings_args: Mapping[str, Any] | None = None
) -> Application:
    """The application: ``serve.run(build_application(...))``. ``settings_args`` (a config file's ``settings``) is
    what the ingress replicas get instead of every field of ``settings``: secrets given through the environment
    (``IMAGEGEN_API_KEYS``, ``IMAGEGEN_STORE``) are then read in each replica, not copied into Ray's deployment
    arguments. The engine replicas' settings carry the store URL, password included (they must open the store)."""
    autoscaling: dict[str, Any] | None = None
    if scaling.max_replicas > scaling.min_replicas:
        autoscaling = {
            "min_replicas": scaling.min_replicas,
            "initial_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            # One request per waiting or running job (RayWorkerPool): one job per replica at a time.
            "target_ongoing_requests": 1,
            "upscale_delay_s": scaling.upscale_delay_s,
            "downscale_delay_s": scaling.downscale_delay_s,
        }
    engine = serve.deployment(
        name=ENGINE_NAME,
        ray_actor_options={
            "num_cpus": scaling.cpus,
            "num_gpus": scaling.gpus_for(settings.engine),
            "runtime_env": {"env_vars": {MULTIPROC_ENV: str(settings.metrics_dir)}},
        },
        max_ongoing_requests=1,
        num_replicas=None if autoscaling else scaling.min_replicas,
        autoscaling_config=autoscaling,
        # A replica removed by the autoscaler finishes its job first.
        graceful_shutdown_timeout_s=settings.drain_timeout,
        health_check_period_s=10,
    )(EngineReplica)
    ingress = serve.deployment(
        name=INGRESS_NAME,
        num_replicas=scaling.ingress_replicas,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1000,  # polls and SSE streams are cheap; the job queue is bounded by max_queue
    )(Ingress)
    max_in_flight = scaling.max_replicas * 2  # a queued request per replica, so a replica never idles between jobs
    application: Application = ingress.bind(
        dict(settings_args) if settings_args is not None else settings_to_args(settings),
        engine.bind(settings.worker_json()),
        max_in_flight,
    )
    return application


def app_builder(args: dict[str, Any]) -> Application:
    """``serve run imagegen.server.rayserve.app:app_builder`` / a config file's ``import_path``: ``args`` holds
    ``settings`` and ``replicas`` (see the module docstring)."""
    unknown = sorted(set(args) - {"settings", "replicas"})
    if unknown:
        raise InvalidRequest(unknown[0], "is not an argument of the imagegen application; use settings and replicas")
    replicas = args.get("replicas") or {}
    names = {f.name for f in fields(Scaling)}
    if not isinstance(replicas, Mapping) or set(replicas) - names:
        raise InvalidRequest("replicas", f"must be a mapping of {', '.join(sorted(names))}")
    raw = args.get("settings") or {}
    return build_application(settings_from_args(raw), Scaling(**replicas), settings_args=raw)
