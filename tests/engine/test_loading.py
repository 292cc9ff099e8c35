"""Model references: local folders, single files, the hub (through a local mirror), pickle refusal, caching."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from imagegen import GenerationRequest, ModelLoadError, ModelNotFound, UnsafeModelFile
from imagegen.engine import Engine, decode_latents
from imagegen.errors import GenerationFailed
from imagegen.loading import iter_local_models, resolve, search_hub


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth"])
def test_pickle_files_are_refused_unless_opted_in(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeModelFile, match="pickle"):
        resolve(str(path))
    # Opting in gets past the refusal (this file is then not loadable, which is a different error).
    assert resolve(str(path), allow_pickle=True).kind == "single_file"


def test_missing_model_names_what_was_tried(tmp_path):
    with pytest.raises(ModelNotFound) as exc:
        resolve("no_such_model", models_dir=tmp_path)
    assert "no_such_model" in str(exc.value)
    assert str(tmp_path) in str(exc.value)


def test_corrupt_safetensors_is_a_load_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ModelLoadError):
        resolve(str(path))


def test_name_in_models_dir(tmp_path, tiny_models):
    shutil.copytree(tiny_models["sd1"], tmp_path / "my-sd1")
    info = resolve("my-sd1", models_dir=tmp_path)
    assert info.kind == "folder"
    assert info.ref == "my-sd1"
    assert [m.ref for m in iter_local_models(tmp_path) if m.kind == "folder"] == ["my-sd1"]


def test_offline_hub_id_not_cached_gives_actionable_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotFound) as exc:
        resolve("stabilityai/stable-diffusion-xl-base-1.0", models_dir=tmp_path)
    message = str(exc.value)
    assert "HF_HUB_OFFLINE" in message
    assert "not in the local Hugging Face cache" in message
    assert "HF_ENDPOINT" in message


def test_hub_id_downloads_through_the_mirror_then_works_offline(monkeypatch, tmp_path, hub_mirror, tiny_models):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", hub_mirror.url)
    engine = Engine(device="cpu", models_dir=tmp_path)
    online = engine.generate(
        GenerationRequest(prompt="x", model="imagegen-test/tiny-sd1", seed=1, num_inference_steps=2)
    )
    assert any("/resolve/" in path for path in hub_mirror.requests)
    assert online.model == "imagegen-test/tiny-sd1"

    # Offline now: the cached snapshot loads without a single request to the mirror, and gives the same pixels.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    served = len(hub_mirror.requests)
    offline_engine = Engine(device="cpu", models_dir=tmp_path)
    offline = offline_engine.generate(
        GenerationRequest(prompt="x", model="imagegen-test/tiny-sd1", seed=1, num_inference_steps=2)
    )
    assert len(hub_mirror.requests) == served
    assert np.array_equal(np.asarray(online.images[0]), np.asarray(offline.images[0]))
    # Same as loading the original folder directly.
    local = offline_engine.generate(
        GenerationRequest(prompt="x", model=str(tiny_models["sd1"]), seed=1, num_inference_steps=2)
    )
    assert np.array_equal(np.asarray(local.images[0]), np.asarray(offline.images[0]))
    # ... and it is listed among local models with its family.
    cached = {m.ref: m.family.value for m in iter_local_models(tmp_path) if m.kind == "hub"}
    assert cached == {"imagegen-test/tiny-sd1": "sd1"}


def test_missing_hub_repo_is_model_not_found(monkeypatch, tmp_path, hub_mirror):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", hub_mirror.url)
    with pytest.raises(ModelNotFound, match="not found"):
        resolve("imagegen-test/does-not-exist", models_dir=tmp_path)


def test_hub_search_lists_text_to_image_models_by_downloads(monkeypatch, hub_mirror):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", hub_mirror.url)
    rows = search_hub(None, limit=10)
    downloads = [row.downloads for row in rows]
    assert downloads == sorted(downloads, reverse=True)
    assert {row.id for row in rows} >= {"imagegen-test/tiny-sd1", "imagegen-test/tiny-sdxl-base"}
    assert [row.id for row in search_hub("sdxl-base")] == ["imagegen-test/tiny-sdxl-base"]


def test_hub_search_offline_is_refused(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="HF_HUB_OFFLINE"):
        search_hub("sdxl")


def test_decode_refuses_nan_and_retries_half_precision_in_float32(engine, tiny_models):
    pipe = engine.load(str(tiny_models["sd1"])).pipeline
    with pytest.raises(GenerationFailed, match="NaN"):
        decode_latents(pipe, torch.full((1, 4, 8, 8), float("nan")))

    # A float16 VAE that overflows: 1e4-sized latents are inf in float16 and finite in float32.
    half = Engine(device="cpu", dtype="float16")
    half_pipe = half.load(str(tiny_models["sd1"])).pipeline
    assert half_pipe.vae.dtype == torch.float16
    images = decode_latents(half_pipe, torch.full((1, 4, 8, 8), 7e4))
    assert images[0].size == (64, 64)
    assert half_pipe.vae.dtype == torch.float32  # stays upcast, like --no-half-vae


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl-base", "sdxl-refiner"])
def test_single_file_family_is_detected_from_its_keys(tmp_path, tiny_models, family):
    from support.single_file import to_single_file

    path = to_single_file(tiny_models[family], tmp_path / f"{family}.safetensors")
    info = resolve(str(path))
    assert info.kind == "single_file"
    assert info.family.value == {"sdxl-base": "sdxl"}.get(family, family)
    assert info.hash is not None
    assert len(info.hash) == 10


def test_single_file_with_sidecar_config_gives_the_same_pixels_as_the_folder(tmp_path, tiny_models, engine):
    from support.single_file import config_only_copy, to_single_file

    models = tmp_path / "models"
    models.mkdir()
    to_single_file(tiny_models["sd1"], models / "tiny-sd1.safetensors")
    # A fine-tune whose architecture differs from the bundled SD 1.5 config carries its configs beside it.
    config_only_copy(tiny_models["sd1"], models / "tiny-sd1.config")
    single = Engine(device="cpu", models_dir=models)
    request = {"prompt": "a cat", "seed": 4, "num_inference_steps": 3}
    from_file = single.generate(GenerationRequest(model="tiny-sd1", **request))
    from_folder = engine.generate(GenerationRequest(model=str(tiny_models["sd1"]), **request))
    assert np.array_equal(np.asarray(from_file.images[0]), np.asarray(from_folder.images[0]))
    assert "Model hash: " in from_file.infotexts[0]
    assert [m.ref for m in iter_local_models(models) if m.kind != "builtin"] == ["tiny-sd1.safetensors"]


def test_single_file_without_matching_config_is_a_clear_load_error(tmp_path, tiny_models):
    from support.single_file import to_single_file

    # Tiny weights against the bundled full-size SD 1.5 config: shapes cannot match.
    path = to_single_file(tiny_models["sd1"], tmp_path / "odd.safetensors")
    with pytest.raises(ModelLoadError, match="cannot load"):
        Engine(device="cpu").load(str(path))


@pytest.mark.parametrize("kind", ["folder", "single_file"])
def test_models_load_in_the_asked_dtype_without_deprecation_noise(tmp_path, tiny_models, kind):
    import warnings

    from imagegen.loading import load_pipeline
    from support.single_file import config_only_copy, to_single_file

    path = tiny_models["sd1"]
    if kind == "single_file":
        path = tmp_path / "tiny-sd1.safetensors"
        to_single_file(tiny_models["sd1"], path)
        config_only_copy(tiny_models["sd1"], tmp_path / "tiny-sd1.config")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipeline = load_pipeline(resolve(str(path)), dtype=torch.bfloat16)
    assert (pipeline.unet.dtype, pipeline.vae.dtype, pipeline.text_encoder.dtype) == (torch.bfloat16,) * 3
    # diffusers ≥ 0.42 warns on every load given the old keyword; a server's log would repeat it per model.
    assert not [w for w in caught if "torch_dtype" in str(w.message)]


def test_a_single_file_inpainting_checkpoint_gets_a_9_channel_unet_config(tmp_path) -> None:
    # An original-format SD 1.x inpainting checkpoint (sd-v1-5-inpainting.safetensors): its first UNet convolution
    # takes 9 channels. Without a sidecar config, the bundled reference config is copied with that input.
    import json

    import torch
    from safetensors.torch import save_file

    from imagegen.loading import _single_file_config, resolve

    path = tmp_path / "sd15-inpainting.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 9, 3, 3),
            "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(768),
        },
        str(path),
    )
    info = resolve(str(path))
    folder = _single_file_config(info)
    assert json.loads((folder / "unet" / "config.json").read_text())["in_channels"] == 9
    assert (folder / "model_index.json").is_file()
    assert _single_file_config(info) == folder  # made once, then reused
    ordinary = tmp_path / "sd15.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(768),
        },
        str(ordinary),
    )
    assert (
        json.loads((_single_file_config(resolve(str(ordinary))) / "unet" / "config.json").read_text())["in_channels"]
        == 4
    )
