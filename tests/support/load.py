"""Clients that load a real ``imagegen serve`` as users do, shared by ``bench/mixed_load.py``, ``bench/faults.py`` and
``tests/server/test_faults.py``.

Each client loops: submit a job (an ``Idempotency-Key`` per job, so a submit whose answer was lost to a dead server is
sent again without making a second job), follow it (status polls every 0.25 s, the SSE stream, or ``?wait=``), then
download its images. Answers that store nothing (429 queue full, 503 draining, 507 disk full) are retried after their
``Retry-After`` (capped); requests that meet no server (killed, restarting) are retried every 0.5 s. A job id counts
as accepted only once a ``202`` named it, and an accepted job that a later read does not find (404) is recorded as
missing: the service lost it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
FOLLOW_MODES = ("poll", "sse", "wait")
#: Seconds between tries of a request that met no server.
RETRY_SECONDS = 0.5
#: A submit that meets no server for this long is given up (the server never came back).
GIVE_UP_SECONDS = 300.0


@dataclass
class LoadStats:
    """What the clients saw. Lists are appended from one event loop only."""

    #: Seconds of each answered submit, and of each status read of the polling clients.
    submit: list[float] = field(default_factory=list)
    read: list[float] = field(default_factory=list)
    #: Ids of the jobs a ``202`` accepted, in order.
    accepted: list[str] = field(default_factory=list)
    #: Submits answered without a job, by status (429 queue full, 503 draining or stopped, 507 disk full).
    refused: Counter[int] = field(default_factory=Counter)
    #: Requests sent again because they met no server (a connection refused or cut).
    retries: int = 0
    #: Accepted jobs a later read did not find (404): lost.
    missing: list[str] = field(default_factory=list)
    downloaded: int = 0
    #: Images of ended jobs that could not be downloaded (not 200 with a PNG).
    bad_downloads: int = 0
    modes: Counter[str] = field(default_factory=Counter)


async def _submit(
    http: httpx.AsyncClient, body: dict[str, Any], stats: LoadStats, stop: Callable[[], bool], max_wait: float
) -> str | None:
    """The id of the accepted job, or None when refused and ``stop()`` says to start no more work."""
    key = uuid.uuid4().hex
    given_up = time.monotonic() + GIVE_UP_SECONDS
    while True:
        started = time.perf_counter()
        try:
            response = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            # The job may have been stored before the server died: only the same key may be sent again.
            stats.retries += 1
            if time.monotonic() > given_up:
                return None
            await asyncio.sleep(RETRY_SECONDS)
            continue
        stats.submit.append(time.perf_counter() - started)
        if response.status_code in (429, 503, 507):
            stats.refused[response.status_code] += 1
            if stop():
                return None
            await asyncio.sleep(min(max_wait, float(response.headers.get("Retry-After", "1"))))
            continue
        response.raise_for_status()
        job_id: str = response.json()["id"]
        stats.accepted.append(job_id)
        return job_id


async def _follow(http: httpx.AsyncClient, job_id: str, mode: str, stats: LoadStats) -> dict[str, Any] | None:
    """The job once ended, or None if the server no longer knows it."""
    while True:
        try:
            if mode == "sse":
                async with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
                    async for _ in stream.aiter_lines():
                        pass  # the server closes the stream once the job has ended (or when it goes down)
                response = await http.get(f"/v1/jobs/{job_id}")
            else:
                started = time.perf_counter()
                response = await http.get(f"/v1/jobs/{job_id}" + ("?wait=30" if mode == "wait" else ""))
                if mode == "poll" and response.status_code == 200:
                    stats.read.append(time.perf_counter() - started)
        except httpx.TransportError:
            stats.retries += 1
            await asyncio.sleep(RETRY_SECONDS)
            continue
        if response.status_code == 404:
            stats.missing.append(job_id)
            return None
        if response.status_code >= 500:  # draining, or stopped before the job started: it runs after the restart
            await asyncio.sleep(RETRY_SECONDS)
            continue
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        if job["status"] in TERMINAL:
            return job
        await asyncio.sleep(0.25 if mode == "poll" else RETRY_SECONDS if mode == "sse" else 0)


async def _download(http: httpx.AsyncClient, url: str, stats: LoadStats) -> None:
    while True:
        try:
            got = await http.get(url)
        except httpx.TransportError:
            stats.retries += 1
            await asyncio.sleep(RETRY_SECONDS)
            continue
        if got.status_code == 200 and got.content.startswith(b"\x89PNG"):
            stats.downloaded += 1
        else:
            stats.bad_downloads += 1
        return


async def _client(
    index: int,
    url: str,
    body: dict[str, Any],
    seed: int,
    stats: LoadStats,
    stop: Callable[[], bool],
    max_wait: float,
) -> None:
    rng = random.Random(seed + index)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while not stop():
            job_id = await _submit(http, {**body, "seed": rng.randrange(1 << 30)}, stats, stop, max_wait)
            if job_id is None:
                continue
            mode = rng.choice(FOLLOW_MODES)
            job = await _follow(http, job_id, mode, stats)
            stats.modes[mode] += 1
            for image in job["images"] if job else ():
                await _download(http, image, stats)


async def run_clients(
    url: str,
    clients: int,
    body: dict[str, Any],
    *,
    stop: Callable[[], bool],
    seed: int = 0,
    max_wait: float = 2.0,
    stats: LoadStats | None = None,
) -> LoadStats:
    """Run ``clients`` clients until ``stop()``; each follows its last job to its end. ``max_wait`` caps the
    ``Retry-After`` honoured (a draining server says 30 s; a restart usually comes sooner). ``stats`` (filled as the
    clients go) may be read from another thread meanwhile."""
    stats = stats if stats is not None else LoadStats()
    await asyncio.gather(*(_client(i, url, body, seed, stats, stop, max_wait) for i in range(clients)))
    return stats


class LoadThread:
    """:func:`run_clients` in a thread of its own, for a caller that injects faults meanwhile."""

    def __init__(self, url: str, clients: int, body: dict[str, Any], *, seed: int = 0, max_wait: float = 2.0) -> None:
        self.stats = LoadStats()
        self._stop = threading.Event()
        self._error: BaseException | None = None

        def run() -> None:
            try:
                asyncio.run(
                    run_clients(
                        url, clients, body, stop=self._stop.is_set, seed=seed, max_wait=max_wait, stats=self.stats
                    )
                )
            except BaseException as exc:  # re-raised by stop(): a client bug must fail the run, not vanish
                self._error = exc

        self._thread = threading.Thread(target=run, name="load", daemon=True)

    def start(self) -> LoadThread:
        self._thread.start()
        return self

    def stop(self, timeout: float) -> LoadStats:
        """Start no more jobs, wait for the clients to follow their last ones to the end, return what they saw."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the load clients did not finish their last jobs within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self.stats


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """Where accepted jobs ended, as the API reports them."""

    accepted: int
    succeeded: int
    #: Succeeded jobs that ran more than once (their worker or server was killed under them).
    succeeded_after_retry: int
    #: Failed or cancelled jobs with a recorded error code and message, by code.
    failed: Counter[str]
    #: Ended failed or cancelled without a recorded code and message.
    unexplained: list[str]
    #: Still queued or running.
    unfinished: list[str]
    #: Not found (404).
    missing: list[str]

    @property
    def lost(self) -> int:
        return len(self.unexplained) + len(self.unfinished) + len(self.missing)


def final_states(url: str, job_ids: Iterable[str], *, headers: dict[str, str] | None = None) -> Outcome:
    """Read every job once through the API and sort them (None = not found)."""
    ids = list(dict.fromkeys(job_ids))
    succeeded = retried = 0
    failed: Counter[str] = Counter()
    unexplained, unfinished, missing = [], [], []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        for job_id in ids:
            response = http.get(f"/v1/jobs/{job_id}")
            if response.status_code == 404:
                missing.append(job_id)
                continue
            response.raise_for_status()
            job = response.json()
            error = job.get("error") or {}
            if job["status"] == "succeeded":
                succeeded += 1
                retried += job["attempts"] > 1
            elif job["status"] not in TERMINAL:
                unfinished.append(job_id)
            elif error.get("code") and error.get("message"):
                failed[error["code"]] += 1
            else:
                unexplained.append(job_id)
    return Outcome(
        accepted=len(ids),
        succeeded=succeeded,
        succeeded_after_retry=retried,
        failed=failed,
        unexplained=unexplained,
        unfinished=unfinished,
        missing=missing,
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (a server's workers), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def percentile_ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)
