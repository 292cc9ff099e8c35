"""Peak memory per image size: one process per size loads the demo model, generates one image (--steps) and reports
its resident memory after loading and its peak; the difference is what generating that size costs on top of the
loaded model (CPU: process RSS; CUDA: torch's peak allocated memory).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/memory_peak.py --sizes 64 128 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = """
import json, resource, sys
import torch
from imagegen import Engine, GenerationRequest
size, steps = int(sys.argv[1]), int(sys.argv[2])
engine = Engine()
engine.load()
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if engine.device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
engine.generate(GenerationRequest(prompt="a red circle", seed=1, width=size, height=size, num_inference_steps=steps))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cuda = torch.cuda.max_memory_allocated() / 2**20 if engine.device.type == "cuda" else None
print(json.dumps({"loaded_mib": loaded / 1024, "peak_mib": peak / 1024, "cuda_peak_mib": cuda}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(size), str(args.steps)], capture_output=True, text=True, check=True
        )
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "size": f"{size}x{size}",
                "loaded_mib": round(measured["loaded_mib"]),
                "peak_mib": round(measured["peak_mib"]),
                "generation_mib": round(measured["peak_mib"] - measured["loaded_mib"]),
                "cuda_peak_mib": measured["cuda_peak_mib"],
            }
        )
    print(json.dumps({"steps": args.steps, "sizes": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
