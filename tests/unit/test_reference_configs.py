"""The shipped CLIP tokenizer files and full-size reference configs."""

from __future__ import annotations

import importlib.util
import json
from importlib.resources import files
from pathlib import Path

import pytest
from transformers import CLIPTokenizer

from imagegen.errors import InvalidRequest
from imagegen.reference_configs import REFERENCE_CONFIGS, materialize_reference_config

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = files("imagegen") / "configs" / "clip-tokenizer"
A_PHOTO_OF_A_CAT = [49406, 320, 1125, 539, 320, 2368, 49407]


def _load_tool():  # the build script is not a package module: load it from its path
    spec = importlib.util.spec_from_file_location(
        "build_clip_tokenizer", REPO_ROOT / "tools" / "build_clip_tokenizer.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_tokenizer_files_are_what_the_tool_builds():
    tool = _load_tool()
    bpe = tool.find_open_clip_bpe()
    if bpe is None:
        pytest.skip("open-clip-torch is not installed, so the BPE source file is unavailable")
    vocab_text, merges_text = tool.render_tokenizer_files(bpe)
    assert (TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8") == vocab_text
    assert (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8") == merges_text


def test_vocab_and_merges_have_the_clip_shape():
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    merges = (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 49408
    assert sorted(vocab.values()) == list(range(49408))
    assert vocab["<|startoftext|>"] == 49406
    assert vocab["<|endoftext|>"] == 49407
    assert merges[0] == "#version: 0.2"
    assert len(merges) == 1 + 48894


def test_tokenizer_gives_the_real_clip_ids():
    tokenizer = CLIPTokenizer(
        vocab=str(TOKENIZER_DIR / "vocab.json"), merges=str(TOKENIZER_DIR / "merges.txt"), model_max_length=77
    )
    assert tokenizer("a photo of a cat").input_ids == A_PHOTO_OF_A_CAT
    assert len(tokenizer) == 49408


@pytest.mark.parametrize(
    ("config", "subfolder", "pad_token", "pad_id"),
    [
        ("sd15", "tokenizer", "<|endoftext|>", 49407),
        ("sd21", "tokenizer", "!", 0),
        ("sdxl-base", "tokenizer", "<|endoftext|>", 49407),
        ("sdxl-base", "tokenizer_2", "!", 0),
        ("sdxl-refiner", "tokenizer_2", "!", 0),
    ],
)
def test_materialized_tokenizers_pad_like_upstream(tmp_path, config, subfolder, pad_token, pad_id):
    folder = materialize_reference_config(config, tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(folder / subfolder)
    assert tokenizer.model_max_length == 77
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == (pad_token, pad_id)
    padded = tokenizer("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert padded[:7] == A_PHOTO_OF_A_CAT
    assert padded[7:] == [pad_id] * 70


@pytest.mark.parametrize("config", REFERENCE_CONFIGS)
def test_materialized_folder_is_the_configs_plus_tokenizer_files(tmp_path, config):
    folder = materialize_reference_config(config, tmp_path)
    assert folder == tmp_path / config
    source = files("imagegen") / "configs" / config
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    assert index == json.loads((source / "model_index.json").read_text(encoding="utf-8"))
    tokenizer_dirs = sorted(p.name for p in folder.glob("tokenizer*"))
    assert tokenizer_dirs == sorted(k for k, v in index.items() if k.startswith("tokenizer") and v[0] is not None)
    for name in tokenizer_dirs:
        assert (folder / name / "vocab.json").read_bytes() == (TOKENIZER_DIR / "vocab.json").read_bytes()
        assert (folder / name / "merges.txt").read_bytes() == (TOKENIZER_DIR / "merges.txt").read_bytes()
    assert (folder / "unet" / "config.json").read_bytes() == (source / "unet" / "config.json").read_bytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name != config]  # no staging folder left behind


def test_materialize_is_idempotent_and_keeps_the_existing_folder(tmp_path):
    first = materialize_reference_config("sd15", tmp_path)
    marker = first / "marker"
    marker.write_text("kept")
    assert materialize_reference_config("sd15", tmp_path) == first
    assert marker.read_text() == "kept"


def test_unknown_config_name_is_refused(tmp_path):
    with pytest.raises(InvalidRequest, match="sdxl-base"):
        materialize_reference_config("../sd15", tmp_path)
    assert list(tmp_path.iterdir()) == []
