"""What imagegen's engine costs over raw diffusers: the same demo-model request (64x64, --steps steps, one image)
through ``Engine.generate`` and through the diffusers pipeline loaded from the same folder, alternated, median of
--rounds. The issue's target: engine / diffusers <= 1.03. A second figure: the prompt cache's share (a new prompt
each time vs the same prompt).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/engine_overhead.py --rounds 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable


def _seconds(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import torch
    from diffusers import StableDiffusionXLPipeline

    from imagegen import Engine, GenerationRequest
    from imagegen.loading import DEFAULT_MODEL, builtin_models

    engine = Engine()
    folder = builtin_models()[DEFAULT_MODEL]
    raw = StableDiffusionXLPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)
    raw.set_progress_bar_config(disable=True)
    # The engine records the sampler it ran; give raw diffusers the same scheduler configuration (the model's own).
    prompt = "a red circle on the left"

    def through_engine(text: str = prompt) -> object:
        return engine.generate(GenerationRequest(prompt=text, seed=1, num_inference_steps=args.steps))

    def through_diffusers() -> object:
        generator = torch.Generator("cpu").manual_seed(1)
        return raw(prompt, num_inference_steps=args.steps, generator=generator, width=64, height=64).images

    through_engine()
    through_diffusers()  # warm-up both
    engine_s, diffusers_s, fresh_s = [], [], []
    for i in range(args.rounds):
        engine_s.append(_seconds(through_engine))
        diffusers_s.append(_seconds(through_diffusers))
        fresh_s.append(_seconds(lambda i=i: through_engine(f"{prompt} {i}")))  # a prompt never seen: encoded
    report = {
        "steps": args.steps,
        "rounds": args.rounds,
        "engine_s": round(statistics.median(engine_s), 4),
        "diffusers_s": round(statistics.median(diffusers_s), 4),
        "engine_over_diffusers": round(statistics.median(engine_s) / statistics.median(diffusers_s), 3),
        "engine_new_prompt_s": round(statistics.median(fresh_s), 4),
        "prompt_cache_gain": round(statistics.median(fresh_s) / statistics.median(engine_s), 3),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
