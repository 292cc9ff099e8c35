"""The table of request field names (imagegen.fields) against the front doors that read it."""

from __future__ import annotations

import dataclasses

import pytest

from imagegen import GenerationRequest
from imagegen.fields import FIELDS, dialect_names, field_names
from imagegen.metadata import FIELD_KEYS
from imagegen.samplers import eta_rule, parse_sampler


def test_the_table_has_every_request_field_once():
    assert [spec.field for spec in FIELDS] == [f.name for f in dataclasses.fields(GenerationRequest)]
    assert len({spec.field for spec in FIELDS}) == len(FIELDS)
    assert all(spec.help for spec in FIELDS)


def test_every_a1111_name_is_a_field_of_a1111s_request_schemas():
    # A misspelt name in the table would drop the value silently: the A1111 translation copies by these names.
    from imagegen.server.dialects.a1111.schemas import A1111Img2ImgRequest, A1111Txt2ImgRequest

    known = set(A1111Txt2ImgRequest.model_fields) | set(A1111Img2ImgRequest.model_fields)
    for spec in FIELDS:
        if spec.a1111 is not None:
            name = spec.a1111.split(".", 1)[0]  # override_settings.sd_model_checkpoint
            assert name in known, spec


def test_every_cli_flag_exists_on_generate():
    from imagegen.cli import build_parser

    generate = build_parser()._subparsers._group_actions[0].choices["generate"]  # type: ignore[union-attr]
    flags = {option for action in generate._actions for option in action.option_strings}
    for spec in FIELDS:
        if spec.cli is not None and spec.cli != "PROMPT":
            assert set(spec.cli.split("/")) <= flags, spec


def test_dialect_names():
    a1111 = dialect_names("a1111")
    assert (a1111["num_inference_steps"], a1111["guidance_scale"], a1111["num_images"]) == (
        "steps",
        "cfg_scale",
        "batch_size",
    )
    openai = dialect_names("openai")
    assert (openai["width"], openai["height"], openai["num_images"], openai["init_image"]) == (
        "size",
        "size",
        "n",
        "image",
    )
    assert "sampler" not in openai  # OpenAI has no name for it
    assert dialect_names("native")["num_inference_steps"] == "num_inference_steps"
    assert dialect_names("cli")["denoising_end"] == "--refiner-switch"
    assert field_names("seed").infotext == "Seed"  # type: ignore[union-attr]
    assert field_names("body") is None
    with pytest.raises(TypeError):
        dialect_names("a1111")["seed"] = "x"  # type: ignore[index]


_EDITING = (
    frozenset(
        {"mask_blur", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding", "invert_mask", "outpaint"}
    )
    | {f"hr_{name}" for name in ("scale", "resize_x", "resize_y", "upscaler", "second_pass_steps", "sampler")}
    | {
        "hr_schedule_type",
        "hr_prompt",
        "hr_negative_prompt",
        "hr_cfg",
        "sd_upscale",
        "sd_upscale_upscaler",
        "sd_upscale_overlap",
    }
)


def test_infotext_keys_are_the_typed_ones_or_written_as_extras():
    # Every key the table names is either a field of Infotext or written by extra_value.
    for spec in FIELDS:
        if spec.field == "eta":
            # eta's key depends on the sampler ("Eta" / "Eta DDIM"); the table names the ancestral samplers' one.
            assert spec.infotext == eta_rule(parse_sampler("Euler a"), {}).infotext_key  # type: ignore[union-attr]
        elif spec.field in ("clip_skip", "emphasis", "tiling", "initial_noise_multiplier") or spec.field in _EDITING:
            # Written by the engine as extras (clip skip and the rest only when not the default; the inpainting and
            # hires groups only when inpainting / with the hires fix), read back by request_fields_from_infotext.
            assert spec.infotext not in FIELD_KEYS, spec
        elif spec.infotext is not None:
            assert spec.infotext in FIELD_KEYS, spec
