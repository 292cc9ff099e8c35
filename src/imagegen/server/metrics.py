"""Prometheus metrics: ``GET /metrics`` in the text exposition format.

Two sources, merged at each scrape:

- **From the workers** (they generate; the API process never sees a step): counters and histograms written by each
  worker process through ``prometheus_client``'s multiprocess mode into ``<data dir>/metrics`` (one memory-mapped
  file per process; ``PROMETHEUS_MULTIPROC_DIR`` is set for the workers only). A restarted worker's counts add to its
  predecessor's, so counters only ever grow while the server runs; the folder is emptied when the server starts.
  :class:`WorkerMetrics`: jobs ended by status, images, step time, job time, batch sizes.
- **From the store and the supervisor**, read when scraped: queue depth, jobs by status, workers by state, worker
  restarts (:class:`ServerCollector`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from imagegen.server.jobs.model import JobStatus

if TYPE_CHECKING:
    from imagegen.server.services import Services

__all__ = ["CONTENT_TYPE", "MULTIPROC_ENV", "ServerCollector", "WorkerMetrics", "reset_metrics_dir", "scrape"]

#: The environment variable that puts ``prometheus_client`` in multiprocess mode (read when it is imported).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds per denoising step: from a 64x64 demo step (~10 ms) to an SDXL step on a slow CPU (~minutes).
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)
_JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)


class WorkerMetrics:
    """A worker process's metrics. Created in the worker (with ``PROMETHEUS_MULTIPROC_DIR`` set by the supervisor,
    so the values land in files the API process reads); registered nowhere, as the files are what is read."""

    def __init__(self) -> None:
        self.jobs = Counter("imagegen_jobs_ended", "Jobs a worker ended, by outcome", ["status"], registry=None)
        self.images = Counter("imagegen_images", "Images generated (succeeded jobs)", registry=None)
        self.step_seconds = Histogram(
            "imagegen_step_seconds",
            "Seconds per denoising step (a batch's step counts once)",
            buckets=_STEP_BUCKETS,
            registry=None,
        )
        self.job_seconds = Histogram(
            "imagegen_job_seconds",
            "Seconds from a job's start to its end in the worker",
            buckets=_JOB_BUCKETS,
            registry=None,
        )
        self.batch_jobs = Histogram(
            "imagegen_batch_jobs",
            "Jobs denoised together, per run of the worker",
            buckets=_BATCH_BUCKETS,
            registry=None,
        )

    def ended(self, status: JobStatus, *, images: int, seconds: float) -> None:
        self.jobs.labels(status=status.value).inc()
        if images:
            self.images.inc(images)
        self.job_seconds.observe(seconds)


class ServerCollector(Collector):
    """What the store and the supervisor know, read at each scrape (one ``GROUP BY`` and the worker table)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        counts = self.services.store.count_by_status()
        jobs = GaugeMetricFamily("imagegen_jobs", "Jobs in the store, by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(
            "imagegen_queue_depth", "Jobs waiting for a worker", value=counts.get(JobStatus.QUEUED, 0)
        )
        workers = GaugeMetricFamily("imagegen_workers", "Worker slots, by state", labels=["state"])
        states: dict[str, int] = {}
        for worker in self.services.workers():
            states[worker.state] = states.get(worker.state, 0) + 1
        for state, number in sorted(states.items()):
            workers.add_metric([state], number)
        yield workers
        yield CounterMetricFamily(
            "imagegen_worker_restarts",
            "Worker processes restarted after they died (since the server started)",
            value=self.services.supervisor.restarts,
        )


def reset_metrics_dir(folder: Path) -> None:
    """An empty metrics folder: files of an earlier server's workers must not add to this one's counters."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


def scrape(services: Services) -> bytes:
    """The text exposition of every metric (workers' files + the server's own)."""
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(services.settings.metrics_dir))  # type: ignore[no-untyped-call]
    registry.register(ServerCollector(services))
    return generate_latest(registry)
