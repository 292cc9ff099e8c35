"""Engine behaviour on tiny random-weight models loaded through the real loading code."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from imagegen import Cancelled, GenerationRequest, InvalidRequest
from imagegen.engine import ProgressEvent
from imagegen.metadata import parse_infotext
from support.tiny_models import FAMILIES


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_size_and_count(engine, tiny_models):
    result = engine.generate(
        GenerationRequest(
            prompt="a cat",
            model=str(tiny_models["sd1"]),
            num_images=2,
            width=72,
            height=56,
            seed=3,
            num_inference_steps=2,
        )
    )
    assert len(result.images) == 2
    assert all(image.size == (72, 56) for image in result.images)
    assert result.seeds == (3, 4)
    assert len(result.infotexts) == 2


def test_native_size_is_the_default(engine, tiny_models):
    result = engine.generate(GenerationRequest(prompt="a cat", model=str(tiny_models["sd1"]), num_inference_steps=1))
    assert result.images[0].size == (result.effective.width, result.effective.height)
    assert result.effective.width == 64  # tiny UNet sample_size 8 × VAE scale 8


def test_same_seed_same_pixels_different_seed_differs(engine, tiny_models):
    def run(seed: int) -> np.ndarray:
        request = GenerationRequest(prompt="a dog", model=str(tiny_models["sd1"]), seed=seed, num_inference_steps=3)
        return pixels(engine.generate(request).images[0])

    first, again, other = run(11), run(11), run(12)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_random_seed_is_returned_and_reproduces(engine, tiny_models):
    model = str(tiny_models["sd1"])
    result = engine.generate(GenerationRequest(prompt="x", model=model, seed=-1, num_inference_steps=2))
    assert 0 <= result.seeds[0] <= 2**32 - 1
    again = engine.generate(GenerationRequest(prompt="x", model=model, seed=result.seeds[0], num_inference_steps=2))
    assert np.array_equal(pixels(result.images[0]), pixels(again.images[0]))


@pytest.mark.parametrize("sampler", [None, "Euler a"])
def test_image_i_of_a_batch_equals_a_single_run_with_seed_plus_i(engine, tiny_models, sampler):
    model = str(tiny_models["sd1"])
    batch = engine.generate(
        GenerationRequest(prompt="a tree", model=model, seed=100, num_images=3, num_inference_steps=3, sampler=sampler)
    )
    single = engine.generate(
        GenerationRequest(prompt="a tree", model=model, seed=102, num_inference_steps=3, sampler=sampler)
    )
    diff = np.abs(pixels(batch.images[2]) - pixels(single.images[0]))
    # Batched matmuls may round differently from single ones; the images must still be the same picture.
    assert diff.mean() < 1.0, diff.mean()
    assert not np.array_equal(pixels(batch.images[0]), pixels(batch.images[2]))


def test_progress_counts_every_step_and_cancel_stops_within_a_step(engine, tiny_models):
    events: list[ProgressEvent] = []
    engine.generate(
        GenerationRequest(prompt="x", model=str(tiny_models["sd1"]), num_inference_steps=4, sampler="Euler"),
        progress=events.append,
    )
    assert [(e.step, e.total) for e in events] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # PLMS (SD 1.5's default) makes one extra model call; the reported total says so from the first step.
    plms: list[ProgressEvent] = []
    engine.generate(
        GenerationRequest(prompt="x", model=str(tiny_models["sd1"]), num_inference_steps=4), progress=plms.append
    )
    assert [(e.step, e.total) for e in plms] == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]

    cancel = threading.Event()
    seen: list[int] = []

    def on_progress(event: ProgressEvent) -> None:
        seen.append(event.step)
        if event.step == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        engine.generate(
            GenerationRequest(prompt="x", model=str(tiny_models["sd1"]), num_inference_steps=10),
            progress=on_progress,
            cancel=cancel,
        )
    assert seen == [1, 2]


def test_img2img_runs_strength_times_steps_from_the_input(engine, tiny_models):
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    events: list[ProgressEvent] = []
    result = engine.generate(
        GenerationRequest(
            prompt="x",
            model=str(tiny_models["sd1"]),
            init_image=init,
            strength=0.5,
            sampler="Euler",
            num_inference_steps=10,
            seed=1,
        ),
        progress=events.append,
    )
    assert len(events) == 5
    assert result.images[0].size == (64, 64)
    info = parse_infotext(result.infotexts[0])
    assert info.denoising_strength == 0.5
    # A low strength stays close to the input; random tiny weights can't draw, so the input must dominate.
    low = engine.generate(
        GenerationRequest(
            prompt="x", model=str(tiny_models["sd1"]), init_image=init, strength=0.1, num_inference_steps=10, seed=1
        )
    )
    assert np.abs(pixels(low.images[0]) - pixels(init)).mean() < np.abs(pixels(result.images[0]) - pixels(init)).mean()


def test_img2img_keeps_input_size_or_resizes_to_the_requested_one(engine, tiny_models):
    init = Image.new("RGB", (83, 61), "white")
    kept = engine.generate(GenerationRequest(model=str(tiny_models["sd1"]), init_image=init, num_inference_steps=2))
    assert kept.images[0].size == (80, 56)
    resized = engine.generate(
        GenerationRequest(model=str(tiny_models["sd1"]), init_image=init, width=64, height=64, num_inference_steps=2)
    )
    assert resized.images[0].size == (64, 64)


def test_infotext_describes_each_image_and_parses_back(engine, tiny_models):
    result = engine.generate(
        GenerationRequest(
            prompt="a red, round thing: big",
            negative_prompt="blurry",
            model=str(tiny_models["sd1"]),
            seed=42,
            num_images=2,
            num_inference_steps=3,
            guidance_scale=6.5,
            sampler="DPM++ 2M Karras",
        )
    )
    first, second = (parse_infotext(text) for text in result.infotexts)
    assert first.prompt == "a red, round thing: big"
    assert first.negative_prompt == "blurry"
    assert (first.seed, second.seed) == (42, 43)
    assert first.steps == 3
    assert first.cfg_scale == 6.5
    assert first.sampler == "DPM++ 2M"
    assert first.schedule_type == "Karras"
    assert (first.width, first.height) == (64, 64)
    assert first.model == str(tiny_models["sd1"])


def test_default_sampler_is_named_in_the_infotext(engine, tiny_models):
    result = engine.generate(GenerationRequest(prompt="x", model=str(tiny_models["sd1"]), num_inference_steps=2))
    info = parse_infotext(result.infotexts[0])
    assert info.sampler == "PLMS"  # SD 1.5's own scheduler is PNDM, which A1111 calls PLMS


def test_sd2_v_prediction_model_runs(engine, tiny_models):
    info = engine.resolve(str(tiny_models["sd2"]))
    assert info.family.value == "sd2"
    assert info.prediction_type == "v_prediction"
    result = engine.generate(GenerationRequest(prompt="x", model=str(tiny_models["sd2"]), num_inference_steps=2))
    assert result.images[0].size == (64, 64)
    assert parse_infotext(result.infotexts[0]).sampler == "DDIM"


def test_families_are_detected(engine, tiny_models):
    assert {name: engine.resolve(str(tiny_models[name])).family.value for name in FAMILIES} == {
        "sd1": "sd1",
        "sd2": "sd2",
        "sdxl-base": "sdxl",
        "sdxl-refiner": "sdxl-refiner",
    }


def test_model_errors_are_clear(engine, tiny_models):
    with pytest.raises(InvalidRequest) as exc:
        engine.generate(
            GenerationRequest(prompt="x", model=str(tiny_models["sd1"]), refiner=str(tiny_models["sdxl-refiner"]))
        )
    assert exc.value.field == "refiner"
    with pytest.raises(InvalidRequest) as exc:
        engine.generate(GenerationRequest(prompt="x", model=str(tiny_models["sdxl-refiner"])))
    assert exc.value.field == "model"
    assert "init image" in str(exc.value)
    with pytest.raises(InvalidRequest) as exc:
        engine.generate(
            GenerationRequest(prompt="x", model=str(tiny_models["sdxl-base"]), refiner=str(tiny_models["sd1"]))
        )
    assert exc.value.field == "refiner"


def test_lru_eviction(tiny_models):
    from imagegen.engine import Engine

    small = Engine(device="cpu", max_loaded=1)
    small.load(str(tiny_models["sd1"]))
    small.load(str(tiny_models["sd2"]))
    assert [m.family.value for m in small.loaded()] == ["sd2"]
    small.load(str(tiny_models["sd2"]))
    assert len(small.loaded()) == 1


def test_memory_options_are_applied(tiny_models):
    from imagegen.engine import Engine

    saver = Engine(device="cpu", vae_slicing=True, vae_tiling=True)
    vae = saver.load(str(tiny_models["sd1"])).pipeline.vae
    assert vae.use_slicing
    assert vae.use_tiling
    result = saver.generate(
        GenerationRequest(prompt="x", model=str(tiny_models["sd1"]), num_images=2, num_inference_steps=1)
    )
    assert len(result.images) == 2


def test_engine_options_build_the_engine_they_describe(tiny_models):
    from imagegen import Limits
    from imagegen.options import EngineOptions, Offload

    options = EngineOptions(
        device="cpu",
        dtype="bfloat16",
        models_dir=tiny_models["sd1"].parent,
        allow_pickle=True,
        offload=Offload.NONE,
        vae_slicing=True,
        vae_tiling=False,
        max_loaded=3,
    )
    limits = Limits(max_steps=5)
    engine = options.engine(default_model="sd1", limits=limits)
    assert engine.options == options
    assert (engine.device.type, str(engine.dtype), engine.default_model, engine.limits) == (
        "cpu",
        "torch.bfloat16",
        "sd1",
        limits,
    )
    assert (engine.models_dir, engine.allow_pickle, engine.max_loaded) == (tiny_models["sd1"].parent, True, 3)
    assert (engine.offload, engine.vae_slicing, engine.vae_tiling) == ("none", True, False)
    import torch

    before = torch.get_num_threads()
    try:
        EngineOptions(device="cpu", threads=1).engine()
        assert torch.get_num_threads() == 1  # applied to the process: one engine per CLI run or server worker
    finally:
        torch.set_num_threads(before)
    # The default model is looked up by name in the models directory.
    assert engine.resolve(None).path == tiny_models["sd1"]


def test_unknown_device_and_dtype_are_invalid_requests():
    from imagegen.engine import Engine

    with pytest.raises(InvalidRequest) as exc:
        Engine(device="tpu")
    assert exc.value.field == "device"
    with pytest.raises(InvalidRequest) as exc:
        Engine(device="cpu", dtype="float8")
    assert exc.value.field == "dtype"
    with pytest.raises(InvalidRequest) as exc:
        Engine(device="cpu", offload="disk")
    assert exc.value.field == "offload"


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl-base"])
def test_every_listed_sampler_runs_on_ordinary_models(engine, tiny_models, family):
    """Ordinary (epsilon SD1, v-prediction SD2, SDXL) schedules: no sampler ends in NaN (UniPC once did, at its last
    step to sigma 0, on every model). The engine refuses a NaN image with GenerationFailed: returning is the check."""
    from imagegen.samplers import list_samplers

    for sampler in (entry["name"] for entry in list_samplers()):
        result = engine.generate(
            GenerationRequest(prompt="a cat", model=str(tiny_models[family]), sampler=sampler, num_inference_steps=3)
        )
        assert result.effective.sampler == sampler
