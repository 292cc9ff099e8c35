"""A bounded mixed load on a real ``imagegen serve`` (the demo model by default): N clients for D seconds, each
looping over submit → follow (status polls, or the SSE stream, or ``?wait=``) → download its images, with 429s
honoured (``Retry-After``). Reports p50/p99 latency of submits and status reads, images/s, the RSS of the API
process and of the workers at start and end, and lost jobs (accepted but not ended ``succeeded`` or with a recorded
error by the end): the target is 0.

    PYTHONPATH=tests .venv/bin/python bench/mixed_load.py --clients 64 --seconds 600

``--fake`` uses the test suite's fake engine (no generation cost: the service's own overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from support.load import child_pids, final_states, percentile_ms, rss_mib, run_clients
from support.server_harness import FAKE_FACTORY, ServerProcess, write_fake_model


def _memory(server: ServerProcess) -> dict[str, Any]:
    assert server.process is not None
    pid = server.process.pid
    return {"api_mib": rss_mib(pid), "workers_mib": [rss_mib(child) for child in child_pids(pid)]}


def _sample_memory(server: ServerProcess, every: float, samples: list[dict[str, Any]], done: threading.Event) -> None:
    """RSS every ``every`` seconds while the load runs: flat memory shows as a plateau, a leak as a slope."""
    started = time.monotonic()
    while not done.wait(every):
        samples.append({"t": round(time.monotonic() - started), **_memory(server)})


def _growth(samples: list[dict[str, Any]]) -> dict[str, float]:
    """MiB gained over the second half of the run (warm-up excluded): about 0 when memory is flat."""
    if len(samples) < 4:
        return {}
    middle, last = samples[len(samples) // 2], samples[-1]
    return {
        "api_mib": round(last["api_mib"] - middle["api_mib"], 1),
        "workers_mib": round(sum(last["workers_mib"]) - sum(middle["workers_mib"]), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fake", action="store_true", help="the fake engine instead of the demo model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds between RSS samples (default 60)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="imagegen-load-"))
    extra = ["--max-queue", "256"]
    if args.fake:
        write_fake_model(root / "models" / "fake-sd1")
        extra += ["--models-dir", str(root / "models"), "--model", "fake-sd1", "--engine-factory", FAKE_FACTORY]
    server = ServerProcess(["--data-dir", str(root / "data"), *extra], root / "server.log").start()
    try:
        before = _memory(server)
        started = time.monotonic()
        body = {"prompt": "a red circle and a blue square", "num_inference_steps": args.steps}
        deadline = started + args.seconds
        samples: list[dict[str, Any]] = []
        done = threading.Event()
        sampler = threading.Thread(target=_sample_memory, args=(server, args.sample_every, samples, done), daemon=True)
        sampler.start()
        try:
            stats = asyncio.run(
                run_clients(server.url, args.clients, body, stop=lambda: time.monotonic() >= deadline, seed=args.seed)
            )
        finally:
            done.set()
            sampler.join()
        # Every client followed its last job to its end: what is not ended now was lost.
        elapsed = time.monotonic() - started
        after = _memory(server)
        outcome = final_states(server.url, stats.accepted)
        images = outcome.succeeded * body.get("num_images", 1)
        report = {
            "clients": args.clients,
            "seconds": round(elapsed, 1),
            "engine": "fake" if args.fake else "demo model",
            "jobs_accepted": outcome.accepted,
            "jobs_rejected_429": stats.refused[429],
            "jobs_succeeded": outcome.succeeded,
            "jobs_failed_with_error": sum(outcome.failed.values()),
            "jobs_lost": outcome.lost,
            "images_per_s": round(images / elapsed, 2),
            "images_downloaded": stats.downloaded,
            "follow_modes": dict(stats.modes),
            "submit_ms_p50": percentile_ms(stats.submit, 0.5),
            "submit_ms_p99": percentile_ms(stats.submit, 0.99),
            "status_read_ms_p50": percentile_ms(stats.read, 0.5),
            "status_read_ms_p99": percentile_ms(stats.read, 0.99),
            "status_reads": len(stats.read),
            "memory_start": before,
            "memory_end": after,
            "memory_samples": samples,
            "memory_growth_second_half": _growth(samples),
        }
        print(json.dumps(report, indent=2))
        return 0 if outcome.lost == 0 else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
