"""A small load on ``imagegen serve`` with the fake engine (no generation cost), and a kill -9 recovery run.

Measures what the service itself costs: submissions per second, status reads per second, end-to-end jobs per second
through the SQLite queue and one worker process, and what a ``kill -9`` with queued jobs leaves behind after a
restart. Numbers depend on the machine; compare runs made on the same one.

    PYTHONPATH=tests .venv/bin/python bench/serve_load.py --jobs 200 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from support.server_harness import FAKE_FACTORY, ServerProcess, wait_job, write_fake_model


async def _hammer(url: str, requests: list[tuple[str, str, dict[str, Any] | None]], concurrency: int) -> list[Any]:
    """Send ``requests`` (method, path, json) with ``concurrency`` in flight; return the JSON bodies."""
    queue: asyncio.Queue[tuple[int, tuple[str, str, dict[str, Any] | None]]] = asyncio.Queue()
    for item in enumerate(requests):
        queue.put_nowait(item)
    results: list[Any] = [None] * len(requests)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            index, (method, path, body) = queue.get_nowait()
            response = await client.request(method, path, json=body)
            response.raise_for_status()
            results[index] = response.json()

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return results


def _throughput(server: ServerProcess, jobs: int, concurrency: int) -> dict[str, float]:
    body = {"prompt": "load", "num_inference_steps": 1}
    started = time.perf_counter()
    submitted = asyncio.run(_hammer(server.url, [("POST", "/v1/jobs", body)] * jobs, concurrency))
    submit_seconds = time.perf_counter() - started
    ids = [job["id"] for job in submitted]
    done = [wait_job(server.get, job_id, timeout=600) for job_id in ids]
    if any(job["status"] != "succeeded" for job in done):
        raise RuntimeError("a load job did not succeed")
    first = min(job["created_at"] for job in done)
    last = max(job["finished_at"] for job in done)
    started = time.perf_counter()
    asyncio.run(_hammer(server.url, [("GET", f"/v1/jobs/{job_id}", None) for job_id in ids], concurrency))
    read_seconds = time.perf_counter() - started
    return {
        "submissions_per_s": round(jobs / submit_seconds, 1),
        "jobs_per_s_end_to_end": round(jobs / (last - first), 1),
        "status_reads_per_s": round(jobs / read_seconds, 1),
    }


def _recovery(server: ServerProcess, jobs: int) -> dict[str, Any]:
    long = server.post("/v1/jobs", json={"prompt": "running [sleep=0.2]", "num_inference_steps": 20}).json()["id"]
    wait_job(server.get, long, until=lambda job: job["status"] == "running")
    ids = [long] + [server.post("/v1/jobs", json={"prompt": f"q{i}"}).json()["id"] for i in range(jobs - 1)]
    server.kill()
    started = time.perf_counter()
    server.start()
    ready_seconds = time.perf_counter() - started
    final = [wait_job(server.get, job_id, timeout=600) for job_id in ids]
    return {
        "jobs_queued_or_running_at_kill": len(ids),
        "restart_to_ready_s": round(ready_seconds, 2),
        "succeeded_after_restart": sum(job["status"] == "succeeded" for job in final),
        "retried_jobs": sum(job["attempts"] > 1 for job in final),
        "left_running": server.get("/v1/jobs", params={"status": "running"}).json()["total"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--recovery-jobs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagegen-bench-") as tmp:
        root = Path(tmp)
        write_fake_model(root / "models" / "fake-sd1")
        server_args = [
            *("--data-dir", str(root / "data"), "--models-dir", str(root / "models"), "--model", "fake-sd1"),
            *("--engine-factory", FAKE_FACTORY, "--max-queue", str(max(args.jobs, args.recovery_jobs) + 10)),
            *("--log-level", "warning"),
        ]
        server = ServerProcess(server_args, root / "server.log").start()
        try:
            results = {"load": _throughput(server, args.jobs, args.concurrency)}
            results["recovery"] = _recovery(server, args.recovery_jobs)
        finally:
            server.stop()
    print(json.dumps({"jobs": args.jobs, "concurrency": args.concurrency, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
