"""What bfloat16 buys on this CPU, per family: a full-size UNet (random weights, from the bundled reference configs)
in float32 (diffusers' CPU default), with bfloat16 weights, and under bfloat16 autocast, optionally channels-last;
seconds per UNet call (CFG batch of 2, median of --rounds) and the PSNR of the bfloat16 output against float32.

This is the measurement behind the CPU dtype default (issue 13 item 1); it times the UNet, which is nearly all of a
call at 512x512. Full-size weights are large: SD 1.5 ~3.4 GB float32, SDXL ~10 GB; keep --size small on 2 cores.

    .venv/bin/python bench/cpu_dtype.py --family sd15 --size 256 --rounds 3 [--channels-last]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from typing import Any

_CONFIGS = {"sd15": "sd15", "sd21": "sd21", "sdxl": "sdxl-base"}


def _unet(family: str) -> Any:
    import torch
    from diffusers import UNet2DConditionModel

    from imagegen.loading import Family, reference_config_dir

    enum = {"sd15": Family.SD1, "sd21": Family.SD2, "sdxl": Family.SDXL}[family]
    config = UNet2DConditionModel.load_config(str(reference_config_dir(enum) / "unet"))
    torch.manual_seed(0)
    return UNet2DConditionModel.from_config(config).eval()


def _inputs(unet: Any, family: str, size: int) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(1)
    latent = size // 8
    width = unet.config.cross_attention_dim
    inputs: dict[str, Any] = {
        "sample": torch.randn(2, unet.config.in_channels, latent, latent, generator=generator),
        "timestep": torch.tensor(500),
        "encoder_hidden_states": torch.randn(2, 77, width, generator=generator),
    }
    if family == "sdxl":
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, 1280, generator=generator),
            "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32),
        }
    return inputs


def _psnr(reference: Any, other: Any) -> float:
    import torch

    ref, out = reference.float(), other.float()
    peak = float(ref.abs().max())
    mse = float(torch.mean((ref - out) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(_CONFIGS), default="sd15")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()

    import torch

    unet = _unet(args.family)
    inputs = _inputs(unet, args.family, args.size)

    def run(module: Any, cast: torch.dtype | None, autocast: bool) -> tuple[float, Any]:
        feed = {
            k: (v.to(cast) if cast is not None and torch.is_tensor(v) and v.is_floating_point() else v)
            for k, v in inputs.items()
        }
        if "added_cond_kwargs" in feed and cast is not None:
            feed["added_cond_kwargs"] = {k: v.to(cast) for k, v in feed["added_cond_kwargs"].items()}
        if args.channels_last:
            feed["sample"] = feed["sample"].to(memory_format=torch.channels_last)
        times, out = [], None
        context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with torch.no_grad(), context:
            module(**feed)  # warm-up (oneDNN picks its kernels on the first call)
            for _ in range(args.rounds):
                started = time.perf_counter()
                out = module(**feed).sample
                times.append(time.perf_counter() - started)
        return statistics.median(times), out

    if args.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    fp32_s, reference = run(unet, None, False)
    autocast_s, autocast_out = run(unet, None, True)
    unet_bf16 = unet.to(torch.bfloat16)
    bf16_s, bf16_out = run(unet_bf16, torch.bfloat16, False)
    report = {
        "family": args.family,
        "size": args.size,
        "channels_last": args.channels_last,
        "float32_s": round(fp32_s, 3),
        "autocast_bf16_s": round(autocast_s, 3),
        "bf16_weights_s": round(bf16_s, 3),
        "speedup_autocast": round(fp32_s / autocast_s, 2),
        "speedup_bf16_weights": round(fp32_s / bf16_s, 2),
        "psnr_autocast_db": round(_psnr(reference, autocast_out), 1),
        "psnr_bf16_weights_db": round(_psnr(reference, bf16_out), 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
