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
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from support.server_harness import FAKE_FACTORY, ServerProcess, wait_job, write_fake_model


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _worker_pids(api_pid: int) -> list[int]:
    """The API process's children (its workers), from /proc (any thread may have started them)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == api_pid:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def _memory(server: ServerProcess) -> dict[str, Any]:
    assert server.process is not None
    pid = server.process.pid
    return {"api_mib": _rss_mib(pid), "workers_mib": [_rss_mib(child) for child in _worker_pids(pid)]}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


async def _client(
    index: int, url: str, deadline: float, stats: dict[str, Any], body: dict[str, Any], seed: int
) -> None:
    rng = random.Random(seed + index)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = await http.post("/v1/jobs", json={**body, "seed": rng.randrange(1 << 30)})
            stats["submit"].append(time.perf_counter() - started)
            if response.status_code == 429:
                stats["rejected"] += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            response.raise_for_status()
            job_id = response.json()["id"]
            stats["accepted"].append(job_id)
            mode = rng.choice(("poll", "sse", "wait"))
            job: dict[str, Any] = {}
            if mode == "sse":
                async with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("data: "):
                            job = json.loads(line[6:])
                job = (await http.get(f"/v1/jobs/{job_id}")).json()
            else:
                while True:
                    started = time.perf_counter()
                    path = f"/v1/jobs/{job_id}" + ("?wait=30" if mode == "wait" else "")
                    job = (await http.get(path)).json()
                    if mode == "poll":
                        stats["read"].append(time.perf_counter() - started)
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        break
                    if mode == "poll":
                        await asyncio.sleep(0.25)
            stats["modes"][mode] = stats["modes"].get(mode, 0) + 1
            for image in job.get("images", []):
                got = await http.get(image)
                stats["downloaded"] += got.status_code == 200 and got.content.startswith(b"\x89PNG")


async def _run(url: str, clients: int, seconds: float, body: dict[str, Any], seed: int) -> dict[str, Any]:
    stats: dict[str, Any] = {"submit": [], "read": [], "accepted": [], "rejected": 0, "downloaded": 0, "modes": {}}
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(_client(i, url, deadline, stats, body, seed) for i in range(clients)))
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fake", action="store_true", help="the fake engine instead of the demo model")
    parser.add_argument("--seed", type=int, default=0)
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
        stats = asyncio.run(_run(server.url, args.clients, args.seconds, body, args.seed))
        ids = stats["accepted"]
        ended = [wait_job(server.get, job_id, timeout=600) for job_id in ids]
        elapsed = time.monotonic() - started
        after = _memory(server)
        succeeded = [job for job in ended if job["status"] == "succeeded"]
        explained = [job for job in ended if job["status"] == "failed" and job.get("error")]
        lost = len(ids) - len(succeeded) - len(explained)
        report = {
            "clients": args.clients,
            "seconds": round(elapsed, 1),
            "engine": "fake" if args.fake else "demo model",
            "jobs_accepted": len(ids),
            "jobs_rejected_429": stats["rejected"],
            "jobs_succeeded": len(succeeded),
            "jobs_failed_with_error": len(explained),
            "jobs_lost": lost,
            "images_per_s": round(sum(len(job["images"]) for job in succeeded) / elapsed, 2),
            "images_downloaded": stats["downloaded"],
            "follow_modes": stats["modes"],
            "submit_ms_p50": _percentile(stats["submit"], 0.5),
            "submit_ms_p99": _percentile(stats["submit"], 0.99),
            "status_read_ms_p50": _percentile(stats["read"], 0.5),
            "status_read_ms_p99": _percentile(stats["read"], 0.99),
            "status_reads": len(stats["read"]),
            "memory_start": before,
            "memory_end": after,
        }
        print(json.dumps(report, indent=2))
        return 0 if lost == 0 else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
