"""``imagegen serve --ray [ADDRESS]``: deploy the application on a Ray cluster (a new local one, or ADDRESS) and
serve until SIGTERM / Ctrl-C, which deletes the application gracefully: engine replicas finish their running job,
waiting jobs stay in the store for the next start."""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType

from imagegen.server.rayserve.app import APP_NAME, Scaling, build_application
from imagegen.server.settings import ServerSettings

__all__ = ["serve_on_ray"]


def serve_on_ray(settings: ServerSettings, scaling: Scaling, *, address: str | None, log_level: str = "info") -> int:
    import logging

    import ray
    from ray import serve

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(1)  # second signal: stop now
        stop.set()

    ray.init(
        # "local": always a new cluster of our own, even where RAY_ADDRESS or a running cluster would be joined.
        address=address or "local",
        include_dashboard=False,
        logging_level=getattr(logging, log_level.upper(), logging.INFO),
        log_to_driver=True,
    )
    # After ray.init, which installs handlers of its own.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        started = time.monotonic()
        serve.run(build_application(settings, scaling), name=APP_NAME, route_prefix="/", blocking=False)
        where = "a new local Ray cluster" if address is None else f"the Ray cluster at {address}"
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        print(
            f"imagegen serve --ray: http://{host}:{settings.port} on {where} "
            f"(deployed in {time.monotonic() - started:.1f} s)\n"
            f"  engine replicas: {scaling.min_replicas}-{scaling.max_replicas}, "
            f"{scaling.gpus_for(settings.engine):g} GPU and {scaling.cpus:g} CPU each\n"
            f"  data:    {settings.data_dir}",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(1.0):
            pass
        print("imagegen serve --ray: stopping: running jobs finish, waiting jobs stay queued", file=sys.stderr)
        serve.delete(APP_NAME)
        if address is None:  # our own cluster: Serve goes with it; on a shared one, other applications stay
            serve.shutdown()  # type: ignore[no-untyped-call]
    finally:
        ray.shutdown()
    return 0
