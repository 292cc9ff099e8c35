"""The CPU default dtype (issue 13 item 1): ``auto`` runs full-size models in bfloat16 + channels-last on CPUs with
bfloat16 in hardware, small ones (the demo model, the tiny test models) in float32; explicit dtypes win; the choice
is made per model from its UNet's weight count, read from the files' headers."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch._dynamo.utils import counters

import imagegen.engine as engine_module
from imagegen import Engine, GenerationRequest, InvalidRequest
from imagegen.engine import CPU_BF16_MIN_PARAMETERS, auto_dtype, select_dtype
from imagegen.loading import ModelInfo, resolve, unet_parameters
from support.single_file import to_single_file

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


def _psnr(a: Any, b: Any) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.mark.parametrize(
    ("device", "parameters", "fast_bf16", "expected"),
    [
        (CUDA, 10, False, torch.float16),
        (MPS, 10**9, True, torch.float16),
        (CPU, 860_000_000, True, torch.bfloat16),  # SD 1.5 on an AVX512-BF16 / AMX CPU
        (CPU, CPU_BF16_MIN_PARAMETERS, True, torch.bfloat16),
        (CPU, CPU_BF16_MIN_PARAMETERS - 1, True, torch.float32),  # the demo model's size class
        (CPU, 860_000_000, False, torch.float32),  # no bfloat16 in hardware: emulated, slower
    ],
)
def test_auto_dtype_rule(device: torch.device, parameters: int, fast_bf16: bool, expected: torch.dtype) -> None:
    assert auto_dtype(device, parameters, fast_bf16=fast_bf16) == expected


def test_auto_dtype_probes_the_cpu_when_not_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "cpu_has_fast_bf16", lambda: True)
    assert auto_dtype(CPU, 10**9) == torch.bfloat16
    monkeypatch.setattr(engine_module, "cpu_has_fast_bf16", lambda: False)
    assert auto_dtype(CPU, 10**9) == torch.float32


def test_cpu_probe_reads_torch_cpu_capabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert engine_module.cpu_has_fast_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert engine_module.cpu_has_fast_bf16() is True
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert engine_module.cpu_has_fast_bf16() is True  # a torch without one probe asks the other


@pytest.mark.parametrize(("name", "expected"), [(None, None), ("", None), ("auto", None), ("BF16", torch.bfloat16)])
def test_select_dtype_leaves_auto_to_the_model(name: str | None, expected: torch.dtype | None) -> None:
    assert select_dtype(name, CPU) == expected


def test_unknown_dtype_names_the_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        select_dtype("float8", CPU)
    assert caught.value.field == "dtype"
    assert "auto, float32, float16 or bfloat16" in str(caught.value)


def _unet_numel(info: ModelInfo) -> int:
    from diffusers import UNet2DConditionModel

    return sum(p.numel() for p in UNet2DConditionModel.from_pretrained(info.path / "unet").parameters())


@pytest.mark.parametrize("family", ["sd1", "sdxl-base"])
def test_unet_parameters_of_a_folder_is_the_weight_count(tiny_models: Any, family: str) -> None:
    info = resolve(str(tiny_models[family]))
    assert unet_parameters(info) == _unet_numel(info) > 0


def test_unet_parameters_counts_a_folder_with_a_variant_once(tiny_models: Any, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_models["sd1"], folder)
    unet = folder / "unet"
    shutil.copyfile(unet / "diffusion_pytorch_model.safetensors", unet / "diffusion_pytorch_model.fp16.safetensors")
    info = resolve(str(folder))
    assert unet_parameters(info) == _unet_numel(info)


def test_unet_parameters_of_pickled_weights_counts_float16_bytes(tiny_models: Any, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_models["sd1"], folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    info = resolve(str(folder), allow_pickle=True)
    assert unet_parameters(info) == weights.with_suffix(".bin").stat().st_size // 2


def test_unet_parameters_of_a_single_file_counts_only_the_unet(tiny_models: Any, tmp_path: Path) -> None:
    path = to_single_file(tiny_models["sd1"], tmp_path / "model.safetensors")
    folder_count = _unet_numel(resolve(str(tiny_models["sd1"])))
    assert unet_parameters(resolve(str(path))) == folder_count
    # A file with other parts only: no UNet weights counted.
    other = tmp_path / "other.safetensors"
    save_file({"first_stage_model.decoder.conv_in.weight": torch.zeros(4, 4)}, str(other))
    assert unet_parameters(dataclasses.replace(resolve(str(path)), path=other)) == 0


def test_demo_model_stays_float32_by_default() -> None:
    engine = Engine(device="cpu")
    assert engine.dtype is None
    loaded = engine.load()
    assert loaded.pipeline.unet.dtype == torch.float32  # 4 M weights: bfloat16 would be slower
    assert loaded.pipeline.unet.conv_in.weight.is_contiguous()


@pytest.fixture
def full_size_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Treat the tiny models as full-size on a CPU with bfloat16 in hardware."""
    monkeypatch.setattr(engine_module, "CPU_BF16_MIN_PARAMETERS", 1)
    monkeypatch.setattr(engine_module, "cpu_has_fast_bf16", lambda: True)


