"""The CLI's editing flags: --mask (inpainting), --outpaint, --hires, --tiling, --sd-upscale reach the request, the
infotext records them, and --from repeats them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagegen.cli import main
from imagegen.metadata import parse_infotext, read_infotext


def _base(tiny_models, out: Path) -> list[str]:
    return [
        "generate",
        "--model",
        str(tiny_models["sd1"]),
        "--steps",
        "2",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]


def _written(capsys) -> Image.Image:
    return Image.open(capsys.readouterr().out.split()[-1])


def test_mask_flags_inpaint_and_from_needs_the_mask(tmp_path: Path, tiny_models, capsys) -> None:
    source = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    source.save(tmp_path / "in.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (40, 0, 64, 64))
    mask.save(tmp_path / "mask.png")
    argv = [*_base(tiny_models, tmp_path / "out"), "a dog", "--init-image", str(tmp_path / "in.png")]
    argv += ["--mask", str(tmp_path / "mask.png"), "--mask-blur", "2", "--inpaint-fill", "latent nothing"]
    assert main(argv) == 0
    image = _written(capsys)
    assert np.array_equal(np.asarray(image)[:, :30], np.asarray(source)[:, :30])
    info = parse_infotext(read_infotext(image) or "")
    assert (info.extra["Mask blur"], info.extra["Masked content"]) == ("2", "latent nothing")
    # --from without the mask cannot repeat an inpainting; with it, the same pixels.
    base = _base(tiny_models, tmp_path / "again")
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--from", str(image.filename), "--init-image", str(tmp_path / "in.png")])
    assert exit_info.value.code == 2
    assert "pass the mask with --mask" in capsys.readouterr().err
    repeat = [*base, "--from", str(image.filename), "--init-image", str(tmp_path / "in.png")]
    assert main([*repeat, "--mask", str(tmp_path / "mask.png")]) == 0
    assert _written(capsys).tobytes() == image.tobytes()


def test_outpaint_hires_and_tiling_flags(tmp_path: Path, tiny_models, capsys) -> None:
    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "in.png")
    base = _base(tiny_models, tmp_path / "out")
    assert main([*base, "a cat", "--init-image", str(tmp_path / "in.png"), "--outpaint", "8,8,0,16"]) == 0
    assert _written(capsys).size == (80, 64)
    assert main([*base, "a cat", "--hires", "--hr-scale", "1.5", "--hr-upscaler", "Lanczos", "--strength", "0.4"]) == 0
    hires = _written(capsys)
    assert hires.size == (96, 96)
    text = read_infotext(hires) or ""
    assert "Hires upscale: 1.5" in text
    assert "Hires upscaler: Lanczos" in text
    # --from repeats a hires image with no init image (its denoising strength is the hires fix's).
    assert main([*_base(tiny_models, tmp_path / "again"), "--from", str(hires.filename)]) == 0
    assert _written(capsys).tobytes() == hires.tobytes()
    assert main([*base, "a cat", "--hires", "--hr-resize", "128x64"]) == 0
    assert _written(capsys).size == (128, 64)
    assert main([*base, "a cat", "--tiling"]) == 0
    assert "Tiling: True" in (read_infotext(_written(capsys)) or "")


def test_sd_upscale_flag(tmp_path: Path, tiny_models, capsys) -> None:
    Image.new("RGB", (48, 48), (20, 30, 200)).save(tmp_path / "in.png")
    argv = [*_base(tiny_models, tmp_path / "out"), "a cat", "--init-image", str(tmp_path / "in.png")]
    assert main([*argv, "--sd-upscale", "2", "--sd-upscale-overlap", "16", "--size", "64x64"]) == 0
    image = _written(capsys)
    assert image.size == (96, 96)
    assert "SD upscale: 2" in (read_infotext(image) or "")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--outpaint", "8,8"], "LEFT,RIGHT,TOP,BOTTOM"),
        (["--mask-blur", "100"], "between 0 and 64"),
        (["--inpaint-fill", "blur"], "fill, original, latent noise, latent nothing"),
        (["--hires", "--hr-scale", "20"], "--hr-scale"),
        (["--mask", "/nonexistent/mask.png"], "mask"),
    ],
)
def test_bad_editing_flags_exit_2_naming_them(flags: list[str], fragment: str, capsys) -> None:
    try:
        code: object = main(["generate", "a cat", *flags])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert fragment in capsys.readouterr().err
