"""The CPU default against diffusers' float32 default, whole text-to-image calls of a full-size architecture (random
weights from the bundled reference configs, saved once as float16 files under --cache), same prompt, seed, size,
steps and sampler (Euler):

- ``diffusers``: ``<Pipeline>.from_pretrained(folder)`` in float32, as the seed program runs on a CPU;
- ``engine auto``: ``imagegen.Engine`` with its defaults (bfloat16 + channels-last where the CPU has bfloat16 in
  hardware, see ``imagegen.engine.auto_dtype``);
- ``engine float32``: ``Engine(dtype="float32")``, the reference for the PSNR of the auto image.

Each is warmed up with a one-step call first (oneDNN picks its kernels on the first call of a shape). Full-size
weights are large (SD 1.5 1.7 GB, SDXL 5 GB as float16 files; three times that in memory while it runs).

    PYTHONPATH=tests .venv/bin/python bench/cpu_default.py --family sd1 --size 512 --steps 4
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

_PROMPT = "a photograph of an astronaut riding a horse"


def _folder(family: str, cache: Path) -> Path:
    import torch

    from support.tiny_models import build_tiny_pipeline

    folder = cache / f"{family}-full-size"
    if not (folder / "model_index.json").is_file():
        pipeline = build_tiny_pipeline(family, full_size=True).to(torch.float16)
        partial = folder.with_name(folder.name + ".partial")
        pipeline.save_pretrained(partial, safe_serialization=True)
        partial.rename(folder)
    return folder


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _diffusers(folder: Path, family: str, size: int, steps: int) -> tuple[float, np.ndarray]:
    import diffusers
    import torch

    cls = diffusers.StableDiffusionXLPipeline if family == "sdxl-base" else diffusers.StableDiffusionPipeline
    extra: dict[str, Any] = {} if family == "sdxl-base" else {"safety_checker": None, "requires_safety_checker": False}
    # float32, diffusers' default for float32 files; said explicitly because the files here are float16.
    pipe = cls.from_pretrained(str(folder), local_files_only=True, torch_dtype=torch.float32, **extra)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def call(n: int) -> Any:
        generator = torch.Generator().manual_seed(1)
        result = pipe(_PROMPT, width=size, height=size, num_inference_steps=n, guidance_scale=7.5, generator=generator)
        return result.images[0]

    call(1)
    started = time.perf_counter()
    image = call(steps)
    return time.perf_counter() - started, np.asarray(image)


def _engine(folder: Path, size: int, steps: int, dtype: str | None) -> tuple[float, np.ndarray, str]:
    from imagegen import Engine, GenerationRequest

    engine = Engine(default_model=str(folder), dtype=dtype)

    def call(n: int) -> Any:
        request = GenerationRequest(
            prompt=_PROMPT, seed=1, width=size, height=size, num_inference_steps=n, sampler="Euler", guidance_scale=7.5
        )
        return engine.generate(request).images[0]

    call(1)
    started = time.perf_counter()
    image = call(steps)
    elapsed = time.perf_counter() - started
    chosen = str(engine.load().pipeline.unet.dtype).removeprefix("torch.")
    return elapsed, np.asarray(image.convert("RGB")), chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("sd1", "sd2", "sdxl-base"), default="sd1")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imagegen-bench"
    parser.add_argument("--cache", type=Path, default=default_cache)
    args = parser.parse_args()

    folder = _folder(args.family, args.cache)
    diffusers_s, reference = _diffusers(folder, args.family, args.size, args.steps)
    gc.collect()
    auto_s, auto_image, auto_dtype = _engine(folder, args.size, args.steps, None)
    gc.collect()
    fp32_s, fp32_image, _ = _engine(folder, args.size, args.steps, "float32")
    report = {
        "family": args.family,
        "size": args.size,
        "steps": args.steps,
        "auto_dtype": auto_dtype,
        "diffusers_float32_s": round(diffusers_s, 2),
        "engine_auto_s": round(auto_s, 2),
        "engine_float32_s": round(fp32_s, 2),
        "speedup_vs_diffusers": round(diffusers_s / auto_s, 2),
        "psnr_auto_vs_float32_db": round(_psnr(fp32_image, auto_image), 1),
        "psnr_engine_float32_vs_diffusers_db": round(_psnr(reference, fp32_image), 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
