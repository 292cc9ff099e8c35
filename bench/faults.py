"""Faults under load on a real ``imagegen serve`` (the demo model): the long run of issue 15's reliability suite.

Clients of ``bench/mixed_load.py``'s kind (:mod:`support.load`: submit with an Idempotency-Key, follow by polls, SSE
or ``?wait=``, download the images, retry through outages) load the server while this script injects, in turn:

- ``kill -9`` of the worker at a random denoising step of a running job (20 times; the worker's pid and its jobs are
  read from the job store), timed until a job started after the kill has made a step;
- ``kill -9`` of the API process (twice), restarted on the same data directory and port: timed to ready and to
  generating again;
- SIGTERM under load: the process must exit 0 once its running jobs have finished, and those jobs must end
  ``succeeded`` in the attempt they were in; then a restart;
- a full disk (as root the data directory is a tmpfs): a file takes every free byte for a while; submits get 507
  ``disk_full``, running jobs fail as ``disk_full``; once the file is gone a new job must succeed without a restart.

Then the load stops, the server is restarted once more, and every job a client saw accepted must have ended
``succeeded``, or ``failed``/``cancelled`` with a recorded error code and message: none lost (404), none left queued or
running. The database must pass ``PRAGMA integrity_check``. Prints a summary table, then the figures as JSON; exits 1
if a job was lost or a check failed.

    PYTHONPATH=tests HF_HUB_OFFLINE=1 .venv/bin/python bench/faults.py            # 20 + 2 + 1 + 1 faults, minutes
    PYTHONPATH=tests HF_HUB_OFFLINE=1 .venv/bin/python bench/faults.py --quick    # 5 + 1 + 1 + 1

``--fake`` uses the test suite's fake engine (1 s jobs, no generation cost) to try the script itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from support.faults import (
    RunningJob,
    fill_disk,
    integrity_check,
    kill_worker_mid_job,
    running_jobs,
    tmpfs,
    tmpfs_unavailable,
    wait_mid_run,
    wait_resumed,
)
from support.load import LoadThread, final_states
from support.server_harness import FAKE_FACTORY, ServerProcess, write_fake_model

_T = TypeVar("_T")
#: Seconds to wait for a job mid-run, a restart, a recovery: only reached when something is broken.
FAULT_WAIT = 300.0
#: Seconds a draining server may take to finish its running jobs and exit.
DRAIN_WAIT = 600.0


@dataclass
class Run:
    server: ServerProcess
    data: Path
    load: LoadThread
    steps: int
    rng: random.Random
    #: One record per injected fault.
    faults: list[dict[str, Any]] = field(default_factory=list)
    #: Checks that failed, in words.
    problems: list[str] = field(default_factory=list)
    #: Jobs whose end is checked after the run: (job id, why, the statuses and error codes allowed, attempts or None).
    expectations: list[tuple[str, str, frozenset[str], int | None]] = field(default_factory=list)

    @property
    def database(self) -> Path:
        return self.data / "jobs.sqlite3"

    def mid_run(self, act: Callable[[int, float], _T]) -> _T:
        """``act(min_step, timeout)`` at a random step. Progress is written every 0.25 s, so the store may never show
        some steps of a short job (16, then 20): a step not seen within 15 s gives way to another draw."""
        deadline = time.monotonic() + FAULT_WAIT
        while True:
            try:
                return act(self.rng.randint(1, self.steps - 1), 15.0)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def running_mid_run(self) -> list[RunningJob]:
        return self.mid_run(lambda step, wait: wait_mid_run(self.database, min_step=step, timeout=wait))


def _worker_kill(run: Run) -> dict[str, Any]:
    kill = run.mid_run(lambda step, wait: kill_worker_mid_job(run.database, min_step=step, timeout=wait))
    recovery = wait_resumed(run.database, kill.at, timeout=FAULT_WAIT)
    return {
        "kind": "worker_kill",
        "step": kill.step,
        "total_steps": kill.total_steps,
        "jobs_hit": len(kill.jobs),
        # A job on its last allowed attempt fails as worker_lost; the others are re-queued.
        "jobs_out_of_retries": sum(job.attempts > 1 for job in kill.jobs),
        "recovery_s": recovery,
    }


def _api_kill(run: Run) -> dict[str, Any]:
    jobs = run.running_mid_run()
    run.server.kill()
    at, started = time.time(), time.monotonic()
    run.server.start()
    ready = round(time.monotonic() - started, 2)
    recovery = wait_resumed(run.database, at, timeout=FAULT_WAIT)
    return {
        "kind": "api_kill",
        "step": max(job.step for job in jobs),
        "total_steps": jobs[0].total_steps,
        "jobs_hit": len(jobs),
        "restart_to_ready_s": ready,
        "recovery_s": recovery,
    }


def _drain(run: Run) -> dict[str, Any]:
    jobs = run.running_mid_run()
    assert run.server.process is not None
    started = time.monotonic()
    run.server.process.send_signal(signal.SIGTERM)
    code = run.server.process.wait(DRAIN_WAIT)
    drained = round(time.monotonic() - started, 2)
    left = running_jobs(run.database)
    if code != 0:
        run.problems.append(f"SIGTERM: the server exited {code}, not 0")
    if left:
        run.problems.append(f"SIGTERM: {len(left)} jobs left running after the drain")
    for job in jobs:  # finished during the drain, in the attempt they were in
        run.expectations.append((job.id, "running at SIGTERM", frozenset({"succeeded"}), job.attempts))
    at, started = time.time(), time.monotonic()
    run.server.start()
    ready = round(time.monotonic() - started, 2)
    return {
        "kind": "sigterm_drain",
        "step": max(job.step for job in jobs),
        "total_steps": jobs[0].total_steps,
        "jobs_hit": len(jobs),
        "exit_code": code,
        "drain_s": drained,
        "restart_to_ready_s": ready,
        "recovery_s": wait_resumed(run.database, at, timeout=FAULT_WAIT),
    }


def _disk_full(run: Run, hold: float) -> dict[str, Any]:
    jobs = run.running_mid_run()
    refused_before, accepted_before = run.load.stats.refused[507], len(run.load.stats.accepted)
    filler = fill_disk(run.data)
    try:
        time.sleep(hold)
    finally:
        filler.unlink()
    back = time.time()
    # SQLite reuses the WAL file's frames after a checkpoint, so some commits may still find room: a submit is refused
    # only when its job could not be stored; one that was stored must then end like any other (checked at the end).
    refused = run.load.stats.refused[507] - refused_before
    accepted = len(run.load.stats.accepted) - accepted_before
    for job in jobs:  # images unsaved and progress unwritten: failed as disk_full (or done just before the fill)
        run.expectations.append((job.id, "running when the disk filled", frozenset({"succeeded", "disk_full"}), None))
    integrity = integrity_check(run.database)
    if integrity != "ok":
        run.problems.append(f"disk full: integrity_check says {integrity}")
    return {
        "kind": "disk_full",
        "step": max(job.step for job in jobs),
        "total_steps": jobs[0].total_steps,
        "jobs_hit": len(jobs),
        "held_s": hold,
        "submits_refused_507": refused,
        "submits_accepted": accepted,
        "integrity_check": integrity,
        # Until a job started after the space came back has succeeded (no restart).
        "recovery_s": wait_resumed(run.database, back, timeout=FAULT_WAIT, succeeded=True),
    }


def _schedule(worker_kills: int, api_kills: int, disk: bool) -> list[str]:
    """Worker kills, with the API kills at a third and two thirds of them and the drain half way; the disk last."""
    kinds = []
    for i in range(worker_kills):
        kinds.append("worker_kill")
        if api_kills >= 1 and i == worker_kills // 3:
            kinds.append("api_kill")
        if i == worker_kills // 2:
            kinds.append("sigterm_drain")
        if api_kills >= 2 and i == 2 * worker_kills // 3:
            kinds.append("api_kill")
    return [*kinds, "disk_full"] if disk else kinds


def _check_expectations(run: Run) -> Counter[str]:
    """The jobs hit by a drain or a full disk ended as they should; returns how they ended."""
    ended: Counter[str] = Counter()
    for job_id, why, allowed, attempts in run.expectations:
        job = run.server.get(f"/v1/jobs/{job_id}").json()
        outcome = job["status"] if job["status"] != "failed" else (job.get("error") or {}).get("code", "failed")
        ended[f"{why}: {outcome}"] += 1
        if outcome not in allowed:
            run.problems.append(f"job {job_id} ({why}) ended {outcome}, expected one of {sorted(allowed)}")
        if attempts is not None and job["attempts"] != attempts:
            run.problems.append(f"job {job_id} ({why}) ran {job['attempts']} times, expected {attempts}")
    return ended


def _wait_queue_empty(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(server.get("/v1/jobs", params={"status": s, "limit": 1}).json()["total"] for s in ("queued", "running")):
        if time.monotonic() > deadline:
            raise TimeoutError("the queue did not drain after the final restart")
        time.sleep(0.5)


def _summary(report: dict[str, Any]) -> str:
    faults = report["faults"]

    def recovery(kind: str, key: str = "recovery_s") -> str:
        values = [f[key] for f in faults if f["kind"] == kind]
        if not values:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.1f} s"
        return f"median {statistics.median(values):.1f} s, max {max(values):.1f} s"

    kinds = Counter(f["kind"] for f in faults)
    steps = ", ".join(f"{f['step']}/{f['total_steps']}" for f in faults if f["kind"] == "worker_kill")
    disk = next((f for f in faults if f["kind"] == "disk_full"), None)
    jobs = report["jobs"]
    rows = [
        (
            "worker kill -9",
            str(kinds["worker_kill"]),
            f"at steps {steps}; kill to generating again: {recovery('worker_kill')}",
        ),
        (
            "API kill -9",
            str(kinds["api_kill"]),
            f"kill to ready {recovery('api_kill', 'restart_to_ready_s')}; to generating {recovery('api_kill')}",
        ),
        (
            "SIGTERM drain",
            str(kinds["sigterm_drain"]),
            f"SIGTERM to exit {recovery('sigterm_drain', 'drain_s')}; restart to ready "
            f"{recovery('sigterm_drain', 'restart_to_ready_s')}",
        ),
        (
            "disk full",
            str(kinds["disk_full"]),
            "skipped: " + report["disk_full_skipped"]
            if disk is None
            else f"held {disk['held_s']:g} s: submits {disk['submits_refused_507']} refused 507 and "
            f"{disk['submits_accepted']} stored; integrity {disk['integrity_check']}; space back to a new job "
            f"succeeded: {disk['recovery_s']:.1f} s",
        ),
        ("jobs accepted", str(jobs["accepted"]), ""),
        ("jobs succeeded", str(jobs["succeeded"]), f"{jobs['succeeded_after_retry']} of them after a retry"),
        (
            "jobs failed (recorded code)",
            str(sum(jobs["failed_by_code"].values())),
            ", ".join(f"{code} {n}" for code, n in sorted(jobs["failed_by_code"].items())),
        ),
        ("jobs lost", str(jobs["lost"]), "404, unfinished or unexplained (target 0)"),
        ("problems", str(len(report["problems"])), "; ".join(report["problems"])),
    ]
    width = max(len(label) for label, _, _ in rows)
    return "\n".join(f"{label:<{width}}  {value:>6}  {detail}" for label, value, detail in rows)


@contextlib.contextmanager
def _data_dir(root: Path, size_mib: int) -> Iterator[tuple[Path, str | None]]:
    """The data directory: a tmpfs when one can be mounted (the disk-full fault needs it), else a plain folder."""
    data = root / "data"
    reason = tmpfs_unavailable()
    if reason is not None:
        data.mkdir(parents=True)
        yield data, reason
        return
    with tmpfs(data, size_mib=size_mib):
        yield data, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 worker kills, 1 API kill, 32 clients")
    parser.add_argument("--clients", type=int, default=None, help="default 64 (32 with --quick)")
    parser.add_argument("--worker-kills", type=int, default=None, help="default 20 (5 with --quick)")
    parser.add_argument("--api-kills", type=int, default=None, help="default 2 (1 with --quick)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--disk-full-seconds", type=float, default=10.0)
    parser.add_argument("--tmpfs-mib", type=int, default=512, help="size of the data directory's tmpfs")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds of plain load between faults")
    parser.add_argument("--fake", action="store_true", help="the test suite's fake engine instead of the demo model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    clients = args.clients or (32 if args.quick else 64)
    worker_kills = args.worker_kills if args.worker_kills is not None else (5 if args.quick else 20)
    api_kills = args.api_kills if args.api_kills is not None else (1 if args.quick else 2)
    root = Path(tempfile.mkdtemp(prefix="imagegen-faults-"))
    body: dict[str, Any] = {"prompt": "a red circle and a blue square", "num_inference_steps": args.steps}
    extra = ["--max-queue", "256", "--log-level", "warning"]
    if args.fake:
        write_fake_model(root / "models" / "fake-sd1")
        extra += ["--models-dir", str(root / "models"), "--model", "fake-sd1", "--engine-factory", FAKE_FACTORY]
        body["prompt"] += " [sleep=0.05]"
    with _data_dir(root, args.tmpfs_mib) as (data, no_tmpfs):
        server = ServerProcess(["--data-dir", str(data), *extra], root / "server.log")
        started = time.monotonic()
        try:
            server.start()
            load = LoadThread(server.url, clients, body, seed=args.seed).start()
            run = Run(server=server, data=data, load=load, steps=args.steps, rng=random.Random(args.seed))
            inject = {
                "worker_kill": lambda: _worker_kill(run),
                "api_kill": lambda: _api_kill(run),
                "sigterm_drain": lambda: _drain(run),
                "disk_full": lambda: _disk_full(run, args.disk_full_seconds),
            }
            for n, kind in enumerate(_schedule(worker_kills, api_kills, disk=no_tmpfs is None), start=1):
                time.sleep(args.pause)
                fault = inject[kind]()
                run.faults.append(fault)
                print(f"[{time.monotonic() - started:6.0f} s] fault {n}: {fault}", file=sys.stderr, flush=True)
            stats = load.stop(DRAIN_WAIT)
            # The last restart: a drained stop, a start, and the queue must empty.
            if server.terminate(DRAIN_WAIT) != 0:
                run.problems.append("the final SIGTERM did not exit 0")
            server.start()
            _wait_queue_empty(server, FAULT_WAIT)
            outcome = final_states(server.url, stats.accepted)
            hit = _check_expectations(run)
            integrity = integrity_check(run.database)
            if integrity != "ok":
                run.problems.append(f"integrity_check at the end says {integrity}")
            if stats.missing:
                run.problems.append(f"{len(stats.missing)} accepted jobs were not found while followed")
            if stats.bad_downloads:
                run.problems.append(f"{stats.bad_downloads} images of ended jobs could not be downloaded")
        finally:
            with contextlib.suppress(httpx.HTTPError, OSError):
                server.terminate(60)
            server.stop()
    report = {
        "engine": "fake" if args.fake else "demo model",
        "clients": clients,
        "steps": args.steps,
        "seconds": round(time.monotonic() - started, 1),
        "faults": run.faults,
        "disk_full_skipped": no_tmpfs,
        "jobs": {
            "accepted": outcome.accepted,
            "succeeded": outcome.succeeded,
            "succeeded_after_retry": outcome.succeeded_after_retry,
            "failed_by_code": dict(outcome.failed),
            "lost": outcome.lost,
            "missing": outcome.missing,
            "unfinished": outcome.unfinished,
            "unexplained": outcome.unexplained,
        },
        "jobs_hit_by_drain_or_disk_full": dict(hit),
        "submits_refused": {str(status): n for status, n in sorted(stats.refused.items())},
        "requests_retried_after_no_answer": stats.retries,
        "images_downloaded": stats.downloaded,
        "follow_modes": dict(stats.modes),
        "integrity_check": integrity,
        "problems": run.problems,
        "server_log": str(server.log_path),
    }
    print(_summary(report))
    print(json.dumps(report, indent=2))
    return 0 if outcome.lost == 0 and not run.problems else 1


if __name__ == "__main__":
    sys.exit(main())