def _request(**fields: Any) -> GenerationRequest:
    return GenerationRequest(
        **{"prompt": "a red circle", "seed": 3, "num_inference_steps": 4, "width": 64, "height": 64, **fields}
    )


@pytest.mark.usefixtures("full_size_rule")
def test_auto_loads_a_full_size_model_in_bfloat16_channels_last(tiny_models: Any) -> None:
    engine = Engine(device="cpu", default_model=str(tiny_models["sd1"]))
    pipeline = engine.load().pipeline
    assert (pipeline.unet.dtype, pipeline.vae.dtype, pipeline.text_encoder.dtype) == (torch.bfloat16,) * 3
    weight = pipeline.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    assert pipeline.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    auto = engine.generate(_request()).images[0]
    again = engine.generate(_request()).images[0]
    reference = Engine(device="cpu", dtype="float32", default_model=str(tiny_models["sd1"])).generate(_request())
    assert np.array_equal(np.asarray(auto), np.asarray(again))  # reproducible on the same machine
    assert not np.array_equal(np.asarray(auto), np.asarray(reference.images[0]))  # it did run in bfloat16
    assert _psnr(auto, reference.images[0]) > 30


@pytest.mark.usefixtures("full_size_rule")
def test_explicit_float32_wins_over_auto(tiny_models: Any) -> None:
    engine = Engine(device="cpu", dtype="float32", default_model=str(tiny_models["sd1"]))
    pipeline = engine.load().pipeline
    assert pipeline.unet.dtype == torch.float32
    assert pipeline.unet.conv_in.weight.is_contiguous()


@pytest.mark.usefixtures("full_size_rule")
def test_refiner_takes_its_base_dtype(tiny_models: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(device="cpu", default_model=str(tiny_models["sdxl-base"]))
    base = engine.load()
    # Whatever the refiner's own size says, it shares text_encoder_2 and the VAE with the base: same dtype.
    monkeypatch.setattr(engine_module, "CPU_BF16_MIN_PARAMETERS", 10**12)
    refiner = engine.load(str(tiny_models["sdxl-refiner"]), base=base)
    assert refiner.pipeline.unet.dtype == base.pipeline.unet.dtype == torch.bfloat16
    assert refiner.pipeline.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    result = engine.generate(_request(refiner=str(tiny_models["sdxl-refiner"])))
    assert result.images[0].size == (64, 64)


def test_compile_is_warmed_up_at_load_and_keeps_the_image(tiny_models: Any) -> None:
    plain = Engine(device="cpu", default_model=str(tiny_models["sd1"]))
    compiled = Engine(device="cpu", default_model=str(tiny_models["sd1"]), compile=True)
    unet = compiled.load().pipeline.unet
    assert unet._compiled_call_impl is not None  # compiled in place: LoRA and tiling see the same module
    assert compiled.options.compile
    size = unet.config.sample_size * 8  # the warm-up's shapes: no new graph for a native-size request
    request = _request(width=size, height=size)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    image = compiled.generate(request).images[0]
    assert counters["stats"]["unique_graphs"] == graphs  # compiled at load, not by the first request
    assert _psnr(image, plain.generate(request).images[0]) > 40
