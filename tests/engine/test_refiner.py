"""The SDXL "ensemble of expert denoisers": base to denoising_end, refiner from denoising_start on the latents."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from PIL import Image

from imagegen import GenerationRequest
from imagegen.engine import ProgressEvent
from imagegen.metadata import parse_infotext


@pytest.fixture
def calls(monkeypatch) -> list[tuple[str, Any, dict[str, Any]]]:
    """Record every pipeline call (which class, the pipeline object, its keyword arguments) and run it for real."""
    recorded: list[tuple[str, Any, dict[str, Any]]] = []
    for cls in (StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline):
        original = cls.__call__

        def spy(self, *args, __original=original, __name=cls.__name__, **kwargs):
            recorded.append((__name, self, kwargs))
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", spy)
    return recorded


def test_base_hands_latents_to_the_refiner_which_shares_encoder_and_vae(engine, tiny_models, calls):
    events: list[ProgressEvent] = []
    result = engine.generate(
        GenerationRequest(
            prompt="a red circle",
            model=str(tiny_models["sdxl-base"]),
            refiner=str(tiny_models["sdxl-refiner"]),
            denoising_end=0.75,
            num_inference_steps=8,
            seed=5,
        ),
        progress=events.append,
    )
    assert [name for name, _, _ in calls] == ["StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"]
    (_, base, base_kwargs), (_, refiner, refiner_kwargs) = calls
    assert base_kwargs["denoising_end"] == 0.75
    assert base_kwargs["output_type"] == "latent"
    assert refiner_kwargs["denoising_start"] == 0.75
    assert isinstance(refiner_kwargs["image"], torch.Tensor)  # latents, not a decoded image
    assert refiner_kwargs["image"].shape[1] == 4
    # Loaded once, not twice: the very same module objects.
    assert refiner.text_encoder_2 is base.text_encoder_2
    assert refiner.vae is base.vae
    assert refiner.unet is not base.unet
    # Both stages report progress in one sequence.
    assert [e.stage for e in events].count("base") == 6
    assert [e.stage for e in events].count("refiner") == 2
    assert [e.step for e in events] == list(range(1, 9))
    info = parse_infotext(result.infotexts[0])
    assert info.refiner is not None
    assert info.refiner.startswith(str(tiny_models["sdxl-refiner"]))
    assert info.refiner_switch_at == 0.75


def test_refiner_is_loaded_once_and_reused(engine, tiny_models):
    base = engine.load(str(tiny_models["sdxl-base"]))
    first = engine.load(str(tiny_models["sdxl-refiner"]), base=base)
    second = engine.load(str(tiny_models["sdxl-refiner"]), base=base)
    assert first is second
    assert first.pipeline.vae is base.pipeline.vae


def test_base_and_refiner_are_reproducible(engine, tiny_models):
    request = GenerationRequest(
        prompt="two blue squares",
        model=str(tiny_models["sdxl-base"]),
        refiner=str(tiny_models["sdxl-refiner"]),
        num_inference_steps=5,
        seed=9,
        num_images=2,
    )
    a, b = engine.generate(request), engine.generate(request)
    for x, y in zip(a.images, b.images, strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_img2img_reuses_the_txt2img_weights(engine, tiny_models, calls):
    loaded = engine.load(str(tiny_models["sdxl-base"]))
    engine.generate(
        GenerationRequest(
            prompt="x",
            model=str(tiny_models["sdxl-base"]),
            init_image=Image.new("RGB", (64, 64), "blue"),
            num_inference_steps=4,
        )
    )
    ((name, pipe, kwargs),) = calls
    assert name == "StableDiffusionXLImg2ImgPipeline"
    assert pipe.unet is loaded.pipeline.unet
    assert pipe.text_encoder is loaded.pipeline.text_encoder
    assert kwargs["strength"] == 0.75


def test_refiner_alone_refines_a_finished_image(engine, tiny_models, calls):
    result = engine.generate(
        GenerationRequest(
            prompt="x",
            model=str(tiny_models["sdxl-refiner"]),
            init_image=Image.new("RGB", (64, 64), "green"),
            strength=0.3,
            num_inference_steps=10,
        )
    )
    ((name, _, kwargs),) = calls
    assert name == "StableDiffusionXLImg2ImgPipeline"
    assert "denoising_start" not in kwargs
    assert result.images[0].size == (64, 64)


def test_sdxl_txt2img_alone(engine, tiny_models):
    result = engine.generate(
        GenerationRequest(prompt="x", model=str(tiny_models["sdxl-base"]), num_inference_steps=2, sampler="Euler a")
    )
    assert result.images[0].size == (64, 64)
    assert parse_infotext(result.infotexts[0]).sampler == "Euler a"


def test_half_precision_weights_stay_half_and_the_sdxl_vae_stays_upcast(tiny_models):
    from imagegen.engine import Engine

    half = Engine(device="cpu", dtype="float16")
    result = half.generate(
        GenerationRequest(
            prompt="x",
            model=str(tiny_models["sdxl-base"]),
            refiner=str(tiny_models["sdxl-refiner"]),
            num_inference_steps=4,
        )
    )
    assert result.images[0].size == (64, 64)
    base = half.load(str(tiny_models["sdxl-base"])).pipeline
    # Per-request pipelines must not cast the shared modules (diffusers' from_pipe would, to float32).
    assert base.unet.dtype == torch.float16
    assert base.text_encoder_2.dtype == torch.float16
    assert base.vae.dtype == torch.float32  # force_upcast: the SDXL VAE overflows in float16
