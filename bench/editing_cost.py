"""What the editing tools cost and keep, through the engine, on the built-in demo model (and the upscalers on images).

Prints, in one run on one machine:

- the hires fix's cost against plain generation of the same request (2x, Lanczos and the latent upscaler, second pass
  at strength 0.3 / 0.5), and inpainting's cost against image-to-image at the same strength;
- each upscaler's seconds per output megapixel (128x128 -> 512x512 and 256x256 -> 1024x1024, median of --rounds);
- inpainting's unchanged fraction: pixels outside the blurred mask that equal the input (must be 1.0) and, for
  information, the fraction of the whole image that is unchanged.

Ratios are what to read; absolute seconds depend on the machine (and on what else runs on it).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python bench/editing_cost.py [--rounds 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image


def median_seconds(run: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=4, help="images per generation request")
    args = parser.parse_args()

    from imagegen import Engine, GenerationRequest
    from imagegen.editing.masks import blur_mask
    from imagegen.requests import UpscaleRequest

    engine = Engine()
    prompt = "a red circle on the left"
    n = args.images

    def generate(**fields: object) -> list[Image.Image]:
        request = GenerationRequest(prompt=prompt, seed=0, num_images=n, **fields)  # type: ignore[arg-type]
        return list(engine.generate(request).images)

    generate()  # load and warm up

    print(f"# demo model, {n} images per request, median of {args.rounds}")
    plain = median_seconds(generate, args.rounds)
    print(f"plain 64x64:                         {plain:7.3f} s   1.00x")
    for upscaler, strength in (("Lanczos", 0.3), ("Latent", 0.5), ("R-ESRGAN 4x+", 0.3)):
        seconds = median_seconds(
            lambda u=upscaler, s=strength: generate(enable_hr=True, hr_upscaler=u, strength=s), args.rounds
        )
        print(f"hires 2x {upscaler:13} @ {strength}:     {seconds:7.3f} s   {seconds / plain:5.2f}x")

    sources = generate()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    source = sources[0]
    img2img = median_seconds(
        lambda: engine.generate(GenerationRequest(prompt=prompt, seed=1, init_image=source, strength=0.75)),
        args.rounds,
    )
    inpaint = median_seconds(
        lambda: engine.generate(GenerationRequest(prompt=prompt, seed=1, init_image=source, mask=mask, strength=0.75)),
        args.rounds,
    )
    print(f"img2img 0.75 (1 image):              {img2img:7.3f} s   1.00x")
    print(f"inpaint 0.75, half the image:        {inpaint:7.3f} s   {inpaint / img2img:5.2f}x")

    outside = np.asarray(blur_mask(mask, 4, 4)) == 0
    kept, whole = [], []
    for i, image in enumerate(sources):
        request = GenerationRequest(
            prompt="a red circle on the left and a blue square on the right",
            seed=1 + i,
            init_image=image,
            mask=mask,
            strength=1.0,
            inpainting_fill="fill",
        )
        result = np.asarray(engine.generate(request).images[0]).astype(int)
        same = (result == np.asarray(image).astype(int)).all(axis=2)
        kept.append(float(same[outside].mean()))
        whole.append(float(same.mean()))
    print(f"inpaint unchanged outside the blurred mask: {min(kept):.4f} (min of {len(kept)})")
    print(f"inpaint unchanged, whole image:             {statistics.mean(whole):.3f} (mean)")

    print("# upscalers, seconds per output megapixel")
    rng = np.random.default_rng(0)
    for size in (128, 256):
        picture = Image.fromarray(
            np.asarray(
                Image.fromarray(rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)).resize(
                    (size, size), Image.Resampling.BICUBIC
                )
            )
        )
        for info in engine.upscalers.list():
            if not info.available:
                print(f"{info.name:22} {size}->{size * 4}: unavailable ({info.reason})")
                continue
            if info.name == "None":
                continue
            request = UpscaleRequest(image=picture, upscaler=info.name, scale=4)
            engine.upscale(request)  # load / warm up at this size
            seconds = median_seconds(lambda r=request: engine.upscale(r), args.rounds)
            megapixels = (size * 4) ** 2 / 1e6
            print(f"{info.name:22} {size}->{size * 4}: {seconds:7.3f} s  {seconds / megapixels:7.2f} s/MP")


if __name__ == "__main__":
    main()
