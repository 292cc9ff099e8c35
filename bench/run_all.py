"""``make bench``: every benchmark of this folder in one run, on this machine, and a summary of the ratios.

Each figure is a ratio against a baseline measured in the same run (never an absolute time to assert):

- engine vs raw diffusers on the demo model (target <= 1.03x) and the prompt cache's gain;
- dynamic batching: 16 concurrent compatible requests, batched vs one at a time (target >= 2.5x);
- polling: 16 clients reading their job every 50 ms vs quiet clients (target: <= 10 % of the images/s lost);
- editing: the hires fix and inpainting against plain generation, upscalers in seconds per megapixel;
- bfloat16 against float32 on a full-size SD 1.5 UNet (random weights), with the PSNR between them, and the CPU
  default against diffusers' float32 default on a whole SD 1.5 call at 512x512;
- on a CUDA GPU, the GPU fast path against diffusers' float16 recipe (SDXL size, 1024x1024, 30 steps) and the
  UNet's TFLOP/s against the GPU's bfloat16 peak;
- the memory a generation takes per image size, on top of the loaded model;
- a mixed load of 64 clients (submits, polls, SSE, downloads) for 2 minutes: latencies, images/s, jobs lost (0);
- faults under that load: 20 worker kill -9s, 2 API kill -9s, a SIGTERM drain and a full disk (as root), with the
  time to recover from each and jobs lost (0).

    make bench            # or: PYTHONPATH=tests HF_HUB_OFFLINE=1 .venv/bin/python bench/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _run(script: str, *args: str) -> tuple[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "tests"), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(HERE / script), *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - started


def _json(text: str) -> dict[str, Any]:
    start = text.index("{")
    parsed: dict[str, Any] = json.loads(text[start:])
    return parsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (noisier figures)")
    args = parser.parse_args()
    rounds = "1" if args.quick else "2"
    rows: list[tuple[str, str, str]] = []

    text, seconds = _run("engine_overhead.py", "--rounds", "3" if args.quick else "7")
    overhead = _json(text)
    print(f"# engine_overhead.py ({seconds:.0f} s)\n{text}")
    rows.append(("engine / raw diffusers (demo, 20 steps)", f"{overhead['engine_over_diffusers']:.3f}x", "<= 1.03x"))
    rows.append(("new prompt / cached prompt", f"{overhead['prompt_cache_gain']:.3f}x", "(cache gain)"))

    text, seconds = _run("batch_gain.py", "--jobs", "16", "--rounds", rounds)
    batching = _json(text)
    print(f"# batch_gain.py ({seconds:.0f} s)\n{text}")
    rows.append(("batched / one at a time (16 clients)", f"{batching['gain']:.2f}x", ">= 2.5x"))

    text, seconds = _run("poll_load.py", "--jobs", "16", "--interval", "0.05", "--rounds", rounds)
    polling = _json(text)
    print(f"# poll_load.py ({seconds:.0f} s)\n{text}")
    rows.append(("images/s lost to 16 clients polling every 50 ms", f"{polling['loss'] * 100:.1f} %", "<= 10 %"))

    text, seconds = _run("editing_cost.py", "--rounds", rounds)
    print(f"# editing_cost.py ({seconds:.0f} s)\n{text}")
    for line in text.splitlines():
        if line.startswith("hires 2x") or line.startswith("inpaint 0.75"):
            label, _, rest = line.partition(":")
            rows.append((label.strip(), rest.split()[-1], "(vs plain / img2img)"))

    text, seconds = _run("cpu_dtype.py", "--family", "sd15", "--size", "256", "--rounds", rounds)
    dtype = _json(text)
    print(f"# cpu_dtype.py ({seconds:.0f} s)\n{text}")
    rows.append(
        (
            "SD 1.5 UNet 256x256: bf16 weights vs float32",
            f"{dtype['speedup_bf16_weights']:.2f}x",
            f"PSNR {dtype['psnr_bf16_weights_db']} dB (target >= 3x whole call at 512, >= 30 dB)",
        )
    )

    text, seconds = _run("cpu_default.py", "--family", "sd1", "--size", "512", "--steps", "4")
    default = _json(text)
    print(f"# cpu_default.py ({seconds:.0f} s)\n{text}")
    rows.append(
        (
            f"SD 1.5 whole call 512x512, 4 steps: diffusers float32 / CPU default ({default['auto_dtype']})",
            f"{default['speedup_vs_diffusers']:.2f}x",
            f"PSNR {default['psnr_auto_vs_float32_db']} dB vs float32 (target >= 3x, >= 30 dB)",
        )
    )

    text, seconds = _run("gpu_fast_path.py")
    gpu = _json(text)
    print(f"# gpu_fast_path.py ({seconds:.0f} s)\n{text}")
    for label in ("engine", "engine_bf16", "engine_compile"):
        if label in gpu:
            row = gpu[label]
            rows.append(
                (
                    f"GPU {label} / diffusers fp16 (SDXL 1024, 30 steps)",
                    f"{row['vs_diffusers_fp16']:.3f}x",
                    f"<= 0.6x; UNet {row['unet_tflops']} TFLOP/s = {row['unet_share_of_bf16_peak']} of peak",
                )
            )

    text, seconds = _run("memory_peak.py", "--sizes", "64", "128", "256")
    memory = _json(text)
    print(f"# memory_peak.py ({seconds:.0f} s)\n{text}")
    for row in memory["sizes"]:
        rows.append(
            (f"memory to generate {row['size']} (demo)", f"{row['generation_mib']} MiB", "over the loaded model")
        )

    # The README's 10-minute figures: bench/mixed_load.py --clients 64 --seconds 600.
    text, seconds = _run("mixed_load.py", "--clients", "64", "--seconds", "60" if args.quick else "120")
    load = _json(text)
    print(f"# mixed_load.py ({seconds:.0f} s)\n{text}")
    latency = f"{load['status_read_ms_p99']} / {load['submit_ms_p99']} ms"
    rows.append(("64 clients: status read p99 / submit p99", latency, ""))
    rows.append(("64 clients: jobs lost", str(load["jobs_lost"]), "0"))

    text, seconds = _run("faults.py", *(["--quick"] if args.quick else []))
    faults = _json(text)
    print(f"# faults.py ({seconds:.0f} s)\n{text}")
    kinds = [fault["kind"] for fault in faults["faults"]]
    injected = "/".join(str(kinds.count(kind)) for kind in ("worker_kill", "api_kill", "sigterm_drain", "disk_full"))
    rows.append(("faults: worker kill / API kill / SIGTERM / disk full", injected, ""))
    worker = [fault["recovery_s"] for fault in faults["faults"] if fault["kind"] == "worker_kill"]
    rows.append(("faults: worker kill to generating again, max", f"{max(worker, default=0):.1f} s", ""))
    rows.append(("faults: jobs lost", str(faults["jobs"]["lost"]), "0"))

    width = max(len(label) for label, _, _ in rows)
    print("# summary (this machine, this run)")
    for label, value, target in rows:
        print(f"{label:<{width}}  {value:>10}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
