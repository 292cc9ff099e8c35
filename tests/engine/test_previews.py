"""Live previews (issue 14): every N-th progress event carries a picture of the current latents, opt-in per request,
never changing the image; in a batch each request is previewed from its own latents."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch

from imagegen import Engine, GenerationRequest
from imagegen.engine import ProgressEvent
from imagegen.previews import DECODE_MAX_PIXELS, LatentPreview


def _request(**fields: Any) -> GenerationRequest:
    base = {
        "prompt": "a red circle",
        "seed": 5,
        "num_inference_steps": 4,
        "width": 64,
        "height": 64,
        "sampler": "Euler",
    }
    return GenerationRequest(**{**base, **fields})


@pytest.fixture
def engine(tiny_models: Any) -> Engine:
    return Engine(device="cpu", default_model=str(tiny_models["sd1"]))


def test_previews_come_every_n_steps_and_change_nothing(engine: Engine) -> None:
    events: list[ProgressEvent] = []
    with_previews = engine.generate(_request(), progress=events.append, previews=2)
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert [e.preview is not None for e in events] == [False, True, False, True]
    assert events[1].preview.size == (64, 64)  # small: decoded by the VAE at full size
    # The last preview is the latents the image was decoded from.
    final = np.asarray(events[3].preview, dtype=np.int16)
    assert np.abs(final - np.asarray(with_previews.images[0], dtype=np.int16)).max() <= 2
    plain: list[ProgressEvent] = []
    without = engine.generate(_request(), progress=plain.append)
    assert all(e.preview is None for e in plain)
    assert np.array_equal(np.asarray(without.images[0]), np.asarray(with_previews.images[0]))


def test_a_batch_previews_each_request_from_its_own_latents(engine: Engine) -> None:
    requests = [_request(seed=1, prompt="a red circle"), _request(seed=2, num_images=2), _request(seed=9)]
    seen: dict[int, list[ProgressEvent]] = {0: [], 1: [], 2: []}
    results = engine.generate_batch(
        requests, progress=lambda k, event: seen[k].append(event), cancels=None, previews=[1, 0, 4]
    )
    assert [e.preview is not None for e in seen[0]] == [True] * 4
    assert all(e.preview is None for e in seen[1])
    assert [e.preview is not None for e in seen[2]] == [False, False, False, True]
    for k in (0, 2):
        final = np.asarray(seen[k][-1].preview, dtype=np.int16)
        image = np.asarray(results[k].images[0], dtype=np.int16)  # type: ignore[union-attr]
        assert np.abs(final - image).max() <= 2, k


def test_large_images_are_previewed_through_the_fitted_linear_map() -> None:
    # The demo model's trained VAE (a random tiny VAE has no colours to map).
    vae = Engine(device="cpu").load().pipeline.vae
    preview = LatentPreview(vae)
    # A picture larger than DECODE_MAX_PIXELS: left half red, right half blue, encoded as the loop would hold it.
    side = int(DECODE_MAX_PIXELS**0.5) * 2
    picture = torch.zeros(1, 3, side, side)
    picture[:, 0, :, : side // 2] = 0.9
    picture[:, 1:, :, : side // 2] = -0.8
    picture[:, :2, :, side // 2 :] = -0.8
    picture[:, 2, :, side // 2 :] = 0.9
    with torch.no_grad():
        latents = vae.encode(picture).latent_dist.mean * vae.config.scaling_factor
    image = np.asarray(preview.image(latents), dtype=np.int16)
    grid = latents.shape[-1]
    assert image.shape == (grid, grid, 3)  # one pixel per latent: cheap
    left, right = image[:, : grid // 4].mean(axis=(0, 1)), image[:, -grid // 4 :].mean(axis=(0, 1))
    assert left[0] > left[2] + 40  # red where the picture is red
    assert right[2] > right[0] + 40  # blue where it is blue
    weight, _ = preview.linear_map()
    assert preview.linear_map()[0] is weight  # fitted once


def test_previews_can_be_cancelled_like_any_step(engine: Engine) -> None:
    from imagegen import Cancelled

    cancel = threading.Event()

    def stop_after_first_preview(event: ProgressEvent) -> None:
        if event.preview is not None:
            cancel.set()

    with pytest.raises(Cancelled):
        engine.generate(_request(num_inference_steps=6), progress=stop_after_first_preview, cancel=cancel, previews=3)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_a_bad_preview_interval_names_the_parameter(engine: Engine, bad: Any) -> None:
    from imagegen import InvalidRequest

    with pytest.raises(InvalidRequest) as caught:
        engine.generate(_request(), previews=bad)
    assert caught.value.field == "previews"
    assert "at least 1" in str(caught.value)
