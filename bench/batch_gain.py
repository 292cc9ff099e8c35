"""What dynamic batching gains: ``imagegen serve`` on the demo model, N compatible one-image jobs submitted at once by N
clients, with batching off (``--max-batch 1``) and on (the default), alternated; images per second (jobs / (last finish
- first start)) for both and the gain. The issue's target: 16 concurrent requests >= 2.5x the images/s of the same
requests one at a time.

    PYTHONPATH=tests .venv/bin/python bench/batch_gain.py --jobs 16 --rounds 2
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


async def _round(url: str, jobs: int, steps: int) -> dict[str, Any]:
    """``jobs`` clients submit one job each at once (other prompts, other seeds) and wait for it (long poll)."""
    prompts = ["a red circle", "a blue square on the left", "a green triangle", "two yellow circles"]
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(index: int) -> dict[str, Any]:
            body = {"prompt": prompts[index % len(prompts)], "seed": index, "num_inference_steps": steps}
            job = (await client.post("/v1/jobs", json=body)).json()
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                job = (await client.get(f"/v1/jobs/{job['id']}", params={"wait": 30})).json()
            return job

        done = await asyncio.gather(*(one(i) for i in range(jobs)))
    if any(job["status"] != "succeeded" for job in done):
        raise RuntimeError(f"a job did not succeed: {[job['status'] for job in done]}")
    seconds = max(job["finished_at"] for job in done) - min(job["started_at"] for job in done)
    batches = sorted({int(job["timings"].get("batch_images", 1)) for job in done})
    return {"images_per_s": round(jobs / seconds, 3), "seconds": round(seconds, 2), "batch_sizes": batches}


def measure(jobs: int, rounds: int, steps: int, max_batch: int, threads: int | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="imagegen-bench-") as tmp:
        root = Path(tmp)
        common = ["--max-queue", str(jobs + 8), "--log-level", "warning"]
        if threads is not None:
            common += ["--threads", str(threads)]
        servers = {
            "alone": ServerProcess(
                ["--data-dir", str(root / "a"), "--max-batch", "1", *common], root / "alone.log"
            ).start(),
            "batched": ServerProcess(
                ["--data-dir", str(root / "b"), "--max-batch", str(max_batch), *common], root / "batched.log"
            ).start(),
        }
        try:
            for server in servers.values():
                asyncio.run(_round(server.url, 2, steps))  # warm-up: the first job pays for loading
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
            for _ in range(rounds):
                for name, server in servers.items():
                    results[name].append(asyncio.run(_round(server.url, jobs, steps)))
        finally:
            for server in servers.values():
                server.stop()
    best = {name: max(runs, key=lambda r: r["images_per_s"]) for name, runs in results.items()}
    return {
        "jobs": jobs,
        "steps": steps,
        "max_batch": max_batch,
        "threads": threads,
        "alone": best["alone"],
        "batched": best["batched"],
        "gain": round(best["batched"]["images_per_s"] / best["alone"]["images_per_s"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds (the best of each)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="the workers' CPU threads (default: serve's)")
    args = parser.parse_args()
    print(json.dumps(measure(args.jobs, args.rounds, args.steps, args.max_batch, args.threads), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
