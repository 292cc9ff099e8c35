"""Evaluate the demo model "imagegen-shapes": GenEval-style scores, base alone vs base + refiner; img2img; speed.

1. txt2img: every prompt of :data:`~imagegen_shapes.analyse.EVAL_PROMPTS` × ``seeds`` images at 64×64, once with the
   base alone and once with the seed's base → refiner latent handoff (``denoising_end``/``denoising_start`` 0.8, the
   same initial noise), each image scored by the rule-based analyser.
2. img2img on rendered (hence perfectly known) scenes, with the base's components:
   - strength 0.3 with the scene's own caption keeps shape and position
     (:func:`~imagegen_shapes.analyse.preserves_layout`);
   - a recolouring prompt (same shape and position, another colour) at strength ~0.65 gives the asked colour.
3. Seconds per 64×64, 20-step image (one image per call, after a warm-up).

Run: ``python -m imagegen_shapes.evaluate --model src/imagegen/demo/weights/imagegen-shapes --out report/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from imagegen_shapes.analyse import CATEGORIES, aggregate, analyse, preserves_layout, score
from imagegen_shapes.analyse import EVAL_PROMPTS as DEFAULT_PROMPTS
from imagegen_shapes.world import (
    Colour,
    ObjectSpec,
    Position,
    Scene,
    Shape,
    caption,
    parse_prompt,
    render_array,
)

DEFAULT_SEEDS: Final[int] = 4
HANDOFF: Final[float] = 0.8
RECOLOUR_STRENGTH: Final[float] = 0.65
KEEP_STRENGTH: Final[float] = 0.3


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """What to evaluate and how."""

    model: Path
    refiner: Path | None = None
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    seeds: int = DEFAULT_SEEDS
    num_inference_steps: int = 20
    #: None: the model's own default from imagegen.json.
    guidance_scale: float | None = None
    img2img_cases: int = 32
    timing_runs: int = 5
    threads: int = 2


def load_pipelines(model: Path, refiner: Path | None) -> tuple[Any, Any | None]:
    """The base pipeline and (if given) the refiner sharing the base's ``text_encoder_2`` and ``vae``, fp32."""
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base = StableDiffusionXLPipeline.from_pretrained(model, dtype=torch.float32)
    base.set_progress_bar_config(disable=True)
    ref = None
    if refiner is not None:
        ref = StableDiffusionXLImg2ImgPipeline.from_pretrained(
            refiner, text_encoder_2=base.text_encoder_2, vae=base.vae, dtype=torch.float32
        )
        ref.set_progress_bar_config(disable=True)
    return base, ref


def model_guidance_scale(model: Path) -> float:
    """The model's default guidance scale (its ``imagegen.json``), 5.0 when absent."""
    path = model / "imagegen.json"
    if path.is_file():
        return float(json.loads(path.read_text(encoding="utf-8")).get("defaults", {}).get("guidance_scale", 5.0))
    return 5.0


def _generators(seed0: int, n: int) -> list[Any]:
    import torch

    # Image i uses seed0 + i, so any image can be reproduced alone.
    return [torch.Generator().manual_seed(seed0 + i) for i in range(n)]


