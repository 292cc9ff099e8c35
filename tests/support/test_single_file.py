"""The diffusers -> LDM single-file writer: the file loads back through diffusers' own converter, bit for bit."""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)
from safetensors import safe_open

from support.single_file import config_only_copy, to_single_file

PIPELINES = {
    "sd1": StableDiffusionPipeline,
    "sd2": StableDiffusionPipeline,
    "sdxl-base": StableDiffusionXLPipeline,
    "sdxl-refiner": StableDiffusionXLImg2ImgPipeline,
}
# A key that only the original Stability layout of each family has (what A1111/ComfyUI detect families by).
LDM_MARKERS = {
    "sd1": "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    "sd2": "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
    "sdxl-base": "conditioner.embedders.1.model.text_projection",
    "sdxl-refiner": "conditioner.embedders.0.model.text_projection",
}


@pytest.mark.parametrize("family", list(PIPELINES))
def test_single_file_round_trips_every_weight(tmp_path, tiny_models, family):
    path = to_single_file(tiny_models[family], tmp_path / f"{family}.safetensors")
    with safe_open(path, "pt") as checkpoint:
        keys = set(checkpoint.keys())
    assert LDM_MARKERS[family] in keys
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "first_stage_model.decoder.up.0.block.0.conv1.weight" in keys
    assert not any(k.startswith(("unet.", "vae.", "text_encoder")) for k in keys)

    # The config folder holds no weights, so every tensor below must have come from the single file.
    config = config_only_copy(tiny_models[family], tmp_path / "config")
    assert not list(config.rglob("*.safetensors"))
    loaded = PIPELINES[family].from_single_file(str(path), config=str(config), local_files_only=True)
    original = DiffusionPipeline.from_pretrained(tiny_models[family])
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        expected = getattr(original, name, None)
        if expected is None:
            continue
        want, got = expected.state_dict(), getattr(loaded, name).state_dict()
        assert want.keys() == got.keys(), name
        different = [k for k in want if not torch.equal(want[k], got[k])]
        assert different == [], f"{name}: {different[:5]}"


def test_unsupported_pipeline_is_refused(tmp_path, tiny_models):
    folder = config_only_copy(tiny_models["sd1"], tmp_path / "odd")
    (folder / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    with pytest.raises(ValueError, match="FluxPipeline"):
        to_single_file(folder, tmp_path / "odd.safetensors")


@pytest.mark.parametrize(("family", "config_name"), [("sd1", "sd15"), ("sd2", "sd21"), ("sdxl-base", "sdxl-base")])
def test_materialized_reference_config_is_complete_for_from_single_file(tmp_path, tiny_models, family, config_name):
    # Full-size configs with tiny weights: pass the weight-bearing components, so what from_single_file builds from
    # the folder itself (scheduler, tokenizers, feature extractor) proves the folder complete.
    from imagegen.reference_configs import materialize_reference_config

    config = materialize_reference_config(config_name, tmp_path / "configs")
    path = to_single_file(tiny_models[family], tmp_path / f"{family}.safetensors")
    tiny = DiffusionPipeline.from_pretrained(tiny_models[family])
    parts = {
        name: getattr(tiny, name) for name in ("unet", "vae", "text_encoder", "text_encoder_2") if hasattr(tiny, name)
    }
    loaded = PIPELINES[family].from_single_file(str(path), config=str(config), local_files_only=True, **parts)
    assert loaded.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert type(loaded.scheduler).__name__ == type(tiny.scheduler).__name__
    assert loaded.scheduler.config.prediction_type == tiny.scheduler.config.prediction_type
