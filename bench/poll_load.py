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
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from support.server_harness import ServerProcess


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run(url: str, jobs: int, interval: float | None, api_pid: int) -> dict[str, Any]:
    """Submit ``jobs`` jobs at once; poll each every ``interval`` seconds (None: one read a second for all)."""
    api_cpu, client_cpu = _cpu_seconds(api_pid), time.process_time()
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
    return {
        "images_per_s": round(jobs / seconds, 3),
        "seconds": round(seconds, 2),
        "status_reads": reads,
        # Where the CPU went besides generation: the API process (reads, routing) and this client process.
        "api_process_cpu_s": round(_cpu_seconds(api_pid) - api_cpu, 2),
        "client_cpu_s": round(time.process_time() - client_cpu, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between a poller's reads")
    parser.add_argument("--rounds", type=int, default=2, help="alternated quiet/polled rounds (the best of each)")
    parser.add_argument("--threads", type=int, default=None, help="the worker's CPU threads (default: serve's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagegen-bench-") as tmp:
        root = Path(tmp)
        server_args = ["--data-dir", str(root / "data"), "--max-queue", str(args.jobs + 8), "--log-level", "warning"]
        if args.threads is not None:
            server_args += ["--threads", str(args.threads)]
        server = ServerProcess(server_args, root / "server.log").start()
        try:
            pid = server.process.pid if server.process is not None else 0
            asyncio.run(_run(server.url, 2, None, pid))  # warm-up: the first job pays for loading
            quiet, polled = [], []
            for _ in range(args.rounds):
                quiet.append(asyncio.run(_run(server.url, args.jobs, None, pid)))
                polled.append(asyncio.run(_run(server.url, args.jobs, args.interval, pid)))
        finally:
            server.stop()
    best_quiet = max(quiet, key=lambda r: r["images_per_s"])
    best_polled = max(polled, key=lambda r: r["images_per_s"])
    loss = 1 - best_polled["images_per_s"] / best_quiet["images_per_s"]
    report = {
        "threads": args.threads,
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
