"""Evaluate the demo model "imagegen-shapes" through :class:`imagegen.Engine`: GenEval-style scores, img2img, speed.

Every image comes from ``Engine.generate``, the code path users get, so the evaluator cannot drift from the product
(no pipelines of its own, no handoff of its own). Steps:

1. txt2img on two prompt sets, ``seeds`` images per prompt at 64×64, each image scored by the rule-based analyser:
   - **training phrasing**: :data:`~imagegen_shapes.analyse.EVAL_PROMPTS`, written in the caption grammar the model
     was trained on (new scenes, familiar wording);
   - **held-out phrasing**: :data:`HELD_OUT`, the same kinds of scenes worded in ways the training captions never use
     ("a pair of yellow triangles", "a square that is green"), each with its expected :class:`Scene`.
   Each set runs with the base alone and with base + refiner (``denoising_end`` 0.8, the seed's ensemble of expert
   denoisers). Image *i* of a prompt uses seed *i*, so base and base + refiner start from the same noise.
2. img2img on rendered (hence perfectly known) scenes, with the base:
   - strength 0.3 with the scene's own caption keeps shape and position
     (:func:`~imagegen_shapes.analyse.preserves_layout`);
   - a recolouring prompt (same shape and position, another colour) at strength 0.65 gives the asked colour.
3. Seconds per 64×64, 20-step image through the engine (one image per request, after a warm-up).

Run: ``imagegen eval-demo --model src/imagegen/demo/weights/imagegen-shapes --refiner ... --out report/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from imagegen import GenerationRequest, Limits
from imagegen_shapes.analyse import CATEGORIES, aggregate, analyse, preserves_layout, score
from imagegen_shapes.analyse import EVAL_PROMPTS as DEFAULT_PROMPTS
from imagegen_shapes.world import (
    Background,
    Colour,
    ObjectSpec,
    Position,
    Scene,
    Shape,
    Size,
    caption,
    parse_prompt,
    render_array,
)

if TYPE_CHECKING:
    from imagegen import Engine

DEFAULT_SEEDS: Final[int] = 4
HANDOFF: Final[float] = 0.8
RECOLOUR_STRENGTH: Final[float] = 0.65
KEEP_STRENGTH: Final[float] = 0.3
#: The report's names of the two prompt sets.
TRAINING_PHRASING: Final[str] = "training_phrasing"
HELD_OUT_PHRASING: Final[str] = "held_out"


def _one(
    colour: Colour,
    shape: Shape,
    *,
    count: int = 1,
    size: Size = Size.MEDIUM,
    position: Position | None = None,
) -> ObjectSpec:
    return ObjectSpec(count=count, size=size, colour=colour, shape=shape, position=position)


def _scene(*objects: ObjectSpec, background: Background = Background.WHITE) -> Scene:
    return Scene(objects=objects, background=background)


#: Prompts worded as no training caption is (:func:`~imagegen_shapes.world.caption` cannot produce any of them, and
#: :func:`~imagegen_shapes.world.parse_prompt` cannot read them, hence the explicit scenes): word order, words and
#: punctuation the grammar never uses, for the same categories as ``EVAL_PROMPTS``. They live here, in the evaluator,
#: which the trainer never imports, so they can never leak into training captions (both are tested).
HELD_OUT: Final[tuple[tuple[str, Scene], ...]] = (
    # single object, colour, size and background: no article, colour after the noun, unseen adjectives
    ("red circle", _scene(_one(Colour.RED, Shape.CIRCLE))),
    ("a square that is green", _scene(_one(Colour.GREEN, Shape.SQUARE))),
    ("a cross in yellow", _scene(_one(Colour.YELLOW, Shape.CROSS))),
    ("a single orange square", _scene(_one(Colour.ORANGE, Shape.SQUARE))),
    ("a triangle coloured cyan", _scene(_one(Colour.CYAN, Shape.TRIANGLE))),
    ("a tiny green circle", _scene(_one(Colour.GREEN, Shape.CIRCLE, size=Size.SMALL))),
    ("a huge blue square", _scene(_one(Colour.BLUE, Shape.SQUARE, size=Size.LARGE))),
    ("a red cross on a dark background", _scene(_one(Colour.RED, Shape.CROSS), background=Background.BLACK)),
    (
        "a yellow circle against a grey backdrop",
        _scene(_one(Colour.YELLOW, Shape.CIRCLE), background=Background.GRAY),
    ),
    # position: every cell, in words the grammar has not got (corners, edges, middle, position first)
    (
        "there is a blue square in the upper left corner",
        _scene(_one(Colour.BLUE, Shape.SQUARE, position=Position.TOP_LEFT)),
    ),
    ("a blue circle near the upper edge", _scene(_one(Colour.BLUE, Shape.CIRCLE, position=Position.TOP))),
    (
        "a green triangle near the top right corner",
        _scene(_one(Colour.GREEN, Shape.TRIANGLE, position=Position.TOP_RIGHT)),
    ),
    ("a yellow cross at the left edge", _scene(_one(Colour.YELLOW, Shape.CROSS, position=Position.LEFT))),
    ("in the middle, a purple square", _scene(_one(Colour.PURPLE, Shape.SQUARE, position=Position.CENTER))),
    ("an orange circle to the right", _scene(_one(Colour.ORANGE, Shape.CIRCLE, position=Position.RIGHT))),
    (
        "a cyan cross in the lower left corner",
        _scene(_one(Colour.CYAN, Shape.CROSS, position=Position.BOTTOM_LEFT)),
    ),
    ("a pink triangle near the bottom edge", _scene(_one(Colour.PINK, Shape.TRIANGLE, position=Position.BOTTOM))),
    ("a red circle in the lower right", _scene(_one(Colour.RED, Shape.CIRCLE, position=Position.BOTTOM_RIGHT))),
    # counting: digits, "pair", "couple", "trio", the colour after the noun
    ("a pair of yellow triangles", _scene(_one(Colour.YELLOW, Shape.TRIANGLE, count=2))),
    ("a trio of blue squares", _scene(_one(Colour.BLUE, Shape.SQUARE, count=3))),
    ("2 red circles", _scene(_one(Colour.RED, Shape.CIRCLE, count=2))),
    ("three crosses, all green", _scene(_one(Colour.GREEN, Shape.CROSS, count=3))),
    ("a couple of pink circles", _scene(_one(Colour.PINK, Shape.CIRCLE, count=2))),
    (
        "3 cyan triangles on a dark background",
        _scene(_one(Colour.CYAN, Shape.TRIANGLE, count=3), background=Background.BLACK),
    ),
    # two objects and colour attribution: joined by other words than "and", or by a comma
    ("a red circle next to a green cross", _scene(_one(Colour.RED, Shape.CIRCLE), _one(Colour.GREEN, Shape.CROSS))),
    (
        "a blue square with a yellow triangle",
        _scene(_one(Colour.BLUE, Shape.SQUARE), _one(Colour.YELLOW, Shape.TRIANGLE)),
    ),
    (
        "a purple cross beside an orange circle",
        _scene(_one(Colour.PURPLE, Shape.CROSS), _one(Colour.ORANGE, Shape.CIRCLE)),
    ),
    (
        "a green triangle on the left, a red square on the right",
        _scene(
            _one(Colour.GREEN, Shape.TRIANGLE, position=Position.LEFT),
            _one(Colour.RED, Shape.SQUARE, position=Position.RIGHT),
        ),
    ),
    (
        "a circle that is blue and a square that is red",
        _scene(_one(Colour.BLUE, Shape.CIRCLE), _one(Colour.RED, Shape.SQUARE)),
    ),
    (
        "two red squares together with a blue circle",
        _scene(_one(Colour.RED, Shape.SQUARE, count=2), _one(Colour.BLUE, Shape.CIRCLE)),
    ),
    # two objects sharing a colour (two_objects, not colour attribution)
    ("a red cross as well as a red circle", _scene(_one(Colour.RED, Shape.CROSS), _one(Colour.RED, Shape.CIRCLE))),
)


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """What to evaluate and how."""

    model: Path
    refiner: Path | None = None
    #: The training-phrasing set: prompts in the caption grammar (their scenes are parsed from them).
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    #: The held-out set: (prompt, expected scene). Empty: not evaluated.
    held_out: tuple[tuple[str, Scene], ...] = HELD_OUT
    seeds: int = DEFAULT_SEEDS
    num_inference_steps: int = 20
    #: None: the model's own default (its imagegen.json), as the engine fills it in.
    guidance_scale: float | None = None
    img2img_cases: int = 32
    timing_runs: int = 5
    threads: int = 2


def make_engine(*, max_images: int = DEFAULT_SEEDS) -> Engine:
    """A CPU engine (float32, CPU generators) whose limits allow ``max_images`` images per request."""
    from imagegen import Engine

    # The default operator limit (8 images) is a server's guard; an evaluation may ask for more seeds per prompt.
    return Engine(device="cpu", limits=Limits(max_images=max(Limits().max_images, max_images)))


def _as_arrays(images: Iterable[Any]) -> list[np.ndarray]:
    return [np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images]


def generate(
    engine: Engine,
    prompt: str,
    *,
    model: Path,
    refiner: Path | None = None,
    seeds: int = DEFAULT_SEEDS,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed0: int = 0,
) -> list[np.ndarray]:
    """``seeds`` images (uint8 ``[64, 64, 3]``) of ``prompt``: image *i* uses seed ``seed0 + i``.

    With ``refiner`` the base stops at ``denoising_end`` 0.8 and the refiner continues on its latents.
    """
    result = engine.generate(
        GenerationRequest(
            prompt=prompt,
            model=str(model),
            refiner=str(refiner) if refiner is not None else None,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            seed=seed0,
            num_images=seeds,
            denoising_end=HANDOFF,
        )
    )
    return _as_arrays(result.images)


def effective_guidance_scale(engine: Engine, model: Path, guidance_scale: float | None) -> float:
    """The guidance scale the engine uses for ``model``: ``guidance_scale``, else the model's own default."""
    if guidance_scale is not None:
        return guidance_scale
    return engine.resolve(str(model)).defaults.guidance_scale


