"""Fuzzing: schemathesis against ``/openapi.json`` of a real ``imagegen serve`` (fake engine), every phase
(examples, coverage, fuzzing, stateful), with a bounded budget: no response may be a 5xx."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

#: Examples per operation and phase; about 2,700 requests and 40 s on 2 cores.
MAX_EXAMPLES = 10
SEED = 1


def test_no_generated_request_gets_a_server_error(make_server, tmp_path: Path) -> None:
    server = make_server("--api-key", "fuzz-key").start()
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [
            str(st),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--header",
            "Authorization: Bearer fuzz-key",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path / "report"),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # schemathesis keeps a cache in its working directory: not in the checkout
        # Real images for the image fields (format: image, image/* uploads): fuzzing then reaches the image code.
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(Path(__file__).parents[1] / "support" / "fuzz_hooks.py")},
    )
    output = result.stdout + result.stderr
    print(output[-2500:])  # the summary and schemathesis's warnings, shown with -s
    assert result.returncode == 0, output[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert generated is not None, output[-3000:]
    assert int(generated.group(1)) == int(generated.group(2)) >= 1000, generated.group(0)
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in output or f"✅ {phase}" in output, phase
    assert "Server error" not in output
