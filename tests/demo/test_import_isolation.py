"""The runtime commands load no training code: ``imagegen info`` and ``imagegen generate`` never import
``imagegen_shapes`` (the trainer, world, analyser and evaluator beside the package) nor the ``imagegen demo`` gallery.

Each command runs in a fresh interpreter, as a user runs it, which then lists the modules it has loaded; a module
imported by an earlier test in this process cannot hide or fake a result.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.demo_weights import requires_demo_weights

# Runs the CLI with the probe's arguments, then prints the loaded modules of interest on a marked last line, even when
# the command exits through SystemExit (``--help``) or fails, so the caller can always read them.
_PROBE = """
import sys
from imagegen.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
finally:
    names = sorted(m for m in sys.modules if m.startswith(("imagegen_shapes", "imagegen.demo.gallery")))
    print("LOADED", names)
sys.exit(status or 0)
"""

_GALLERY = "imagegen.demo.gallery"


def _loaded_by(*argv: str, cwd: Path) -> set[str]:
    """The training / gallery modules that ``imagegen ARGV`` imported, run in a fresh interpreter (it must succeed)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    marked = [line for line in done.stdout.splitlines() if line.startswith("LOADED ")]
    assert marked, f"the probe printed no module list; stderr: {done.stderr[-2000:]}"
    assert done.returncode == 0, f"imagegen {' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}"
    return set(ast.literal_eval(marked[-1].removeprefix("LOADED ")))


def _png_with_infotext(path: Path) -> Path:
    """A PNG carrying an A1111 ``parameters`` chunk, written with Pillow alone (no imagegen code involved)."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a red circle\nSteps: 20, Sampler: Euler, CFG scale: 3, Seed: 7, Size: 64x64")
    Image.new("RGB", (64, 64), "white").save(path, pnginfo=info)
    return path


def test_the_probe_sees_training_code_when_a_training_command_runs(tmp_path: Path) -> None:
    # The control: the same probe does report imagegen_shapes when eval-demo loads it (then prints its help).
    loaded = _loaded_by("eval-demo", "--help", cwd=tmp_path)
    assert "imagegen_shapes.evaluate" in loaded


def test_info_imports_no_training_code_nor_the_gallery(tmp_path: Path) -> None:
    image = _png_with_infotext(tmp_path / "in.png")
    loaded = _loaded_by("info", str(image), cwd=tmp_path)
    assert not {m for m in loaded if m.startswith("imagegen_shapes")}
    assert _GALLERY not in loaded


@pytest.mark.slow
@requires_demo_weights
def test_generate_imports_no_training_code_nor_the_gallery(tmp_path: Path) -> None:
    # The built-in demo model (the default model) is the case most likely to reach for its training code.
    loaded = _loaded_by("generate", "a red circle", "--steps", "2", "--seed", "1", "--out", "out", cwd=tmp_path)
    assert list((tmp_path / "out").glob("*.png"))
    assert not {m for m in loaded if m.startswith("imagegen_shapes")}
    assert _GALLERY not in loaded


@pytest.mark.slow
@requires_demo_weights
def test_the_demo_command_does_import_the_gallery(tmp_path: Path) -> None:
    # The control for the gallery: running `imagegen demo` loads it, and the probe reports it.
    loaded = _loaded_by("demo", "--out", "gallery", cwd=tmp_path)
    assert (tmp_path / "gallery").is_dir()
    assert _GALLERY in loaded
