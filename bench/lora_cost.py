"""What a LoRA costs per request, through the engine, on a full-size SD 1.5 architecture (random weights).

Builds the SD 1.5 model from imagegen's bundled reference config (random weights; no download), a rank-R LoRA on
every attention projection of its UNet and text encoder (a typical civitai LoRA), then times, alternating, requests
without LoRA and with ``<lora:bench:1>``: the first LoRA request (file load + peft injection) and the median of the
rest. Ratios are what to read; absolute seconds depend on the machine.

Run: ``PYTHONPATH=src:tests .venv/bin/python bench/lora_cost.py [--size 256] [--steps 2] [--rounds 3] [--rank 16]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def build_sd15(dest: Path) -> Path:
    """A full-size SD 1.5 diffusers folder with random weights (from the bundled reference config)."""
    import shutil

    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    import imagegen
    from imagegen.loading import Family, reference_config_dir

    configs = reference_config_dir(Family.SD1)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder"))
    tokenizer_dir = Path(imagegen.__file__).parent / "configs" / "clip-tokenizer"
    with tempfile.TemporaryDirectory() as tmp:
        for source in (configs / "tokenizer").iterdir():
            shutil.copyfile(source, Path(tmp) / source.name)
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(tokenizer_dir / name, Path(tmp) / name)
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(configs / "scheduler"))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(dest)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()

    from imagegen import Engine, GenerationRequest
    from support.tiny_loras import make_lora

    with tempfile.TemporaryDirectory(prefix="lora-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        model = build_sd15(root / "sd15")
        lora = make_lora(model, root / "Lora" / "bench.safetensors", fmt="kohya", rank=args.rank)
        print(
            f"built SD 1.5 (random) and a rank-{args.rank} LoRA ({lora.stat().st_size / 1e6:.1f} MB) "
            f"in {time.perf_counter() - t0:.0f} s"
        )
        engine = Engine(device="cpu", lora_dirs=(root / "Lora",))

        def run(prompt: str) -> tuple[float, dict[str, float]]:
            request = GenerationRequest(
                prompt=prompt,
                model=str(model),
                seed=1,
                num_inference_steps=args.steps,
                width=args.size,
                height=args.size,
            )
            start = time.perf_counter()
            result = engine.generate(request)
            return time.perf_counter() - start, dict(result.timings)

        run("a castle")  # load the model, warm up
        first, timings = run("a castle <lora:bench:1>")
        print(f"first LoRA request: {first:.2f} s, of which loading the LoRA {timings['lora']:.2f} s")
        plain, with_lora = [], []
        for _ in range(args.rounds):
            plain.append(run("a castle")[0])
            with_lora.append(run("a castle <lora:bench:1>")[0])
        p, w = statistics.median(plain), statistics.median(with_lora)
        print(
            f"{args.size}x{args.size}, {args.steps} steps, median of {args.rounds}: without LoRA {p:.2f} s, "
            f"with {w:.2f} s, ratio {w / p:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
