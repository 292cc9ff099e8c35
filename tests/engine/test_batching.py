"""Dynamic batching in the engine (:meth:`Engine.generate_batch`): compatible requests share one denoising loop, each
image keeps its own seed and prompt, and one request's failure or cancel leaves the others to finish."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from imagegen import Cancelled, GenerationRequest, InvalidRequest
from imagegen.engine import Engine, ProgressEvent


def psnr(a, b) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = float(((x - y) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.mark.parametrize("family", ["sd1", "sdxl-base"])
def test_a_batch_gives_each_request_its_own_images(engine, tiny_models, family: str) -> None:
    common = {"model": str(tiny_models[family]), "num_inference_steps": 3, "sampler": "Euler"}
    requests = [
        GenerationRequest(prompt="a red circle", seed=5, **common),
        GenerationRequest(prompt="a blue square, " * 30, negative_prompt="blur", seed=9, num_images=2, **common),
        GenerationRequest(prompt="a [cat:dog:0.5]", seed=20, **common),  # prompt editing inside a batch
    ]
    together = engine.generate_batch(requests)
    for request, result in zip(requests, together, strict=True):
        assert not isinstance(result, Exception), result
        alone = engine.generate(request)
        assert result.seeds == alone.seeds
        assert result.infotexts == alone.infotexts  # the same description: the batch is not in it
        assert result.timings["batch_images"] == 4
        for a, b in zip(result.images, alone.images, strict=True):
            assert psnr(a, b) > 40  # the same image, up to the floating-point order of a larger batch
    assert psnr(together[1].images[0], together[1].images[1]) < 40  # seed 9 and seed 10 differ


def test_base_and_refiner_batch(engine, tiny_models) -> None:
    common = {
        "model": str(tiny_models["sdxl-base"]),
        "refiner": str(tiny_models["sdxl-refiner"]),
        "num_inference_steps": 4,
    }
    requests = [GenerationRequest(prompt=p, seed=i, **common) for i, p in enumerate(["a cat", "a dog"])]
    together = engine.generate_batch(requests)
    for request, result in zip(requests, together, strict=True):
        assert not isinstance(result, Exception), result
        assert "refine" in result.timings
        assert psnr(result.images[0], engine.generate(request).images[0]) > 40


def test_incompatible_requests_run_apart_and_a_bad_one_fails_alone(engine, tiny_models) -> None:
    model = str(tiny_models["sd1"])
    requests = [
        GenerationRequest(prompt="a cat", model=model, num_inference_steps=2),
        GenerationRequest(prompt="a cat", model=model, num_inference_steps=3),  # other steps: its own run
        GenerationRequest(prompt="a cat <lora:nope:1>", model=model, num_inference_steps=2),  # no such LoRA
        GenerationRequest(prompt="a dog", model=model, num_inference_steps=2),
    ]
    results = engine.generate_batch(requests)
    assert isinstance(results[2], InvalidRequest)
    assert results[0].timings["batch_images"] == 2  # with request 3
    assert results[3].timings["batch_images"] == 2
    assert "batch_images" not in results[1].timings


def test_cancelling_one_request_leaves_the_others_running(engine, tiny_models) -> None:
    model = str(tiny_models["sd1"])
    requests = [GenerationRequest(prompt=p, model=model, num_inference_steps=4, sampler="Euler") for p in "abc"]
    cancels = [threading.Event() for _ in requests]
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def progress(index: int, event: ProgressEvent) -> None:
        seen[index].append(event.step)
        if index == 1 and event.step == 2:
            cancels[1].set()

    results = engine.generate_batch(requests, progress=progress, cancels=cancels)
    assert isinstance(results[1], Cancelled)
    assert not isinstance(results[0], Exception)
    assert not isinstance(results[2], Exception)
    assert seen[0] == seen[2] == [1, 2, 3, 4]
    assert seen[1] == [1, 2]  # no progress once cancelled
    # Every request cancelled: the batch stops at once.
    all_cancelled = [threading.Event() for _ in requests]
    for event in all_cancelled:
        event.set()
    assert all(isinstance(r, Cancelled) for r in engine.generate_batch(requests, cancels=all_cancelled))


def test_one_request_is_plain_generate(tiny_models) -> None:
    engine = Engine(device="cpu")
    request = GenerationRequest(prompt="a cat", model=str(tiny_models["sd1"]), num_inference_steps=2, seed=3)
    (result,) = engine.generate_batch([request])
    assert not isinstance(result, Exception)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(engine.generate(request).images[0]))
