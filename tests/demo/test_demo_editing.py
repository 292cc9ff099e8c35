"""Inpainting, the hires fix, Real-ESRGAN and tiling on the trained demo model, judged by the analyser.

The demo model was trained at 64x64 only: at 128x128 its second pass keeps what the first drew when little of it is
re-run (hires strength 0.3 with an image upscaler), while A1111's default latent upscaler, which needs strength >= 0.5
to clean up the blur it makes, breaks its circles into blobs (measured: 0 of 6 circles kept). The tests pin the first
and the README says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from imagegen_shapes.analyse import analyse
from support.demo_weights import requires_demo_weights

pytestmark = [pytest.mark.slow, requires_demo_weights]


@pytest.fixture(scope="module")
def engine() -> Any:
    from imagegen import Engine

    return Engine()


def describe(image: Image.Image) -> set[tuple[str | None, str | None, str]]:
    found = analyse(np.asarray(image.convert("RGB"))).objects
    return {(o.colour.value if o.colour else None, o.shape.value if o.shape else None, o.position.value) for o in found}


def half_mask(side: str) -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64) if side == "right" else (0, 0, 32, 64))
    return mask


@pytest.mark.parametrize(
    ("scene", "side", "prompt", "wanted", "judge_shape"),
    [
        # The case: colour, shape and side.
        (
            "a red circle on the left",
            "right",
            "a red circle on the left and a blue square on the right",
            "blue square",
            True,
        ),
        # Held out (written before it was first run, not tuned): the demo paints a yellow shape on the left, a circle in
        # 3 of 4 (a square in the other), so colour and side are pinned; the closing note of issue 12 has the figures.
        (
            "a green triangle on the right",
            "left",
            "a yellow circle on the left and a green triangle on the right",
            "yellow circle",
            False,
        ),
    ],
)
def test_inpainting_draws_in_the_mask_and_leaves_the_rest(
    engine: Any, scene: str, side: str, prompt: str, wanted: str, judge_shape: bool
) -> None:
    from imagegen import GenerationRequest
    from imagegen.editing.masks import blur_mask

    sources = engine.generate(GenerationRequest(prompt=scene, seed=0, num_images=4)).images
    mask = half_mask(side)
    outside = np.asarray(blur_mask(mask, 4, 4)) == 0
    colour, shape = wanted.split()
    hits = 0
    for i, source in enumerate(sources):
        result = engine.generate(
            GenerationRequest(
                prompt=prompt, seed=1 + i, init_image=source, mask=mask, strength=1.0, inpainting_fill="fill"
            )
        ).images[0]
        found = describe(result)
        hits += any(c == colour and (s == shape or not judge_shape) and side in p for c, s, p in found)
        # Every pixel outside the blurred mask is the source's.
        same = np.asarray(result).astype(int) == np.asarray(source).astype(int)
        assert same.all(axis=2)[outside].all()
    assert hits >= 3, f"{wanted} on the {side} in {hits} of 4"


@pytest.mark.parametrize("prompt", ["a red circle on the left", "a blue square in the top right"])
def test_hires_fix_at_2x_scores_like_the_plain_image(engine: Any, prompt: str) -> None:
    from imagegen import GenerationRequest

    plain = engine.generate(GenerationRequest(prompt=prompt, seed=0, num_images=6)).images
    hires = engine.generate(
        GenerationRequest(prompt=prompt, seed=0, num_images=6, enable_hr=True, hr_upscaler="Lanczos", strength=0.3)
    ).images
    assert all(image.size == (128, 128) for image in hires)
    same = sum(
        describe(a) == describe(b.resize((64, 64), Image.Resampling.LANCZOS)) for a, b in zip(plain, hires, strict=True)
    )
    assert same >= 5, f"{same} of 6 hires images analysed like their 64x64 first pass"


def test_real_esrgan_4x_keeps_every_object(engine: Any) -> None:
    from imagegen import GenerationRequest
    from imagegen.requests import UpscaleRequest

    info = {u.name: u for u in engine.upscalers.list()}["R-ESRGAN 4x+"]
    if not info.available:  # pragma: no cover - its native libraries are missing: listed unavailable with the reason
        pytest.skip(f"R-ESRGAN 4x+ is unavailable here: {info.reason}")
    prompt = "a red circle on the left and a blue square on the right"
    for source in engine.generate(GenerationRequest(prompt=prompt, seed=0, num_images=3)).images:
        large = engine.upscale(UpscaleRequest(image=source, upscaler="R-ESRGAN 4x+", scale=4)).images[0]
        assert large.size == (256, 256)
        assert describe(large.resize((64, 64), Image.Resampling.LANCZOS)) == describe(source)


def test_a_tiled_image_wraps_around_as_smoothly_as_its_interior(engine: Any) -> None:
    from imagegen import GenerationRequest
    from imagegen.editing.tiling import seam_score

    images = engine.generate(GenerationRequest(prompt="two green circles", seed=0, num_images=4, tiling=True)).images
    scores = [seam_score(image) for image in images]
    assert max(scores) < 2.0, scores
