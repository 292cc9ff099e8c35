"""The CLI's prompt-language flags: --lora, --style, --clip-skip, --emphasis reach the request (and the infotext)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from imagegen.cli import main
from imagegen.metadata import parse_infotext, read_infotext
from support.tiny_loras import make_lora


def test_lora_style_and_clip_skip_flags(tmp_path: Path, tiny_models, capsys) -> None:
    loras = tmp_path / "Lora"
    make_lora(tiny_models["sd1"], loras / "detail.safetensors", fmt="kohya")
    styles = tmp_path / "styles.csv"
    styles.write_text("name,prompt,negative_prompt\nfilm,photo of {prompt},blurry\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["generate", "a cat", "--model", str(tiny_models["sd1"]), "--steps", "2", "--seed", "3", "--device", "cpu"]
    argv += ["--lora-dir", str(loras), "--styles-file", str(styles), "--out", str(out)]
    assert main([*argv, "--lora", "detail:0.5", "--style", "film", "--clip-skip", "2"]) == 0
    image = Image.open(capsys.readouterr().out.split()[-1])
    text = read_infotext(image) or ""
    info = parse_infotext(text)
    assert info.prompt == "photo of a cat <lora:detail:0.5>"
    assert "Clip skip: 2" in text
    assert "Lora hashes: " in text
    # --from brings the LoRA and clip skip back: the same pixels.
    again = [a for a in argv if a != "a cat"]
    assert main([*again, "--from", str(image.filename)]) == 0
    assert Image.open(capsys.readouterr().out.split()[-1]).tobytes() == image.tobytes()


@pytest.mark.parametrize(
    ("flag", "fragment"),
    [
        (["--lora", "detail:x"], "weights must be numbers"),
        (["--lora", "detail:1:2:3"], "at most two weights"),
        (["--clip-skip", "13"], "between 1 and 12"),
        (["--emphasis", "Loud"], "Original, No norm, Ignore, None"),
    ],
)
def test_bad_prompt_language_flags_exit_2_naming_them(flag: list[str], fragment: str, capsys) -> None:
    try:
        code: object = main(["generate", "a cat", *flag])
    except SystemExit as exc:  # argparse's own type errors exit; the request's checks return 2
        code = exc.code
    assert code == 2
    assert fragment in capsys.readouterr().err
