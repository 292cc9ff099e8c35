"""A1111 styles (styles.csv, the {prompt} merge) and extra-network file lookup (names only, never paths)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from imagegen.errors import InvalidRequest, UnsafeModelFile
from imagegen.networks.files import addnet_hash, find, list_files
from imagegen.prompts.styles import Style, apply_styles, merge_prompt, read_styles


def test_merge_prompt_as_a1111() -> None:
    assert merge_prompt("photo of {prompt}, grain", "a cat") == "photo of a cat, grain"
    assert merge_prompt("sharp focus", " a cat ") == "a cat, sharp focus"  # appended after a comma, both stripped
    assert merge_prompt("", " a cat ") == "a cat"
    assert merge_prompt(" sharp ", "") == "sharp"
    assert merge_prompt("{prompt} and {prompt}", "x") == "x and x"


def test_styles_apply_in_order_to_both_prompts() -> None:
    styles = (
        Style(name="film", prompt="film still of {prompt}", negative_prompt="blurry"),
        Style(name="sharp", prompt="sharp", negative_prompt=""),
    )
    assert apply_styles("a cat", "dark", ["film", "sharp"], styles) == ("film still of a cat, sharp", "dark, blurry")
    assert apply_styles("a cat", "dark", ["sharp", "film"], styles) == ("film still of a cat, sharp", "dark, blurry")
    assert apply_styles("a cat", "", [], styles) == ("a cat", "")
    with pytest.raises(InvalidRequest) as error:
        apply_styles("a cat", "", ["sharp", "nope"], styles)
    assert error.value.field == "styles[1]"
    assert "film, sharp" in error.value.message
    with pytest.raises(InvalidRequest, match="none"):
        apply_styles("a cat", "", ["x"], ())


def test_read_styles_csv(tmp_path: Path) -> None:
    path = tmp_path / "styles.csv"
    path.write_text(
        '\ufeffname,prompt,negative_prompt\n"film","still of {prompt}, 35mm",blurry\n,orphan,\nbare\n',
        encoding="utf-8",
    )
    assert read_styles(path) == (
        Style(name="film", prompt="still of {prompt}, 35mm", negative_prompt="blurry"),
        Style(name="bare", prompt="", negative_prompt=""),
    )
    assert read_styles(tmp_path / "missing.csv") == ()
    assert read_styles(None) == ()


def test_network_files_are_found_by_name_only(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    (first / "sub").mkdir(parents=True)
    second.mkdir()
    (first / "sub" / "detail.safetensors").write_bytes(b"1")
    (second / "detail.safetensors").write_bytes(b"2")  # the first folder wins a name found twice
    (second / "other.pt").write_bytes(b"3")
    (second / ".hidden.safetensors").write_bytes(b"4")
    (second / "notes.txt").write_text("x")
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"5")
    os.symlink(outside, second / "escape.safetensors")
    files = list_files([first, second, tmp_path / "missing"])
    assert [(f.name, f.path.parent.name) for f in files] == [("detail", "sub"), ("other", "b")]
    assert find([first, second], "detail", field="loras", kind="LoRA", allow_pickle=False).path.read_bytes() == b"1"
    with pytest.raises(UnsafeModelFile, match="pickle"):
        find([second], "other", field="loras", kind="LoRA", allow_pickle=False)
    assert find([second], "other", field="loras", kind="LoRA", allow_pickle=True).pickle
    for name in ("../a/sub/detail", "/etc/passwd", "a/b", "a\\b", "x\x00", ".hidden", "", "http://x"):
        with pytest.raises(InvalidRequest) as error:
            find([first, second], name, field="loras", kind="LoRA", allow_pickle=False)
        assert error.value.field == "loras"
    with pytest.raises(InvalidRequest) as unknown:
        find([first, second], "escape", field="prompt", kind="LoRA", allow_pickle=False)
    assert "known: detail, other" in unknown.value.message


def test_addnet_hash_skips_the_safetensors_header(tmp_path: Path) -> None:
    body = b"tensor bytes"
    header = b'{"__metadata__":{"a":"b"}}'
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + body)
    assert addnet_hash(path) == hashlib.sha256(body).hexdigest()
    other = tmp_path / "x.pt"
    other.write_bytes(b"whole file")
    assert addnet_hash(other) == hashlib.sha256(b"whole file").hexdigest()


def test_a_symlink_loop_among_network_files_is_skipped(tmp_path: Path) -> None:
    from imagegen.networks.files import list_files

    (tmp_path / "ok.safetensors").write_bytes(b"x")
    (tmp_path / "loop.safetensors").symlink_to(tmp_path / "loop.safetensors")
    assert [file.name for file in list_files([tmp_path])] == ["ok"]
