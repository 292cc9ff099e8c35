"""The tiny-model factory: real pipeline classes, real tokenizers, family-specific behaviour, determinism."""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)
from safetensors.torch import load_file

from support.tiny_models import FAMILIES, build_tiny_model

EXPECTED = {
    "sd1": (StableDiffusionPipeline, PNDMScheduler, "epsilon"),
    "sd2": (StableDiffusionPipeline, DDIMScheduler, "v_prediction"),
    "sdxl-base": (StableDiffusionXLPipeline, EulerDiscreteScheduler, "epsilon"),
    "sdxl-refiner": (StableDiffusionXLImg2ImgPipeline, EulerDiscreteScheduler, "epsilon"),
}


def _load(path):
    pipe = DiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("family", FAMILIES)
def test_folder_loads_as_the_real_pipeline_with_family_settings(tiny_models, family):
    pipe = _load(tiny_models[family])
    pipeline_class, scheduler_class, prediction_type = EXPECTED[family]
    assert type(pipe) is pipeline_class
    assert type(pipe.scheduler) is scheduler_class
    assert pipe.scheduler.config.prediction_type == prediction_type
    assert pipe.vae_scale_factor == 8
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
    # The real CLIP vocabulary: "a photo of a cat" tokenizes to the ids SD was trained with.
    tokenizer = pipe.tokenizer_2 if family == "sdxl-refiner" else pipe.tokenizer
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.model_max_length == 77


def test_pad_tokens_and_family_switches(tiny_models):
    sd1, sd2 = _load(tiny_models["sd1"]), _load(tiny_models["sd2"])
    base, refiner = _load(tiny_models["sdxl-base"]), _load(tiny_models["sdxl-refiner"])
    assert sd1.tokenizer.pad_token == "<|endoftext|>"
    assert sd2.tokenizer.pad_token == "!"
    assert (base.tokenizer.pad_token, base.tokenizer_2.pad_token) == ("<|endoftext|>", "!")
    assert refiner.tokenizer_2.pad_token == "!"
    assert sd2.unet.config.upcast_attention is True
    assert sd2.unet.config.use_linear_projection is True
    assert sd1.unet.config.use_linear_projection is False
    assert refiner.text_encoder is None
    assert refiner.tokenizer is None
    assert refiner.config.requires_aesthetics_score is True
    assert base.unet.config.addition_embed_type == "text_time"
    # Cross-attention sees the concatenated hidden states of both SDXL encoders; the refiner only the second's.
    assert (
        base.unet.config.cross_attention_dim
        == base.text_encoder.config.hidden_size + base.text_encoder_2.config.hidden_size
    )
    assert refiner.unet.config.cross_attention_dim == refiner.text_encoder_2.config.hidden_size


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl-base"])
def test_two_step_generation_at_native_size(tiny_models, family):
    pipe = _load(tiny_models[family])
    result = pipe(
        "a photo of a cat", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    )
    assert result.images.shape == (1, 64, 64, 3)
    assert result.images.std() > 0  # random weights still give a non-constant image


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, tiny_models):
    again = build_tiny_model("sd1", tmp_path / "again", seed=0)
    other = build_tiny_model("sd1", tmp_path / "other", seed=1)
    weights = "unet/diffusion_pytorch_model.safetensors"
    original = load_file(tiny_models["sd1"] / weights)
    assert all(torch.equal(original[k], v) for k, v in load_file(again / weights).items())
    assert not all(torch.equal(original[k], v) for k, v in load_file(other / weights).items())


def test_base_and_refiner_share_text_encoder_2_and_vae_weights(tiny_models):
    base, refiner = _load(tiny_models["sdxl-base"]), _load(tiny_models["sdxl-refiner"])
    for name in ("text_encoder_2", "vae"):
        base_weights, refiner_weights = getattr(base, name).state_dict(), getattr(refiner, name).state_dict()
        assert base_weights.keys() == refiner_weights.keys()
        assert all(torch.equal(base_weights[k], refiner_weights[k]) for k in base_weights)


def test_sdxl_base_hands_latents_to_the_refiner(tiny_models):
    base = _load(tiny_models["sdxl-base"])
    refiner = DiffusionPipeline.from_pretrained(
        tiny_models["sdxl-refiner"], text_encoder_2=base.text_encoder_2, vae=base.vae
    )
    refiner.set_progress_bar_config(disable=True)
    latents = base(
        "a cat",
        num_inference_steps=4,
        denoising_end=0.8,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert latents.shape == (1, 4, 8, 8)
    image = refiner(
        "a cat",
        image=latents,
        num_inference_steps=4,
        denoising_start=0.8,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert image.shape == (1, 64, 64, 3)


def test_unknown_family_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sdxl-base"):
        build_tiny_model("sd3", tmp_path / "x")
