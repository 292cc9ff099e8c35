"""Encoded prompts are kept across requests, and only for the same text-encoder state: the same pixels as encoding
anew, one encode for a repeated prompt, a new encode whenever what the text encoders compute changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imagegen import GenerationRequest
from imagegen.engine import Engine
from imagegen.prompts.cache import ConditioningCache
from imagegen.prompts.encoding import Conditioning, PromptEncoder
from support.tiny_loras import make_lora


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text a PromptEncoder really encodes, in order."""
    texts: list[str] = []
    original = PromptEncoder.encode

    def encode(self: PromptEncoder, text: str) -> Conditioning:
        texts.append(text)
        return original(self, text)

    monkeypatch.setattr(PromptEncoder, "encode", encode)
    return texts


def test_a_repeated_prompt_is_encoded_once_and_gives_the_same_pixels(tiny_models, counted: list[str]) -> None:
    engine = Engine(device="cpu")
    request = GenerationRequest(prompt="a cat", negative_prompt="blur", model=str(tiny_models["sd1"]), seed=1)
    request = GenerationRequest(**{**request.__dict__, "num_inference_steps": 2})
    first = engine.generate(request)
    assert sorted(counted) == ["", "a cat", "blur"]
    counted.clear()
    second = engine.generate(GenerationRequest(**{**request.__dict__, "seed": 2}))
    assert counted == []  # every text came from the cache
    fresh = Engine(device="cpu").generate(GenerationRequest(**{**request.__dict__, "seed": 2}))
    assert np.array_equal(np.asarray(second.images[0]), np.asarray(fresh.images[0]))
    assert not np.array_equal(np.asarray(first.images[0]), np.asarray(second.images[0]))
    assert engine.conditionings.hits >= 3


def test_what_changes_the_text_encoders_is_part_of_the_key(tiny_models, tmp_path: Path, counted: list[str]) -> None:
    loras = tmp_path / "Lora"
    make_lora(tiny_models["sd1"], loras / "style.safetensors", fmt="kohya", text=True)
    engine = Engine(device="cpu", lora_dirs=(loras,))
    base = {"prompt": "a cat", "model": str(tiny_models["sd1"]), "num_inference_steps": 1}
    engine.generate(GenerationRequest(**base))
    for change in ({"clip_skip": 2}, {"emphasis": "No norm"}, {"prompt": "a cat <lora:style:1>"}):
        counted.clear()
        engine.generate(GenerationRequest(**{**base, **change}))
        assert "a cat" in [text.strip() for text in counted], change
    counted.clear()
    engine.generate(GenerationRequest(**{**base, "prompt": "a cat <lora:style:0.5>"}))  # another text-encoder weight
    assert "a cat" in [text.strip() for text in counted]
    counted.clear()
    engine.generate(GenerationRequest(**{**base, "prompt": "a cat <lora:style:0.5>"}))
    assert counted == []
    # The LoRA taken off again: the plain encoders' entry is still valid.
    engine.generate(GenerationRequest(**base))
    assert counted == []


def test_an_embedding_file_appearing_invalidates_the_cached_prompts(tiny_models, tmp_path: Path, counted) -> None:
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "embeddings"
    folder.mkdir()
    engine = Engine(device="cpu", embeddings_dirs=(folder,))
    request = GenerationRequest(prompt="a shiny cat", model=str(tiny_models["sd1"]), num_inference_steps=1)
    engine.generate(request)
    width = engine.load(str(tiny_models["sd1"])).pipeline.text_encoder.get_input_embeddings().weight.shape[1]
    save_file({"emb_params": torch.randn(2, width)}, str(folder / "shiny.safetensors"))
    counted.clear()
    engine.generate(request)
    assert "a shiny cat" in counted


def test_the_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    cache = ConditioningCache(max_entries=2)
    made: list[str] = []

    def encode(text: str) -> Conditioning:
        made.append(text)
        return Conditioning(torch_zeros())

    for text in ("a", "b", "a", "c", "b"):
        cache.get(text, lambda t=text: encode(t))
    # "a" was used after "b", so "b" went when "c" came; "b" was encoded again.
    assert made == ["a", "b", "c", "b"]
    assert len(cache) == 2
    assert (cache.hits, cache.misses) == (1, 4)
    off = ConditioningCache(max_entries=0)
    off.get("a", lambda: encode("a"))
    assert len(off) == 0
    with pytest.raises(ValueError, match="max_entries"):
        ConditioningCache(max_entries=-1)


def torch_zeros():
    import torch

    return torch.zeros(1, 77, 8)
