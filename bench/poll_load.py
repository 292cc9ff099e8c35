"""What polling clients cost generation: ``imagegen serve`` on the demo model, N jobs, with and without pollers.

The same N one-image jobs run twice on one server: once while the submitting client waits quietly (one status read a
second), once while N clients each read their own job's status every ``--interval`` seconds, as naive API clients do.
Prints images per second (jobs / (last finish - first start)) for both and the loss. A status read must not take the
worker's cores: the issue's target is at most 10 % lost at 16 clients polling every 50 ms.

    PYTHONPATH=tests .venv/bin/python bench/poll_load.py --jobs 16 --interval 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from support.server_harness import ServerProcess


async def _run(url: str, jobs: int, interval: float | None) -> dict[str, Any]:
    """Submit ``jobs`` jobs at once; poll each every ``interval`` seconds (None: one read a second for all)."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        bodies = [{"prompt": "a red circle", "seed": seed, "num_inference_steps": 20} for seed in range(jobs)]
        submitted = await asyncio.gather(*(client.post("/v1/jobs", json=body) for body in bodies))
        ids = [response.json()["id"] for response in submitted]
        reads = 0

        async def follow(job_id: str) -> dict[str, Any]:
            nonlocal reads
            while True:
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
                reads += 1
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    return job
                await asyncio.sleep(interval if interval is not None else 1.0)

        if interval is None:
            done = []
            for job_id in ids:  # one quiet client, one read a second
                done.append(await follow(job_id))
        else:
            done = await asyncio.gather(*(follow(job_id) for job_id in ids))
    if any(job["status"] != "succeeded" for job in done):
        raise RuntimeError("a job did not succeed")
    seconds = max(job["finished_at"] for job in done) - min(job["started_at"] for job in done)
    return {"images_per_s": round(jobs / seconds, 3), "seconds": round(seconds, 2), "status_reads": reads}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between a poller's reads")
    parser.add_argument("--rounds", type=int, default=2, help="alternated quiet/polled rounds (the best of each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagegen-bench-") as tmp:
        root = Path(tmp)
        server_args = ["--data-dir", str(root / "data"), "--max-queue", str(args.jobs + 8), "--log-level", "warning"]
        server = ServerProcess(server_args, root / "server.log").start()
        try:
            asyncio.run(_run(server.url, 2, None))  # warm-up: the first job pays for loading
            quiet, polled = [], []
            for _ in range(args.rounds):
                quiet.append(asyncio.run(_run(server.url, args.jobs, None)))
                polled.append(asyncio.run(_run(server.url, args.jobs, args.interval)))
        finally:
            server.stop()
    best_quiet = max(quiet, key=lambda r: r["images_per_s"])
    best_polled = max(polled, key=lambda r: r["images_per_s"])
    loss = 1 - best_polled["images_per_s"] / best_quiet["images_per_s"]
    report = {
        "jobs": args.jobs,
        "poll_interval_s": args.interval,
        "quiet": best_quiet,
        "polled": best_polled,
        "loss": round(loss, 3),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
