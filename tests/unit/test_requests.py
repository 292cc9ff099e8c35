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


def test_values_exactly_at_a_limit_are_allowed_and_one_past_is_not():
    limits = Limits(max_width=64, max_height=64, max_pixels=64 * 64, max_steps=10, max_images=2, max_input_pixels=100)
    at = GenerationRequest(
        width=64,
        height=64,
        num_inference_steps=10,
        num_images=2,
        guidance_scale=30.0,
        init_image=Image.new("RGB", (10, 10)),
    )
    limits.check(at)  # every value at its ceiling passes
    one_past = {
        "width": {"width": 72, "height": 8},
        "height": {"height": 72, "width": 8},
        "num_inference_steps": {"num_inference_steps": 11},
        "num_images": {"num_images": 3},
        "guidance_scale": {"guidance_scale": 30.5},
    }
    for field, fields in one_past.items():
        with pytest.raises(InvalidRequest) as exc:
            limits.check(GenerationRequest(**fields))
        assert exc.value.field == field
    with pytest.raises(InvalidRequest) as exc:
        Limits(max_width=64, max_height=128, max_pixels=64 * 64).check(GenerationRequest(width=64, height=72))
    assert exc.value.field == "width"  # the pixel budget names the first size field
    assert "4096 pixels, got 64x72" in exc.value.message
    with pytest.raises(InvalidRequest, match="at most 100 pixels, got 11x10"):
        limits.check(GenerationRequest(init_image=Image.new("RGB", (11, 10))))


def test_field_values_at_the_edges_of_their_ranges():
    assert GenerationRequest(width=8, height=8).width == 8  # the smallest size
    assert GenerationRequest(num_inference_steps=1000).num_inference_steps == 1000  # the hard ceiling
    assert GenerationRequest(num_images=1000).num_images == 1000
    assert GenerationRequest(seed=2**32 - 1).seed == 2**32 - 1  # the top of the seed range, one image
    assert GenerationRequest(seed=2**32 - 2, num_images=2).seed == 2**32 - 2  # ... and the last two
    assert GenerationRequest(seed=-1, num_images=1000).seed == -1  # random: no range to overflow
    with pytest.raises(InvalidRequest, match="seed \\+ num_images - 1 must be at most 4294967295, got 4294967294"):
        GenerationRequest(seed=2**32 - 2, num_images=3)


@pytest.mark.parametrize("name", ["sampler", "schedule_type", "model", "refiner"])
def test_optional_names_must_be_text_and_are_named_when_not(name):
    with pytest.raises(InvalidRequest) as exc:
        GenerationRequest(**{name: 5})
    assert exc.value.field == name
    assert exc.value.message == "must be a string, got int"
    with pytest.raises(InvalidRequest) as exc:
        GenerationRequest(**{name: "a\x00b"})
    assert (exc.value.field, exc.value.message) == (name, "must not contain NUL characters")


def test_errors_say_the_type_they_got():
    with pytest.raises(InvalidRequest) as exc:
        GenerationRequest(init_image="image.png")
    assert exc.value.message == "must be a PIL image, got str"
    with pytest.raises(InvalidRequest) as exc:
        GenerationRequest(prompt=b"bytes")
    assert exc.value.message == "must be a string, got bytes"
    with pytest.raises(InvalidRequest) as exc:
        GenerationRequest(num_inference_steps=None, width=None, num_images=None)
    assert exc.value.field == "num_images"  # None is "the model's default" for steps and size, never for the count


def test_schedule_type_is_checked_when_the_request_is_built():
    # Before any model work: Euler a has no sigma schedules in diffusers, and the name must exist at all.
    with pytest.raises(InvalidRequest) as exc:
        GenerationRequest(sampler="Euler a", schedule_type="Karras")
    assert exc.value.field == "schedule_type"
    with pytest.raises(InvalidRequest) as exc:
        GenerationRequest(schedule_type="Sideways")
    assert exc.value.field == "schedule_type"
    assert GenerationRequest(sampler="DPM++ 2M", schedule_type="Karras").schedule_type == "Karras"