def generate(
    base: Any,
    refiner: Any | None,
    prompt: str,
    *,
    seeds: int,
    steps: int,
    guidance_scale: float,
    seed0: int = 0,
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """``seeds`` images of ``prompt`` from the base alone and (with a refiner) via the 0.8 latent handoff."""
    common = {
        "prompt": prompt,
        "num_images_per_prompt": seeds,
        "num_inference_steps": steps,
        "guidance_scale": guidance_scale,
        "height": 64,
        "width": 64,
    }
    base_images = base(**common, generator=_generators(seed0, seeds), output_type="np").images
    base_out = [(img * 255 + 0.5).clip(0, 255).astype(np.uint8) for img in base_images]
    if refiner is None:
        return base_out, None
    latents = base(**common, generator=_generators(seed0, seeds), denoising_end=HANDOFF, output_type="latent").images
    refined = refiner(
        # One prompt per handed-over latent: the img2img pipeline batches by prompt, not by image.
        prompt=[prompt] * seeds,
        image=latents,
        num_inference_steps=steps,
        denoising_start=HANDOFF,
        guidance_scale=guidance_scale,
        generator=_generators(seed0, seeds),
        output_type="np",
    ).images
    return base_out, [(img * 255 + 0.5).clip(0, 255).astype(np.uint8) for img in refined]


def _img2img_scenes(n: int, seed: int) -> list[tuple[Scene, Scene]]:
    """``n`` (source, recoloured) single-object scenes: every shape, positions cycling, another colour each."""
    rng = np.random.default_rng(seed)
    colours, shapes, positions = list(Colour), list(Shape), [None, *Position]
    cases = []
    for i in range(n):
        colour = colours[int(rng.integers(len(colours)))]
        other = colours[(colours.index(colour) + 1 + int(rng.integers(len(colours) - 1))) % len(colours)]
        spec = ObjectSpec(colour=colour, shape=shapes[i % len(shapes)], position=positions[i % len(positions)])
        source = Scene(objects=(spec,))
        cases.append((source, Scene(objects=(replace(spec, colour=other),))))
    return cases


def without_positions(scene: Scene) -> Scene:
    """``scene`` with no position in any phrase: an img2img prompt that leaves where things are to the input image."""
    return replace(scene, objects=tuple(replace(o, position=None) for o in scene.objects))


def img2img_checks(base: Any, *, cases: int, steps: int, guidance_scale: float, seed: int = 0) -> dict[str, float]:
    """Fractions of rendered scenes whose layout survives strength 0.3, and whose colour changes as asked at ~0.65.

    The prompts name no position (:func:`without_positions`), so a kept layout comes from the input image alone.
    """
    from diffusers import StableDiffusionXLImg2ImgPipeline
    from PIL import Image

    pipe = StableDiffusionXLImg2ImgPipeline.from_pipe(base)
    pipe.set_progress_bar_config(disable=True)
    scenes = _img2img_scenes(cases, seed)
    rng = np.random.default_rng(seed + 1)
    sources = [render_array(src, rng) for src, _ in scenes]
    kept = recoloured = recolour_layout = 0
    for i, ((src_scene, new_scene), pixels) in enumerate(zip(scenes, sources, strict=True)):
        image = Image.fromarray(pixels)
        source_analysis = analyse(pixels)
        common = {"image": image, "num_inference_steps": steps, "guidance_scale": guidance_scale}
        gens = _generators(seed + 1000 * i, 1)
        same = pipe(
            prompt=caption(without_positions(src_scene)),
            strength=KEEP_STRENGTH,
            generator=gens,
            output_type="np",
            **common,
        )
        kept += preserves_layout(source_analysis, analyse(_as_uint8(same.images[0])))
        gens = _generators(seed + 1000 * i, 1)
        new = pipe(
            prompt=caption(without_positions(new_scene)),
            strength=RECOLOUR_STRENGTH,
            generator=gens,
            output_type="np",
            **common,
        )
        new_analysis = analyse(_as_uint8(new.images[0]))
        recoloured += score(new_scene, new_analysis)["colour"]
        recolour_layout += preserves_layout(source_analysis, new_analysis)
    return {
        "cases": float(cases),
        "strength_0.3_keeps_layout": kept / cases,
        f"strength_{RECOLOUR_STRENGTH}_recolours": recoloured / cases,
        f"strength_{RECOLOUR_STRENGTH}_keeps_layout": recolour_layout / cases,
    }


def _as_uint8(image: np.ndarray) -> np.ndarray:
    return (image * 255 + 0.5).clip(0, 255).astype(np.uint8)


def time_per_image(base: Any, refiner: Any | None, *, steps: int, guidance_scale: float, runs: int) -> dict[str, float]:
    """Median seconds for one 64×64 image (base alone; base + refiner handoff), after a warm-up call."""
    timings: dict[str, float] = {}
    modes: list[tuple[str, Any]] = [("base", None)] + ([("base+refiner", refiner)] if refiner is not None else [])
    for name, ref in modes:
        samples = []
        for run_index in range(runs + 1):
            started = time.perf_counter()
            generate(base, ref, "a red circle", seeds=1, steps=steps, guidance_scale=guidance_scale, seed0=run_index)
            samples.append(time.perf_counter() - started)
        timings[f"{name}_seconds"] = statistics.median(samples[1:])
    # generate() with a refiner also runs the full base once more for the base-alone image: subtract it.
    if "base+refiner_seconds" in timings:
        timings["base+refiner_seconds"] -= timings["base_seconds"]
    return timings


def evaluate(options: EvalOptions) -> dict[str, Any]:
    """Run every check of the module docstring; returns the report as a JSON-able dict."""
    import torch

    torch.set_num_threads(options.threads)
    base, refiner = load_pipelines(options.model, options.refiner)
    cfg = options.guidance_scale if options.guidance_scale is not None else model_guidance_scale(options.model)
    started = time.perf_counter()
    base_scores: list[dict[str, bool]] = []
    refined_scores: list[dict[str, bool]] = []
    per_prompt: dict[str, dict[str, float]] = {}
    for prompt in options.prompts:
        scene = parse_prompt(prompt)
        base_imgs, refined_imgs = generate(
            base, refiner, prompt, seeds=options.seeds, steps=options.num_inference_steps, guidance_scale=cfg
        )
        b = [score(scene, analyse(img)) for img in base_imgs]
        base_scores += b
        per_prompt[prompt] = {"base_all": float(np.mean([all(s.values()) for s in b]))}
        if refined_imgs is not None:
            r = [score(scene, analyse(img)) for img in refined_imgs]
            refined_scores += r
            per_prompt[prompt]["refined_all"] = float(np.mean([all(s.values()) for s in r]))
    txt2img_seconds = time.perf_counter() - started
    report: dict[str, Any] = {
        "model": str(options.model),
        "refiner": str(options.refiner) if options.refiner else None,
        "guidance_scale": cfg,
        "num_inference_steps": options.num_inference_steps,
        "prompts": len(options.prompts),
        "seeds": options.seeds,
        "base": aggregate(base_scores),
        "base+refiner": aggregate(refined_scores) if refiner is not None else None,
        "per_prompt": per_prompt,
        "txt2img_wall_seconds": txt2img_seconds,
    }
    if options.img2img_cases > 0:
        report["img2img"] = img2img_checks(
            base, cases=options.img2img_cases, steps=options.num_inference_steps, guidance_scale=cfg
        )
    if options.timing_runs > 0:
        report["timing"] = time_per_image(
            base, refiner, steps=options.num_inference_steps, guidance_scale=cfg, runs=options.timing_runs
        )
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables."""
    refined = report.get("base+refiner")
    lines = [
        f"Prompts: {report['prompts']} × {report['seeds']} seeds, {report['num_inference_steps']} steps, "
        f"guidance {report['guidance_scale']}, 64×64.",
        "",
        "| category | base | base + refiner |",
        "|---|---|---|",
    ]
    for category in CATEGORIES:
        if category in report["base"]:
            ref = f"{refined[category]:.3f}" if refined else "—"
            lines.append(f"| {category} | {report['base'][category]:.3f} | {ref} |")
    if "img2img" in report:
        lines += ["", "| img2img check | fraction |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in report["img2img"].items() if k != "cases"]
        lines.append(f"| cases | {int(report['img2img']['cases'])} |")
    if "timing" in report:
        lines += ["", "| timing (one 64×64 image) | seconds |", "|---|---|"]
        lines += [f"| {k.removesuffix('_seconds')} | {v:.3f} |" for k, v in report["timing"].items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``imagegen eval-demo`` options."""
    parser.add_argument("--model", type=Path, required=True, help="the base model folder (imagegen-shapes)")
    parser.add_argument("--refiner", type=Path, default=None, help="the refiner folder (imagegen-shapes-refiner)")
    parser.add_argument("--out", type=Path, default=None, help="folder for report.json and report.md")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="images per prompt")
    parser.add_argument("--steps", type=int, default=20, help="num_inference_steps")
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: the model's imagegen.json")
    parser.add_argument("--limit", type=int, default=0, help="only the first N prompts (0 = all)")
    parser.add_argument("--img2img-cases", type=int, default=32)
    parser.add_argument("--timing-runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    """Run ``imagegen eval-demo`` with parsed options; prints the markdown report; returns the exit status."""
    prompts = DEFAULT_PROMPTS[: args.limit] if args.limit > 0 else DEFAULT_PROMPTS
    options = EvalOptions(
        model=args.model,
        refiner=args.refiner,
        prompts=prompts,
        seeds=args.seeds,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        img2img_cases=args.img2img_cases,
        timing_runs=args.timing_runs,
        threads=args.threads,
    )
    report = evaluate(options)
    text = markdown(report)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (args.out / "report.md").write_text(text, encoding="utf-8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m imagegen_shapes.evaluate``."""
    parser = argparse.ArgumentParser(prog="imagegen eval-demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
