"""The worker hands each job's preview interval to the engine and stores the previews it gets back, per job, also
when jobs share a denoising batch (the engine runs in-process here: a stub that records what it was asked)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

from PIL import Image

from imagegen.requests import GenerationRequest, GenerationResult
from imagegen.server.jobs.model import JobStatus, batch_key, request_record
from imagegen.server.jobs.store import JobStore
from imagegen.server.jobs.worker import Worker


@dataclass(frozen=True)
class _Event:
    step: int
    total: int
    preview: Image.Image | None = None


class _StubEngine:
    """Three steps; in a batch, member k's preview (when asked for) is a grey of level 40 * (k + 1) + step."""

    def __init__(self) -> None:
        self.asked: list[list[int]] = []

    def load(self, ref: str | None = None) -> object:
        return ref

    def generate(self, request, *, progress=None, cancel=None, previews=0):  # pragma: no cover - batches only here
        raise AssertionError("the jobs should have run as one batch")

    def upscale(self, request, *, progress=None, cancel=None):  # pragma: no cover - not used
        raise AssertionError

    def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        *,
        progress: Callable[[int, _Event], None] | None = None,
        cancels: Sequence[threading.Event] | None = None,
        previews: Sequence[int] | None = None,
    ) -> list[GenerationResult]:
        every = list(previews or [0] * len(requests))
        self.asked.append(every)
        assert progress is not None
        for step in (1, 2, 3):
            for k in range(len(requests)):
                wanted = every[k] and step % every[k] == 0
                picture = Image.new("RGB", (8, 8), (40 * (k + 1) + step,) * 3) if wanted else None
                progress(k, _Event(step, 3, picture))
        return [
            GenerationResult(
                images=(Image.new("RGB", (8, 8)),),
                seeds=(k,),
                infotexts=(f"job {k}",),
                effective=replace(request, seed=k),
                model="stub",
                timings=MappingProxyType({}),
            )
            for k, request in enumerate(requests)
        ]


def test_each_job_of_a_batch_gets_its_own_previews(settings) -> None:
    store = JobStore(settings.database)
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    settings.inputs_dir.mkdir(parents=True, exist_ok=True)
    request = GenerationRequest(prompt="p", model="fake-sd1", num_inference_steps=3, width=64, height=64)
    intervals = {"a": 1, "b": 0, "c": 2}
    for job_id, every in intervals.items():
        record = request_record(request, job_id=job_id)
        if every:
            record["preview_every"] = every
        store.insert(
            job_id=job_id, dialect="native", model="fake-sd1", request=record, batch_key=batch_key(record), max_queue=9
        )
    engine = _StubEngine()
    worker = Worker(settings, "w", store, engine)
    stored: dict[str, list[tuple[int, int]]] = {job_id: [] for job_id in intervals}
    original = store.set_preview

    def spy(job_id, worker_id, preview):
        original(job_id, worker_id, preview)
        with Image.open(io.BytesIO(store.preview(job_id).image)) as picture:
            stored[job_id].append((preview.step, picture.convert("L").getpixel((4, 4))))

    store.set_preview = spy  # type: ignore[method-assign]
    jobs = store.claim("w", max_jobs=3)
    assert [job.id for job in jobs] == ["a", "b", "c"]  # previews do not split a batch
    worker.run_batch(jobs)
    assert engine.asked == [[1, 0, 2]]
    assert [step for step, _ in stored["a"]] == [1, 2, 3]
    assert stored["b"] == []
    assert [step for step, _ in stored["c"]] == [2]
    # Each job's preview is its own member's picture (JPEG: within a few levels).
    assert all(abs(level - (40 + step)) <= 3 for step, level in stored["a"])
    assert all(abs(level - (120 + step)) <= 3 for step, level in stored["c"])
    assert [store.get(job_id).status for job_id in intervals] == [JobStatus.SUCCEEDED] * 3
    assert all(store.preview(job_id) is None for job_id in intervals)  # gone once the jobs ended