def _image_counts(scores: Iterable[Mapping[str, bool]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in scores:
        for category in result:
            counts[category] = counts.get(category, 0) + 1
    return {category: counts[category] for category in CATEGORIES if category in counts}


def score_prompts(engine: Engine, cases: Sequence[tuple[str, Scene]], options: EvalOptions) -> dict[str, Any]:
    """One prompt set's scores: per category (base; base + refiner), images per category, and per prompt."""
    modes: list[tuple[str, Path | None]] = [("base", None)]
    if options.refiner is not None:
        modes.append(("base+refiner", options.refiner))
    scores: dict[str, list[dict[str, bool]]] = {mode: [] for mode, _ in modes}
    per_prompt: dict[str, dict[str, float]] = {}
    for prompt, scene in cases:
        per_prompt[prompt] = {}
        for mode, refiner in modes:
            images = generate(
                engine,
                prompt,
                model=options.model,
                refiner=refiner,
                seeds=options.seeds,
                steps=options.num_inference_steps,
                guidance_scale=options.guidance_scale,
            )
            checks = [score(scene, analyse(image)) for image in images]
            scores[mode] += checks
            per_prompt[prompt][f"{mode}_all"] = float(np.mean([all(c.values()) for c in checks]))
    report: dict[str, Any] = {"prompts": len(cases), "images": _image_counts(scores["base"])}
    for mode, _ in modes:
        report[mode] = aggregate(scores[mode])
    report.setdefault("base+refiner", None)
    report["per_prompt"] = per_prompt
    return report


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


def img2img(
    engine: Engine,
    image: np.ndarray,
    prompt: str,
    *,
    model: Path,
    strength: float,
    seed: int,
    steps: int | None = None,
    guidance_scale: float | None = None,
) -> np.ndarray:
    """One image-to-image result (uint8) of ``image`` towards ``prompt`` at ``strength``."""
    from PIL import Image

    result = engine.generate(
        GenerationRequest(
            prompt=prompt,
            model=str(model),
            init_image=Image.fromarray(image),
            strength=strength,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            seed=seed,
        )
    )
    return _as_arrays(result.images)[0]


def img2img_checks(engine: Engine, options: EvalOptions, *, seed: int = 0) -> dict[str, float]:
    """Fractions of rendered scenes whose layout survives strength 0.3, and whose colour changes as asked at 0.65.

    The prompts name no position (:func:`without_positions`), so a kept layout comes from the input image alone.
    """
    cases = options.img2img_cases
    scenes = _img2img_scenes(cases, seed)
    rng = np.random.default_rng(seed + 1)
    sources = [render_array(src, rng) for src, _ in scenes]
    common: dict[str, Any] = {
        "model": options.model,
        "steps": options.num_inference_steps,
        "guidance_scale": options.guidance_scale,
    }
    kept = recoloured = recolour_layout = 0
    for i, ((src_scene, new_scene), pixels) in enumerate(zip(scenes, sources, strict=True)):
        source_analysis = analyse(pixels)
        # Both requests of a case start from the same seed, as the recolouring should differ only by the prompt.
        same = img2img(
            engine,
            pixels,
            caption(without_positions(src_scene)),
            strength=KEEP_STRENGTH,
            seed=seed + 1000 * i,
            **common,
        )
        kept += preserves_layout(source_analysis, analyse(same))
        new = img2img(
            engine,
            pixels,
            caption(without_positions(new_scene)),
            strength=RECOLOUR_STRENGTH,
            seed=seed + 1000 * i,
            **common,
        )
        new_analysis = analyse(new)
        recoloured += score(new_scene, new_analysis)["colour"]
        recolour_layout += preserves_layout(source_analysis, new_analysis)
    return {
        "cases": float(cases),
        f"strength_{KEEP_STRENGTH}_keeps_layout": kept / cases,
        f"strength_{RECOLOUR_STRENGTH}_recolours": recoloured / cases,
        f"strength_{RECOLOUR_STRENGTH}_keeps_layout": recolour_layout / cases,
    }


def time_per_image(engine: Engine, options: EvalOptions) -> dict[str, float]:
    """Median seconds of one ``Engine.generate`` call for one 64×64 image (base alone; base + refiner), after a
    warm-up call."""
    timings: dict[str, float] = {}
    modes: list[tuple[str, Path | None]] = [("base", None)]
    if options.refiner is not None:
        modes.append(("base+refiner", options.refiner))
    for name, refiner in modes:
        samples = []
        for run_index in range(options.timing_runs + 1):
            started = time.perf_counter()
            generate(
                engine,
                "a red circle",
                model=options.model,
                refiner=refiner,
                seeds=1,
                steps=options.num_inference_steps,
                guidance_scale=options.guidance_scale,
                seed0=run_index,
            )
            samples.append(time.perf_counter() - started)
        timings[f"{name}_seconds"] = statistics.median(samples[1:])
    return timings


def training_cases(prompts: Iterable[str]) -> tuple[tuple[str, Scene], ...]:
    """Prompts in the caption grammar with the scenes they describe."""
    return tuple((prompt, parse_prompt(prompt)) for prompt in prompts)


def evaluate(options: EvalOptions, engine: Engine | None = None) -> dict[str, Any]:
    """Run every check of the module docstring; returns the report as a JSON-able dict."""
    import torch

    # 1. One engine for everything: the base, the refiner sharing its text_encoder_2 and VAE, and img2img.
    torch.set_num_threads(options.threads)
    engine = engine if engine is not None else make_engine(max_images=options.seeds)
    report: dict[str, Any] = {
        "model": str(options.model),
        "refiner": str(options.refiner) if options.refiner else None,
        "guidance_scale": effective_guidance_scale(engine, options.model, options.guidance_scale),
        "num_inference_steps": options.num_inference_steps,
        "seeds": options.seeds,
    }
    # 2. txt2img on both prompt sets.
    started = time.perf_counter()
    report[TRAINING_PHRASING] = score_prompts(engine, training_cases(options.prompts), options)
    if options.held_out:
        report[HELD_OUT_PHRASING] = score_prompts(engine, options.held_out, options)
    report["txt2img_wall_seconds"] = time.perf_counter() - started
    # 3. img2img and speed.
    if options.img2img_cases > 0:
        report["img2img"] = img2img_checks(engine, options)
    if options.timing_runs > 0:
        report["timing"] = time_per_image(engine, options)
    return report


_SET_TITLES: Final[Mapping[str, str]] = {TRAINING_PHRASING: "training phrasing", HELD_OUT_PHRASING: "held-out phrasing"}


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables."""
    sets = [name for name in (TRAINING_PHRASING, HELD_OUT_PHRASING) if name in report]
    described = ", ".join(f"{_SET_TITLES[name]} {report[name]['prompts']}" for name in sets)
    lines = [
        f"Prompts: {described}; × {report['seeds']} seeds, {report['num_inference_steps']} steps, "
        f"guidance {report['guidance_scale']}, 64×64, through imagegen.Engine (CPU, float32).",
        "",
        "| category | " + " | ".join(f"{_SET_TITLES[n]}: base | {_SET_TITLES[n]}: base + refiner" for n in sets) + " |",
        "|---|" + "---|---|" * len(sets),
    ]
    for category in CATEGORIES:
        cells = []
        for name in sets:
            part = report[name]
            if category not in part["base"]:
                cells += ["—", "—"]
                continue
            refined = part["base+refiner"]
            count = part["images"][category]
            cells.append(f"{part['base'][category]:.3f} ({count})")
            cells.append(f"{refined[category]:.3f}" if refined else "—")
        if any(cell != "—" for cell in cells):
            lines.append(f"| {category} | " + " | ".join(cells) + " |")
    lines += ["", "(n) = images scored in that category."]
    if "img2img" in report:
        lines += ["", "| img2img check | fraction |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in report["img2img"].items() if k != "cases"]
        lines.append(f"| cases | {int(report['img2img']['cases'])} |")
    if "timing" in report:
        lines += ["", "| timing (one 64×64 image, Engine.generate) | seconds |", "|---|---|"]
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
    parser.add_argument("--limit", type=int, default=0, help="only the first N prompts of each set (0 = all)")
    parser.add_argument("--img2img-cases", type=int, default=32)
    parser.add_argument("--timing-runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    """Run ``imagegen eval-demo`` with parsed options; prints the markdown report; returns the exit status."""
    limit = args.limit if args.limit > 0 else None
    options = EvalOptions(
        model=args.model,
        refiner=args.refiner,
        prompts=DEFAULT_PROMPTS[:limit],
        held_out=HELD_OUT[:limit],
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
