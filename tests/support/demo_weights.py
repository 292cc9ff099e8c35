"""Where the shipped demo model lives, and the marker for tests that need it (they skip, saying why, without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

import imagegen.demo

WEIGHTS = Path(imagegen.demo.__file__).resolve().parent / "weights"
BASE = WEIGHTS / "imagegen-shapes"
REFINER = WEIGHTS / "imagegen-shapes-refiner"

requires_demo_weights = pytest.mark.skipif(
    not (BASE / "model_index.json").is_file() or not (REFINER / "model_index.json").is_file(),
    reason=f"the demo model weights are not in {WEIGHTS} (train them with `imagegen train-demo`)",
)
