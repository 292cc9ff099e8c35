"""The command line end to end: generate, --from, info, models, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagegen.cli import main
from imagegen.metadata import parse_infotext, read_infotext, write_image


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_generate_writes_pngs_with_infotext(tmp_path, tiny_models, capsys):
    code = run(
        [
            "generate",
            "a red circle",
            "--model",
            str(tiny_models["sd1"]),
            "--seed",
            "7",
            "--steps",
            "2",
            "-n",
            "2",
            "--size",
            "64x48",
            "--sampler",
            "Euler",
            "--cfg",
            "5",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    paths = [Path(line) for line in capsys.readouterr().out.split()]
    assert [p.name for p in paths] == ["00000-7.png", "00001-8.png"]
    with Image.open(paths[1]) as image:
        assert image.size == (64, 48)
    info = parse_infotext(read_infotext(paths[1]))
    assert (info.prompt, info.seed, info.steps, info.sampler, info.cfg_scale) == ("a red circle", 8, 2, "Euler", 5.0)


def test_from_regenerates_identical_pixels_and_allows_overrides(tmp_path, tiny_models, capsys):
    assert (
        run(
            [
                "generate",
                "a blue square",
                "--model",
                str(tiny_models["sd1"]),
                "--seed",
                "5",
                "--steps",
                "2",
                "--sampler",
                "DPM++ 2M Karras",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    original = Path(capsys.readouterr().out.split()[0])
    assert run(["generate", "--from", str(original), "--out", str(tmp_path / "b")]) == 0
    again = Path(capsys.readouterr().out.split()[0])
    assert np.array_equal(np.asarray(Image.open(original)), np.asarray(Image.open(again)))
    assert read_infotext(again) == read_infotext(original)

    assert run(["generate", "--from", str(original), "--seed", "6", "--out", str(tmp_path / "c")]) == 0
    changed = Path(capsys.readouterr().out.split()[0])
    assert parse_infotext(read_infotext(changed)).seed == 6
    assert parse_infotext(read_infotext(changed)).prompt == "a blue square"


def test_from_a_ddim_image_keeps_its_eta_unless_another_sampler_is_typed(tmp_path, tiny_models, capsys):
    source = tmp_path / "ddim.png"
    text = (
        "a red circle\nSteps: 2, Sampler: DDIM, CFG scale: 5, Seed: 3, Size: 64x64, "
        f"Model: {tiny_models['sd1']}, Eta DDIM: 1"
    )
    write_image(Image.new("RGB", (64, 64)), text, source)
    assert run(["generate", "--from", str(source), "--out", str(tmp_path / "a")]) == 0
    same = parse_infotext(read_infotext(Path(capsys.readouterr().out.split()[0])))
    assert (same.sampler, same.extra.get("Eta DDIM")) == ("DDIM", "1")
    # Euler has no eta: the image's eta is dropped instead of refusing the sampler the user typed.
    assert run(["generate", "--from", str(source), "--sampler", "Euler", "--out", str(tmp_path / "b")]) == 0
    other = parse_infotext(read_infotext(Path(capsys.readouterr().out.split()[0])))
    assert (other.sampler, "Eta DDIM" in other.extra) == ("Euler", False)


def test_from_an_img2img_image_needs_the_init_image(tmp_path, tiny_models, capsys):
    init = tmp_path / "in.png"
    Image.new("RGB", (64, 64), "yellow").save(init)
    assert (
        run(
            [
                "generate",
                "x",
                "--model",
                str(tiny_models["sd1"]),
                "--init-image",
                str(init),
                "--strength",
                "0.5",
                "--steps",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    made = capsys.readouterr().out.split()[0]
    assert run(["generate", "--from", made, "--out", str(tmp_path)]) == 2
    assert "--init-image" in capsys.readouterr().err
    assert run(["generate", "--from", made, "--init-image", str(init), "--out", str(tmp_path / "again")]) == 0
    again = capsys.readouterr().out.split()[0]
    assert np.array_equal(np.asarray(Image.open(made)), np.asarray(Image.open(again)))


def test_info_prints_parameters_and_json(tmp_path, tiny_models, capsys):
    assert (
        run(
            [
                "generate",
                "a cat",
                "--negative",
                "dog",
                "--model",
                str(tiny_models["sd1"]),
                "--seed",
                "3",
                "--steps",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    path = capsys.readouterr().out.split()[0]
    assert run(["info", path]) == 0
    text = capsys.readouterr().out
    assert text.startswith("a cat\nNegative prompt: dog\nSteps: 1,")
    assert run(["info", path, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["prompt"] == "a cat"
    assert data["seed"] == 3
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert run(["info", str(plain)]) == 1


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        (["--steps", "0"], "--steps"),
        (["--size", "100x100"], "--size"),
        (["--size", "big"], "--size"),
        (["--sampler", "Eulerish"], "--sampler"),
        (["--strength", "2"], "--strength"),
        (["--model", "/no/such/model"], "--model"),
        (["--cfg", "nan"], "--cfg"),
        (["--device", "cuda:7"], "--device"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(tiny_models, tmp_path, capsys, args, argument):
    base = ["generate", "x", "--model", str(tiny_models["sd1"]), "--out", str(tmp_path)]
    assert run(base + args) == 2
    err = capsys.readouterr().err
    assert f"argument {argument}" in err
    assert not list(tmp_path.glob("*.png"))


def test_runtime_failure_exits_1_with_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}')
    assert run(["generate", "x", "--model", str(broken), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("imagegen: model_load_error:")
    assert "\n" not in err


def test_pickle_refused_with_exit_2(tmp_path, capsys):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04")
    assert run(["generate", "x", "--model", str(ckpt), "--out", str(tmp_path)]) == 2
    assert "--allow-pickle" in capsys.readouterr().err


def test_models_lists_local_models_with_family(tmp_path, tiny_models, capsys):
    for name in ("sd1", "sdxl-base"):
        shutil.copytree(tiny_models[name], tmp_path / name)
    assert run(["models", "--models-dir", str(tmp_path), "--json"]) == 0
    rows = {row["ref"]: row["family"] for row in json.loads(capsys.readouterr().out) if row["kind"] != "builtin"}
    assert rows == {"sd1": "sd1", "sdxl-base": "sdxl"}
    assert run(["models", "--models-dir", str(tmp_path)]) == 0
    assert "sdxl" in capsys.readouterr().out


def test_models_hub_lists_by_downloads(monkeypatch, hub_mirror, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", hub_mirror.url)
    assert run(["models", "--hub", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["downloads"] for r in rows] == sorted((r["downloads"] for r in rows), reverse=True)
    assert run(["models", "--hub", "tiny-sd1"]) == 0
    assert "imagegen-test/tiny-sd1" in capsys.readouterr().out


def test_console_script_end_to_end(tmp_path, tiny_models):
    """The installed `imagegen` command, as a user runs it (also proves `python -m`-free startup works)."""
    exe = Path(sys.executable).with_name("imagegen")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            str(exe),
            "generate",
            "a cat",
            "--model",
            str(tiny_models["sd1"]),
            "--steps",
            "2",
            "--seed",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_file()
    bad = subprocess.run(
        [str(exe), "generate", "x", "--steps", "0", "--model", str(tiny_models["sd1"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 2
    assert "argument --steps" in bad.stderr
