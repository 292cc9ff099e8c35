"""The programs in ``examples/`` run as written on the shipped demo model (each in its own process, like a user)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.demo_weights import requires_demo_weights

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, requires_demo_weights]


@pytest.mark.parametrize(
    ("script", "writes"),
    [
        ("sdxl_base_refiner.py", "base+refiner.png"),
        ("one_call_pipeline.py", "shapes.png"),
        ("with_imagegen.py", "outputs/examples"),
    ],
)
def test_example_runs_and_writes_its_image(script: str, writes: str, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    target = tmp_path / writes
    assert target.is_file() or any(target.glob("*.png")), done.stdout
