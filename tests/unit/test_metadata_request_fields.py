"""imagegen.metadata: an infotext's values by key (``infotext_values``) and the request they describe
(``request_fields_from_infotext``)."""

from __future__ import annotations

import pytest

from imagegen.metadata import Infotext, _typed, infotext_values, request_fields_from_infotext

PARAMETERS = (
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 1024x768, "
    "Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Denoising strength: 0.3, Clip skip: 2, "
    "Refiner: sd_xl_refiner_1.0 [7440042bbd], Refiner switch at: 0.8, Version: v1.10.1"
)


def test_infotext_values_are_typed_by_key():
    info = Infotext(
        prompt="p",
        steps=20,
        sampler="Euler",
        cfg_scale=7,
        seed=3,
        width=512,
        height=768,
        version="v1",
        extra={"Clip skip": "2"},
    )
    values = infotext_values(info)
    assert values == {
        "Steps": 20,
        "Seed": 3,
        "CFG scale": 7.0,
        "Sampler": "Euler",
        "Version": "v1",
        "Size-1": 512,  # Size as A1111's parser splits it
        "Size-2": 768,
        "Clip skip": "2",
    }
    assert infotext_values(Infotext(prompt="p")) == {}  # unset fields, Size included, are left out


def test_request_fields_from_an_a1111_infotext():
    fields = request_fields_from_infotext(f"a castle\nNegative prompt: blurry\n{PARAMETERS}")
    assert fields == {
        "prompt": "a castle",
        "negative_prompt": "blurry",
        "seed": 1234,
        "num_inference_steps": 20,
        "guidance_scale": 7.0,
        "width": 1024,
        "height": 768,
        "sampler": "DPM++ 2M",
        "schedule_type": "Karras",
        "strength": 0.3,
        "model": "sd_xl_base_1.0",
        "refiner": "sd_xl_refiner_1.0",  # the title's " [hash]" dropped
        "denoising_end": 0.8,
        "clip_skip": 2,  # A1111's "Clip skip: 2"
    }


def test_request_fields_leave_out_what_the_infotext_does_not_say():
    assert request_fields_from_infotext("just a prompt") == {"prompt": "just a prompt", "negative_prompt": ""}
    # No sampler: the model's own scheduler, whose eta rule an infotext cannot tell, so eta is not read.
    fields = request_fields_from_infotext("Steps: 20, Seed: 1, CFG scale: 7, Eta: 0.5")
    assert fields == {"prompt": "", "negative_prompt": "", "num_inference_steps": 20, "seed": 1, "guidance_scale": 7.0}


@pytest.mark.parametrize(
    ("refiner", "name"),
    [
        ("sd_xl_refiner_1.0 [7440042bbd]", "sd_xl_refiner_1.0"),
        ("my [v2] refiner [7440042bbd]", "my [v2] refiner"),  # only the last " [...]" is the hash
        ("sd_xl_refiner_1.0", "sd_xl_refiner_1.0"),
        ("refiner [unclosed", "refiner [unclosed"),  # not a title: kept whole
        ("[7440042bbd]", "[7440042bbd]"),  # nothing before the hash: kept whole
        ("refiner[7440042bbd]", "refiner[7440042bbd]"),  # no space before "[": kept whole
    ],
)
def test_refiner_title_becomes_its_name(refiner, name):
    text = f"Steps: 20, Seed: 1, Refiner: {refiner}"
    assert request_fields_from_infotext(text)["refiner"] == name


@pytest.mark.parametrize(
    ("value", "kind", "typed"),
    [
        (None, int, None),
        (20, int, 20),
        (20, float, 20.0),  # an int where a float is wanted
        (7.5, float, 7.5),
        (" 20 ", int, 20),  # text, as extra values are
        ("-3", int, -3),
        ("2.5", int, None),  # an int field does not round
        ("1e3", int, None),
        ("many", int, None),
        (" 0.25 ", float, 0.25),
        ("1e-3", float, 0.001),
        ("nan", float, None),
        ("x", str, "x"),
        ("True", bool, True),  # as extra_value writes a bool
        (" False ", bool, False),
        ("true", bool, None),
        ("1", bool, None),
        (2.5, int, None),  # neither the kind nor text
        (True, str, None),
    ],
)
def test_typed_reads_a_value_as_the_fields_kind(value, kind, typed):
    result = _typed(value, kind)
    assert result == typed
    assert type(result) is type(typed)
