"""The GPU fast path (issue 13 item 6) on a CUDA GPU: SDXL-size random weights (the bundled reference configs, saved
once as float16 files under --cache), text-to-image at --size with --steps Euler steps, one image, same seed:

- ``diffusers fp16``: ``StableDiffusionXLPipeline.from_pretrained(folder, torch_dtype=float16).to("cuda")``, the
  usual GPU recipe (SDPA attention, the VAE upcast to float32 as diffusers does for SDXL);
- ``engine``: ``imagegen.Engine(device="cuda")`` defaults (float16, channels-last UNet and VAE);
- ``engine bf16``: ``dtype="bfloat16"`` (no VAE upcast needed: bfloat16 has float32's range);
- ``engine compile``: ``compile=True`` (torch.compile of the UNet at load; its load time is reported apart).

Also the UNet's achieved TFLOP/s (FLOPs of one CFG call counted by torch's FlopCounterMode, divided by the median
time of --unet-calls calls) against the GPU's dense bfloat16 peak. Prints {"skipped": ...} without CUDA.

    PYTHONPATH=tests .venv/bin/python bench/gpu_fast_path.py --size 1024 --steps 30
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

_PROMPT = "a photograph of an astronaut riding a horse"
#: Dense bfloat16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by a substring of the device name.
_BF16_PEAK = {
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 80GB HBM3": 989.4,
    "H100 PCIe": 756.0,
    "H100": 756.0,
    "A100": 312.0,
}


def _folder(cache: Path) -> Path:
    import torch

    from support.tiny_models import build_tiny_pipeline

    folder = cache / "sdxl-base-full-size"
    if not (folder / "model_index.json").is_file():
        pipeline = build_tiny_pipeline("sdxl-base", full_size=True).to(torch.float16)
        partial = folder.with_name(folder.name + ".partial")
        pipeline.save_pretrained(partial, safe_serialization=True)
        partial.rename(folder)
    return folder


def _timed(call: Any) -> tuple[float, Any]:
    import torch

    torch.cuda.synchronize()
    started = time.perf_counter()
    out = call()
    torch.cuda.synchronize()
    return time.perf_counter() - started, out


def _diffusers(folder: Path, size: int, steps: int) -> float:
    import diffusers
    import torch

    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(
        str(folder), torch_dtype=torch.float16, local_files_only=True
    ).to("cuda")
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def call(n: int) -> Any:
        generator = torch.Generator("cuda").manual_seed(1)
        return pipe(_PROMPT, width=size, height=size, num_inference_steps=n, generator=generator).images[0]

    call(2)
    seconds, _ = _timed(lambda: call(steps))
    return seconds


def _engine(folder: Path, size: int, steps: int, **options: Any) -> tuple[float, float, Any]:
    from imagegen import Engine, GenerationRequest

    engine = Engine(device="cuda", default_model=str(folder), **options)
    load_s, loaded = _timed(engine.load)

    def call(n: int) -> Any:
        request = GenerationRequest(
            prompt=_PROMPT, seed=1, width=size, height=size, num_inference_steps=n, sampler="Euler"
        )
        return engine.generate(request)

    call(2)
    seconds, _ = _timed(lambda: call(steps))
    return seconds, load_s, loaded.pipeline.unet


def _unet_tflops(unet: Any, size: int, calls: int) -> tuple[float, float]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    dtype, latent = unet.dtype, size // 8
    sample = torch.randn(2, 4, latent, latent, device="cuda", dtype=dtype)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, device="cuda", dtype=dtype)
    added = {
        "text_embeds": torch.randn(2, 1280, device="cuda", dtype=dtype),
        "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, device="cuda", dtype=dtype),
    }
    timestep = torch.tensor(500.0, device="cuda")
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            unet(sample, timestep, encoder_hidden_states=context, added_cond_kwargs=added)
        flops = counter.get_total_flops()

        def call() -> Any:
            return unet(sample, timestep, encoder_hidden_states=context, added_cond_kwargs=added)

        call()  # warm-up
        times = [_timed(call)[0] for _ in range(calls)]
    return flops / 1e12, flops / statistics.median(times) / 1e12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--unet-calls", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (minutes)")
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imagegen-bench"
    parser.add_argument("--cache", type=Path, default=default_cache)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA GPU on this machine"}))
        return 0
    name = torch.cuda.get_device_name()
    peak = next((value for key, value in _BF16_PEAK.items() if key in name), None)
    folder = _folder(args.cache)
    report: dict[str, Any] = {"gpu": name, "size": args.size, "steps": args.steps}
    baseline = _diffusers(folder, args.size, args.steps)
    report["diffusers_fp16_s"] = round(baseline, 2)
    variants: dict[str, dict[str, Any]] = {"engine": {}, "engine_bf16": {"dtype": "bfloat16"}}
    if not args.no_compile:
        variants["engine_compile"] = {"compile": True}
    for label, options in variants.items():
        gc.collect()
        torch.cuda.empty_cache()
        seconds, load_s, unet = _engine(folder, args.size, args.steps, **options)
        tflop, tflops = _unet_tflops(unet, args.size, args.unet_calls)
        report[label] = {
            "seconds": round(seconds, 2),
            "vs_diffusers_fp16": round(seconds / baseline, 3),
            "load_s": round(load_s, 1),
            "unet_tflop_per_call": round(tflop, 2),
            "unet_tflops": round(tflops, 1),
            "unet_share_of_bf16_peak": round(tflops / peak, 3) if peak else None,
        }
        del unet
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
