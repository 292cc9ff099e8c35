"""Scale-out on Ray Serve: the same app and job semantics, with engines on replicas that Ray places and scales.

- :mod:`~imagegen.server.rayserve.app`: the deployments (an ingress running the service's FastAPI app, engine
  replicas running the worker's job loop) and the application builder for ``serve run`` / ``serve deploy``;
- :mod:`~imagegen.server.rayserve.pool`: the ingress's side of the engines, a
  :class:`~imagegen.server.jobs.pool.WorkerPool` that asks Ray for a replica for each queued job;
- :mod:`~imagegen.server.rayserve.cluster`: ``imagegen serve --ray``: connect or start a cluster, deploy, drain.

Jobs stay in the job store (SQLite on one node, PostgreSQL beyond); Ray only decides where and how many engines run.
"""
