"""Inpainting, outpainting, the hires fix, seamless tiling and upscaling on tiny random-weight models (plumbing: sizes,
untouched pixels, reproducibility, infotext, errors). What they draw is judged on the demo model
(tests/demo/test_demo_editing.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen import GenerationRequest, InvalidRequest
from imagegen.editing.masks import blur_mask
from imagegen.engine import Engine, ProgressEvent
from imagegen.metadata import parse_infotext, request_fields_from_infotext
from imagegen.requests import Limits, UpscaleRequest

RED = (200, 30, 30)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def right_half_mask(size: tuple[int, int] = (64, 64)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 2, 0, size[0], size[1]))
    return mask


def untouched(result: Image.Image, source: Image.Image, mask: Image.Image, blur: int) -> np.ndarray:
    """Where the blurred mask is 0: there the output must be the input's pixels exactly."""
    outside = np.asarray(blur_mask(mask, blur, blur)) == 0
    return np.abs(pixels(result) - pixels(source)).max(axis=2)[outside]


@pytest.fixture(scope="module", params=["sd1", "sdxl-base"])
def inpainting_model(request, tiny_models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with a 9-channel UNet: an inpainting checkpoint (SD 1.x, SDXL), detected from its files."""
    from diffusers import UNet2DConditionModel

    folder = tmp_path_factory.mktemp("inpainting") / f"{request.param}-inpainting"
    shutil.copytree(tiny_models[request.param], folder)
    config = dict(UNet2DConditionModel.load_config(folder / "unet"))
    config["in_channels"] = 9
    torch.manual_seed(0)
    UNet2DConditionModel.from_config(config).save_pretrained(folder / "unet")
    return folder


# Inpainting ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl-base"])
def test_inpainting_keeps_every_pixel_outside_the_blurred_mask(engine, tiny_models, family: str) -> None:
    source = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = right_half_mask()
    request = GenerationRequest(
        prompt="a cat", model=str(tiny_models[family]), init_image=source, mask=mask, seed=1, num_inference_steps=3
    )
    result = engine.generate(request)
    image = result.images[0]
    assert image.size == (64, 64)
    assert untouched(image, source, mask, 4).max() == 0
    inside = np.asarray(mask) == 255
    assert np.abs(pixels(image) - pixels(source)).max(axis=2)[inside].mean() > 5  # the masked half was repainted
    info = parse_infotext(result.infotexts[0])
    assert info.extra["Mask blur"] == "4"
    assert info.extra["Masked content"] == "original"
    assert info.denoising_strength == 0.75


def test_inpainting_with_base_and_refiner(engine, tiny_models) -> None:
    source = Image.new("RGB", (64, 64), RED)
    mask = right_half_mask()
    result = engine.generate(
        GenerationRequest(
            prompt="a cat",
            model=str(tiny_models["sdxl-base"]),
            refiner=str(tiny_models["sdxl-refiner"]),
            init_image=source,
            mask=mask,
            num_images=2,
            seed=5,
            num_inference_steps=5,
        )
    )
    assert "refine" in result.timings
    for image in result.images:
        assert untouched(image, source, mask, 4).max() == 0
    assert not np.array_equal(pixels(result.images[0]), pixels(result.images[1]))  # a seed per image


def test_inpainting_is_reproducible_and_each_fill_mode_starts_elsewhere(engine, tiny_models) -> None:
    source = Image.new("RGB", (64, 64), RED)
    source.paste((20, 40, 220), (32, 0, 64, 64))  # "fill" paints the blue half red from its surroundings
    mask = right_half_mask()

    def run(fill: str) -> np.ndarray:
        request = GenerationRequest(
            prompt="a cat",
            model=str(tiny_models["sd1"]),
            init_image=source,
            mask=mask,
            inpainting_fill=fill,
            strength=0.5,
            seed=2,
            num_inference_steps=4,
        )
        return pixels(engine.generate(request).images[0])

    results = {fill: run(fill) for fill in ("fill", "original", "latent noise", "latent nothing")}
    assert np.array_equal(results["original"], run("original"))
    keys = list(results)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert not np.array_equal(results[a], results[b]), (a, b)


def test_only_masked_repaints_a_crop_and_pastes_it_back(engine, tiny_models) -> None:
    source = Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 80, 3), dtype=np.uint8))
    mask = Image.new("L", (80, 96), 0)
    mask.paste(255, (50, 60, 70, 80))
    result = engine.generate(
        GenerationRequest(
            prompt="a cat",
            model=str(tiny_models["sd1"]),
            init_image=source,
            mask=mask,
            inpaint_full_res=True,
            inpaint_full_res_padding=8,
            width=64,
            height=64,
            num_inference_steps=3,
        )
    )
    image = result.images[0]
    assert image.size == (80, 96)  # the original's size, not the processing size
    assert untouched(image, source, mask, 4).max() == 0
    info = parse_infotext(result.infotexts[0])
    assert (info.extra["Inpaint area"], info.extra["Masked area padding"]) == ("Only masked", "8")
    assert (info.width, info.height) == (64, 64)  # A1111 writes the processing size


def test_invert_and_rgba_masks(engine, tiny_models) -> None:
    source = Image.new("RGB", (64, 64), RED)
    common = {"prompt": "a cat", "model": str(tiny_models["sd1"]), "init_image": source, "num_inference_steps": 2}
    inverted = engine.generate(GenerationRequest(mask=right_half_mask(), invert_mask=True, **common))
    left = Image.new("L", (64, 64), 0)
    left.paste(255, (0, 0, 32, 64))
    assert untouched(inverted.images[0], source, left, 4).max() == 0
    assert parse_infotext(inverted.infotexts[0]).extra["Mask mode"] == "Inpaint not masked"
    # An RGBA mask with transparency: its alpha says what to repaint (opaque = repaint), as A1111.
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (32, 0, 64, 64))
    by_alpha = engine.generate(GenerationRequest(mask=rgba, **common))
    assert untouched(by_alpha.images[0], source, right_half_mask(), 4).max() == 0


def test_mask_errors_are_clear(engine, tiny_models) -> None:
    source = Image.new("RGB", (64, 64), RED)
    with pytest.raises(InvalidRequest, match="same size") as info:
        GenerationRequest(prompt="x", init_image=source, mask=Image.new("L", (32, 32), 255))
    assert info.value.field == "mask"
    with pytest.raises(InvalidRequest, match="needs an init_image"):
        GenerationRequest(prompt="x", mask=Image.new("L", (32, 32), 255))
    with pytest.raises(InvalidRequest, match="is empty") as info:
        engine.generate(
            GenerationRequest(
                prompt="x", model=str(tiny_models["sd1"]), init_image=source, mask=Image.new("L", (64, 64), 0)
            )
        )
    assert info.value.field == "mask"
    with pytest.raises(InvalidRequest, match="after invert_mask"):
        engine.generate(
            GenerationRequest(
                prompt="x",
                model=str(tiny_models["sd1"]),
                init_image=source,
                mask=Image.new("L", (64, 64), 255),
                invert_mask=True,
            )
        )
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest(prompt="x", init_image=source, mask=source, inpainting_fill="blur")
    assert info.value.field == "inpainting_fill"


def test_a_full_mask_repaints_everything(engine, tiny_models) -> None:
    source = Image.new("RGB", (64, 64), RED)
    result = engine.generate(
        GenerationRequest(
            prompt="x",
            model=str(tiny_models["sd1"]),
            init_image=source,
            mask=Image.new("L", (64, 64), 255),
            num_inference_steps=2,
        )
    )
    assert np.abs(pixels(result.images[0]) - pixels(source)).max(axis=2).mean() > 5


def test_outpainting_grows_the_canvas_and_keeps_the_original(engine, tiny_models) -> None:
    source = Image.fromarray(np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    result = engine.generate(
        GenerationRequest(
            prompt="a cat",
            model=str(tiny_models["sd1"]),
            init_image=source,
            outpaint=(16, 16, 0, 16),
            mask_blur=2,
            num_inference_steps=3,
        )
    )
    image = result.images[0]
    assert image.size == (96, 64)
    inner = pixels(image)[0:48, 16:80]
    core = np.abs(inner - pixels(source))[8:-8, 8:-8]  # away from the blurred border
    assert core.max() == 0
    fields = request_fields_from_infotext(result.infotexts[0])
    assert fields["outpaint"] == (16, 16, 0, 16)


def test_inpainting_checkpoint_runs_text_to_image_image_to_image_and_inpainting(engine, inpainting_model) -> None:
    model = str(inpainting_model)
    source = Image.new("RGB", (64, 64), RED)
    txt = engine.generate(GenerationRequest(prompt="a cat", model=model, num_inference_steps=2))
    assert txt.images[0].size == (64, 64)
    img = engine.generate(GenerationRequest(prompt="a cat", model=model, init_image=source, num_inference_steps=2))
    assert img.images[0].size == (64, 64)
    mask = right_half_mask()
    inpainted = engine.generate(
        GenerationRequest(prompt="a cat", model=model, init_image=source, mask=mask, num_inference_steps=2)
    )
    assert untouched(inpainted.images[0], source, mask, 4).max() == 0
    unet = engine.load(model).pipeline.unet
    assert unet.config.in_channels == 9


# Hires fix -----------------------------------------------------------------------------------------------------------


def test_hires_fix_sizes_progress_and_infotext(engine, tiny_models) -> None:
    events: list[ProgressEvent] = []
    request = GenerationRequest(
        prompt="a cat",
        model=str(tiny_models["sd1"]),
        enable_hr=True,
        hr_scale=1.5,
        strength=0.5,
        hr_second_pass_steps=6,
        num_inference_steps=4,
        sampler="Euler",
        seed=7,
    )
    result = engine.generate(request, progress=events.append)
    assert result.images[0].size == (96, 96)
    assert [e.step for e in events] == list(range(1, 8))  # 4 steps, then 6 × 0.5
    assert events[-1].total == 7
    assert {e.stage for e in events} == {"base", "hires"}
    assert {"denoise", "upscale", "hires_denoise", "decode"} <= set(result.timings)
    info = parse_infotext(result.infotexts[0])
    assert info.extra["Hires upscale"] == "1.5"
    assert info.extra["Hires upscaler"] == "Latent"
    assert info.extra["Hires steps"] == "6"
    assert info.denoising_strength == 0.5
    assert (info.width, info.height) == (64, 64)
    # --from gives the same request back, and the same pixels.
    fields = request_fields_from_infotext(result.infotexts[0])
    assert fields["enable_hr"] is True
    assert (fields["hr_scale"], fields["hr_upscaler"], fields["hr_second_pass_steps"]) == (1.5, "Latent", 6)
    again = engine.generate(GenerationRequest(**{**fields, "model": str(tiny_models["sd1"])}))
    assert np.array_equal(pixels(again.images[0]), pixels(result.images[0]))


@pytest.mark.parametrize("upscaler", ["Latent (nearest-exact)", "Lanczos", "Nearest"])
def test_hires_fix_with_resize_to_a_box_crops_like_a1111(engine, tiny_models, upscaler: str) -> None:
    result = engine.generate(
        GenerationRequest(
            prompt="a cat",
            model=str(tiny_models["sd1"]),
            enable_hr=True,
            hr_upscaler=upscaler,
            hr_resize_x=128,
            hr_resize_y=64,
            num_inference_steps=2,
        )
    )
    assert result.images[0].size == (128, 64)
    info = parse_infotext(result.infotexts[0])
    assert info.extra["Hires resize"] == "128x64"
    assert request_fields_from_infotext(result.infotexts[0])["hr_resize_x"] == 128


def test_hires_fix_second_pass_settings_change_the_image(engine, tiny_models) -> None:
    common = {
        "prompt": "a cat",
        "model": str(tiny_models["sd1"]),
        "enable_hr": True,
        "num_inference_steps": 3,
        "seed": 3,
    }
    plain = pixels(engine.generate(GenerationRequest(**common)).images[0])
    for change in ({"hr_prompt": "a dog"}, {"hr_cfg": 1.5}, {"hr_sampler": "DDIM"}, {"hr_negative_prompt": "blur"}):
        result = engine.generate(GenerationRequest(**common, **change))
        assert not np.array_equal(pixels(result.images[0]), plain), change
        assert any(key.startswith("Hires") for key in parse_infotext(result.infotexts[0]).extra)


def test_hires_fix_with_base_and_refiner(engine, tiny_models) -> None:
    result = engine.generate(
        GenerationRequest(
            prompt="a cat",
            model=str(tiny_models["sdxl-base"]),
            refiner=str(tiny_models["sdxl-refiner"]),
            enable_hr=True,
            num_inference_steps=5,
        )
    )
    assert result.images[0].size == (128, 128)
    assert {"refine", "hires_refine"} <= set(result.timings)


def test_hires_fix_errors(engine, tiny_models) -> None:
    small = Engine(device="cpu", limits=Limits(max_width=96, max_height=96, max_pixels=96 * 96))
    with pytest.raises(InvalidRequest) as info:
        small.generate(GenerationRequest(prompt="x", model=str(tiny_models["sd1"]), enable_hr=True))
    assert info.value.field == "hr_scale"
    assert "128x128" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        engine.generate(
            GenerationRequest(prompt="x", model=str(tiny_models["sd1"]), enable_hr=True, hr_upscaler="Bicubic 9x")
        )
    assert info.value.field == "hr_upscaler"
    assert "Lanczos" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest(prompt="x", enable_hr=True, init_image=Image.new("RGB", (64, 64)))
    assert info.value.field == "enable_hr"
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest(prompt="x", enable_hr=True, hr_resize_x=100)
    assert info.value.field == "hr_resize_x"


# Tiling --------------------------------------------------------------------------------------------------------------


def test_tiling_is_for_one_request_only(engine, tiny_models) -> None:
    common = {"prompt": "a cat", "model": str(tiny_models["sd1"]), "num_inference_steps": 3, "seed": 4}
    before = pixels(engine.generate(GenerationRequest(**common)).images[0])
    tiled = engine.generate(GenerationRequest(tiling=True, **common))
    assert not np.array_equal(pixels(tiled.images[0]), before)
    assert parse_infotext(tiled.infotexts[0]).extra["Tiling"] == "True"
    assert request_fields_from_infotext(tiled.infotexts[0])["tiling"] is True
    pipeline = engine.load(str(tiny_models["sd1"])).pipeline
    modes = {
        m.padding_mode for part in (pipeline.unet, pipeline.vae) for m in part.modules() if hasattr(m, "padding_mode")
    }
    assert modes == {"zeros"}
    after = pixels(engine.generate(GenerationRequest(**common)).images[0])
    assert np.array_equal(after, before)


def test_tiling_is_restored_when_a_request_fails(engine, tiny_models) -> None:
    import threading

    from imagegen import Cancelled

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        engine.generate(
            GenerationRequest(prompt="x", model=str(tiny_models["sd1"]), tiling=True, num_inference_steps=3),
            cancel=cancel,
        )
    pipeline = engine.load(str(tiny_models["sd1"])).pipeline
    assert all(getattr(m, "padding_mode", "zeros") == "zeros" for m in pipeline.unet.modules())


# Upscaling -----------------------------------------------------------------------------------------------------------


def test_upscale_by_a_factor_and_to_a_box(engine) -> None:
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    by = engine.upscale(UpscaleRequest(image=image, upscaler="Lanczos", scale=2.5))
    assert by.images[0].size == (100, 75)
    assert by.infotexts[0] == "Postprocess upscale by: 2.5, Postprocess upscaler: Lanczos"
    cropped = engine.upscale(UpscaleRequest(image=image, upscaler="Nearest", width=64, height=64))
    assert cropped.images[0].size == (64, 64)
    uncropped = engine.upscale(UpscaleRequest(image=image, upscaler="Nearest", width=64, height=64, crop=False))
    assert uncropped.images[0].size == (85, 64)  # the aspect kept, the box covered
    blended = engine.upscale(
        UpscaleRequest(image=image, upscaler="Nearest", upscaler_2="Lanczos", upscaler_2_visibility=0.5, scale=2)
    )
    nearest = pixels(engine.upscale(UpscaleRequest(image=image, upscaler="Nearest", scale=2)).images[0])
    lanczos = pixels(engine.upscale(UpscaleRequest(image=image, upscaler="Lanczos", scale=2)).images[0])
    assert np.abs(pixels(blended.images[0]) - (nearest + lanczos) / 2).max() <= 1
    assert "Postprocess upscaler 2: Lanczos" in blended.infotexts[0]


def test_upscale_errors(engine) -> None:
    image = Image.new("RGB", (32, 32))
    with pytest.raises(InvalidRequest) as info:
        engine.upscale(UpscaleRequest(image=image, upscaler="Magic"))
    assert info.value.field == "upscaler"
    with pytest.raises(InvalidRequest) as info:
        engine.upscale(
            UpscaleRequest(image=image, scale=8, upscaler="Lanczos", upscaler_2="Magic", upscaler_2_visibility=1)
        )
    assert info.value.field == "upscaler_2"
    with pytest.raises(InvalidRequest) as info:
        Engine(device="cpu", limits=Limits(max_width=64, max_height=64)).upscale(UpscaleRequest(image=image, scale=4))
    assert info.value.field == "scale"
    with pytest.raises(InvalidRequest) as info:
        UpscaleRequest(image=image, width=64)
    assert info.value.field == "height"


# SD upscale (A1111's img2img script) ---------------------------------------------------------------------------------


def test_sd_upscale_reruns_each_tile_and_stitches_them(engine, tiny_models) -> None:
    source = Image.fromarray(np.random.default_rng(4).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    events: list[ProgressEvent] = []
    request = GenerationRequest(
        prompt="a cat",
        model=str(tiny_models["sd1"]),
        init_image=source,
        sd_upscale=2,
        sd_upscale_overlap=16,
        strength=0.5,
        num_inference_steps=4,
        num_images=2,
        sampler="Euler",
        seed=9,
    )
    result = engine.generate(request, progress=events.append)
    assert [image.size for image in result.images] == [(128, 96), (128, 96)]
    # 128x96 in 64x64 tiles overlapping by at least 16: 3 x 2 tiles, 2 steps each, for 2 images.
    assert [e.step for e in events] == list(range(1, 25))
    assert {e.total for e in events} == {24}
    info = parse_infotext(result.infotexts[0])
    assert (info.width, info.height) == (64, 64)  # the tile size, as A1111 writes it
    assert info.extra["SD upscale"] == "2"
    assert info.extra["SD upscale overlap"] == "16"
    assert info.extra["SD upscale upscaler"] == "Lanczos"
    fields = request_fields_from_infotext(result.infotexts[0])
    again = engine.generate(GenerationRequest(**{**fields, "init_image": source, "model": str(tiny_models["sd1"])}))
    assert np.array_equal(pixels(again.images[0]), pixels(result.images[0]))
    # Not a plain resize: the tiles were re-run.
    resized = pixels(source.resize((128, 96), Image.Resampling.LANCZOS))
    assert np.abs(pixels(result.images[0]) - resized).mean() > 5


def test_sd_upscale_errors(engine, tiny_models) -> None:
    source = Image.new("RGB", (40, 40), RED)
    common = {"prompt": "x", "model": str(tiny_models["sd1"]), "init_image": source}
    with pytest.raises(InvalidRequest) as info:
        engine.generate(GenerationRequest(sd_upscale=1.5, **common))  # 60x60 < one 64x64 tile
    assert info.value.field == "sd_upscale"
    assert "tile" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        engine.generate(GenerationRequest(sd_upscale=2, sd_upscale_upscaler="Magic", **common))
    assert info.value.field == "sd_upscale_upscaler"
    with pytest.raises(InvalidRequest) as info:
        engine.generate(GenerationRequest(prompt="x", model=str(tiny_models["sd1"]), sd_upscale=2))
    assert info.value.field == "sd_upscale"
    assert "init_image" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest(sd_upscale=0.5, **common)
    assert info.value.field == "sd_upscale"


def test_the_noise_multiplier_scales_image_to_image_noise(engine, tiny_models) -> None:
    source = Image.fromarray(np.random.default_rng(5).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    common = {"prompt": "a cat", "model": str(tiny_models["sd1"]), "init_image": source, "seed": 2, "strength": 0.6}
    common["num_inference_steps"] = 4
    plain = engine.generate(GenerationRequest(**common))
    quiet = engine.generate(GenerationRequest(initial_noise_multiplier=0.5, **common))
    assert not np.array_equal(pixels(plain.images[0]), pixels(quiet.images[0]))
    assert "Noise multiplier" not in plain.infotexts[0]
    assert parse_infotext(quiet.infotexts[0]).extra["Noise multiplier"] == "0.5"
    fields = request_fields_from_infotext(quiet.infotexts[0])
    again = engine.generate(GenerationRequest(**{**fields, "init_image": source, "model": str(tiny_models["sd1"])}))
    assert np.array_equal(pixels(again.images[0]), pixels(quiet.images[0]))
    # Text to image draws pure noise: the multiplier has nothing to scale, as in A1111.
    txt = {"prompt": "a cat", "model": str(tiny_models["sd1"]), "seed": 2, "num_inference_steps": 2}
    a = engine.generate(GenerationRequest(**txt)).images[0]
    b = engine.generate(GenerationRequest(initial_noise_multiplier=0.5, **txt)).images[0]
    assert np.array_equal(pixels(a), pixels(b))
