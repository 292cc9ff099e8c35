"""LoRA through the real engine on tiny models: formats (diffusers/peft and kohya), families, weights, isolation
between requests, infotext round trip, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imagegen.engine import Engine
from imagegen.errors import InvalidRequest, UnsafeModelFile
from imagegen.metadata import infotext_values, parse_infotext, request_fields_from_infotext
from imagegen.networks.files import addnet_hash
from imagegen.requests import GenerationRequest
from support.tiny_loras import make_loha, make_lora

FAMILIES = ("sd1", "sd2", "sdxl-base")


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_models) -> Path:
    folder = tmp_path_factory.mktemp("Lora")
    for name in FAMILIES:
        for fmt in ("diffusers", "kohya"):
            make_lora(tiny_models[name], folder / f"{name}-{fmt}.safetensors", fmt=fmt)
    make_lora(tiny_models["sd1"], folder / "sd1-other.safetensors", seed=1)
    make_loha(folder / "loha.safetensors")
    (folder / "pickled.pt").write_bytes(b"\x80\x04N.")
    return folder


@pytest.fixture(scope="module")
def lora_engine(lora_dir) -> Engine:
    return Engine(device="cpu", lora_dirs=(lora_dir,), max_loras=2)


def _image(engine: Engine, model: Path, prompt: str, **fields: object) -> np.ndarray:
    request = GenerationRequest(prompt=prompt, model=str(model), seed=3, num_inference_steps=3, **fields)  # type: ignore[arg-type]
    return np.asarray(engine.generate(request).images[0], dtype=np.int16)


@pytest.mark.parametrize("name", FAMILIES)
def test_both_formats_load_and_mean_the_same(lora_engine, tiny_models, name):
    model = tiny_models[name]
    fresh = _image(Engine(device="cpu"), model, "a cat")
    diffusers_format = _image(lora_engine, model, f"a cat <lora:{name}-diffusers:1>")
    kohya_format = _image(lora_engine, model, f"a cat <lora:{name}-kohya:1>")
    assert np.abs(diffusers_format - fresh).max() > 10  # the LoRA changes the image
    # The same weights in kohya (A1111/civitai) key names give the same image as the diffusers file.
    assert np.array_equal(diffusers_format, kohya_format)
    # Isolation: after LoRA requests, a request without LoRA gives a fresh engine's pixels, bit for bit.
    assert np.array_equal(_image(lora_engine, model, "a cat"), fresh)
    # Weight 0 is no LoRA; the structured field means the same as the tag.
    assert np.array_equal(_image(lora_engine, model, f"a cat <lora:{name}-kohya:0>"), fresh)
    field = _image(lora_engine, model, "a cat", loras=[{"name": f"{name}-kohya", "weight": 1.0}])
    assert np.array_equal(field, kohya_format)


def test_text_encoder_and_unet_weights_apart(lora_engine, tiny_models):
    model = tiny_models["sd1"]
    fresh = _image(lora_engine, model, "a cat")
    both = _image(lora_engine, model, "a cat <lora:sd1-kohya:1>")
    te_only = _image(lora_engine, model, "a cat <lora:sd1-kohya:1:0>")
    unet_only = _image(lora_engine, model, "a cat", loras=[{"name": "sd1-kohya", "te_weight": 0, "unet_weight": 1}])
    for image in (te_only, unet_only):
        assert not np.array_equal(image, fresh)
        assert not np.array_equal(image, both)
    half = _image(lora_engine, model, "a cat <lora:sd1-kohya:0.5>")
    assert not np.array_equal(half, both)


def test_two_loras_at_once_and_the_adapter_bound(lora_engine, tiny_models):
    model = tiny_models["sd1"]
    one = _image(lora_engine, model, "a cat <lora:sd1-kohya:1>")
    two = _image(lora_engine, model, "a cat <lora:sd1-kohya:1> <lora:sd1-other:1>")
    assert not np.array_equal(one, two)
    # max_loras=2: loading a third file drops the least recently used, and everything still computes right.
    _image(lora_engine, model, "a cat <lora:sd1-diffusers:1>")
    adapters = lora_engine.load(str(model)).adapters
    assert adapters is not None
    assert len(adapters.loaded()) <= 2
    assert np.array_equal(_image(lora_engine, model, "a cat <lora:sd1-kohya:1> <lora:sd1-other:1>"), two)


def test_infotext_records_lora_hashes_and_brings_the_lora_back(lora_engine, tiny_models, lora_dir):
    model = tiny_models["sd1"]
    result = lora_engine.generate(
        GenerationRequest(
            prompt="a cat",
            loras=[{"name": "sd1-kohya", "weight": 0.7}],
            model=str(model),
            seed=5,
            num_inference_steps=3,
        )
    )
    info = parse_infotext(result.infotexts[0])
    assert info.prompt == "a cat <lora:sd1-kohya:0.7>"  # asked by field, written as the tag A1111 reads
    expected = addnet_hash(lora_dir / "sd1-kohya.safetensors")[:12]
    assert infotext_values(info)["Lora hashes"] == f"sd1-kohya: {expected}"
    fields = request_fields_from_infotext(result.infotexts[0])
    again = lora_engine.generate(GenerationRequest(**{**fields, "model": str(model)}))
    assert again.images[0].tobytes() == result.images[0].tobytes()


def test_refusals_name_the_file_and_the_reason(lora_engine, tiny_models):
    model = str(tiny_models["sd1"])

    def refused(prompt: str, **fields: object) -> InvalidRequest:
        with pytest.raises(InvalidRequest) as error:
            lora_engine.generate(GenerationRequest(prompt=prompt, model=model, num_inference_steps=1, **fields))  # type: ignore[arg-type]
        return error.value

    loha = refused("a <lora:loha:1>")
    assert "loha.safetensors" in loha.message
    assert "LoHa" in loha.message
    wrong_family = refused("a <lora:sdxl-base-kohya:1>")
    assert "sd1" in wrong_family.message
    assert "cannot be applied" in wrong_family.message
    unknown = refused("a <lora:nope:1>")
    assert unknown.field == "prompt"
    assert "sd1-kohya" in unknown.message
    for name in ("../sd1-kohya", "/etc/passwd", "a/b", "x\\y"):
        assert "not a path" in refused("a", loras=[{"name": name}]).message
    assert "twice" in refused("a <lora:sd1-kohya:1>", loras=[{"name": "sd1-kohya"}]).message
    assert refused("a <hypernet:x:1>").field == "prompt"
    with pytest.raises(UnsafeModelFile, match="pickle"):
        lora_engine.generate(GenerationRequest(prompt="a <lora:pickled:1>", model=model, num_inference_steps=1))
    with pytest.raises(InvalidRequest, match=r"loras\[0\]\.weight"):
        GenerationRequest(prompt="a", loras=[{"name": "x", "weight": 80}])


def test_a_negative_prompts_tags_are_text_as_in_a1111(lora_engine, tiny_models):
    model = tiny_models["sd1"]
    result = lora_engine.generate(
        GenerationRequest(
            prompt="a cat", negative_prompt="<lora:nope:1> blurry", model=str(model), num_inference_steps=1
        )
    )
    assert "Lora hashes" not in result.infotexts[0]


def test_sdxl_base_and_refiner_with_a_lora_and_prompt_editing(lora_engine, tiny_models):
    fields = {
        "model": str(tiny_models["sdxl-base"]),
        "refiner": str(tiny_models["sdxl-refiner"]),
        "seed": 1,
        "num_inference_steps": 6,
    }
    with_lora = lora_engine.generate(GenerationRequest(prompt="a [cat|dog] <lora:sdxl-base-kohya:1>", **fields))
    without = lora_engine.generate(GenerationRequest(prompt="a [cat|dog]", **fields))
    assert with_lora.images[0].tobytes() != without.images[0].tobytes()
    assert "Refiner: " in with_lora.infotexts[0]
    assert "Lora hashes: " in with_lora.infotexts[0]
