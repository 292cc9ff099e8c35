"""Every bad input gets InvalidRequest naming the field and the allowed range, before any model work."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from imagegen import GenerationRequest, InvalidRequest, Limits


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"width": 0}, "width", "at least 8"),
        ({"width": 7}, "width", "at least 8"),
        ({"height": 100}, "height", "multiple of 8"),
        ({"width": 512.0}, "width", "integer"),
        ({"num_inference_steps": 0}, "num_inference_steps", "between 1 and 1000"),
        ({"num_inference_steps": -1}, "num_inference_steps", "between 1 and 1000"),
        ({"num_inference_steps": 10**6}, "num_inference_steps", "between 1 and 1000"),
        ({"num_inference_steps": True}, "num_inference_steps", "integer"),
        ({"num_images": 0}, "num_images", "between 1"),
        ({"num_images": 10**4}, "num_images", "between 1"),
        ({"guidance_scale": math.nan}, "guidance_scale", "[0.0, 100.0]"),
        ({"guidance_scale": -1.0}, "guidance_scale", "[0.0, 100.0]"),
        ({"guidance_scale": math.inf}, "guidance_scale", "[0.0, 100.0]"),
        ({"strength": 0.0}, "strength", "(0.0, 1.0]"),
        ({"strength": 1.5}, "strength", "(0.0, 1.0]"),
        ({"denoising_end": 1.0}, "denoising_end", "(0.0, 1.0)"),
        ({"denoising_end": 0.0}, "denoising_end", "(0.0, 1.0)"),
        ({"seed": -2}, "seed", "-1 (random) or between 0 and 4294967295"),
        ({"seed": 2**32}, "seed", "4294967295"),
        ({"seed": "7"}, "seed", "-1 (random)"),
        ({"seed": 2**32 - 1, "num_images": 2}, "seed", "seed + num_images - 1"),
        ({"prompt": "a\x00b"}, "prompt", "NUL"),
        ({"prompt": 5}, "prompt", "string"),
        ({"negative_prompt": None}, "negative_prompt", "string"),
        ({"sampler": "Eulr"}, "sampler", "unknown sampler"),
        ({"init_image": b"png bytes"}, "init_image", "PIL image"),
    ],
)
def test_bad_fields_name_the_field_and_range(fields, field, fragment):
    with pytest.raises(InvalidRequest) as exc:
        GenerationRequest(**fields)
    assert exc.value.field == field
    assert fragment in exc.value.message


def test_unknown_sampler_lists_valid_names():
    with pytest.raises(InvalidRequest) as exc:
        GenerationRequest(sampler="not-a-sampler")
    assert "Euler a" in exc.value.message
    assert "DPM++ 2M" in exc.value.message


def test_good_request_keeps_its_values():
    request = GenerationRequest(
        prompt="a cat 🐱 قطة", seed=0, width=1024, height=768, num_images=2, sampler="DPM++ 2M Karras", strength=1.0
    )
    assert request.prompt == "a cat 🐱 قطة"
    assert (request.width, request.height, request.seed) == (1024, 768, 0)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"width": 4096}, "width"),
        ({"height": 4096}, "height"),
        ({"width": 2048, "height": 2048}, None),
        ({"num_inference_steps": 151}, "num_inference_steps"),
        ({"num_images": 9}, "num_images"),
        ({"guidance_scale": 31.0}, "guidance_scale"),
        ({"init_image": Image.new("RGB", (5000, 4000))}, "init_image"),
    ],
)
def test_operator_limits(fields, field):
    limits = Limits()
    request = GenerationRequest(**fields)
    if field is None:
        limits.check(request)
        return
    with pytest.raises(InvalidRequest) as exc:
        limits.check(request)
    assert exc.value.field == field
    assert "at most" in exc.value.message or "between" in exc.value.message


def test_pixel_budget_is_configurable():
    with pytest.raises(InvalidRequest, match="pixels"):
        Limits(max_pixels=512 * 512).check(GenerationRequest(width=1024, height=512))
