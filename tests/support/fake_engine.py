"""A fake engine for server tests: solid-colour images with real infotext, quickly, without torch.

Set ``engine_factory="support.fake_engine:create"`` in the server settings (the worker process must have ``tests/``
on ``PYTHONPATH``). Magic words in the prompt drive it:

- ``[sleep=S]``: sleep ``S`` seconds per step (default ``IMAGEGEN_FAKE_STEP_SLEEP`` or 0), so jobs can be observed
  while running, cancelled, or have their worker killed;
- ``[crash]``: the worker process dies (``os._exit``) at step 1 of every attempt;
- ``[crash-once]``: the worker dies at step 1 of the first attempt only (a marker file in the data directory
  remembers it), so the retry succeeds;
- ``[oom]``: raises :class:`~imagegen.errors.ResourceExhausted` as the real engine does on out-of-memory;
- ``[fail]``: raises an unexpected ``RuntimeError``.

With ``previews=N``, every N-th progress event carries a 16x16 grey preview whose level is ``255 * step / steps``.

``IMAGEGEN_FAKE_LOAD_ERROR=1`` makes ``load`` fail (a default model that cannot be loaded).

``upscale`` resizes with PIL (Nearest for "Nearest", Lanczos for every other name) in "tiles" of 64 output pixels:
one progress event per tile (after sleeping ``IMAGEGEN_FAKE_STEP_SLEEP`` seconds), cancellable between tiles, with the
real engine's sizes (crop or not) and infotext.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from PIL import Image

from imagegen.errors import Cancelled, ModelLoadError, ResourceExhausted
from imagegen.metadata import Infotext, format_infotext, upscale_infotext
from imagegen.requests import MAX_SEED, GenerationRequest, GenerationResult, UpscaleRequest, UpscaleResult

DEFAULT_STEPS = 4
DEFAULT_SIZE = 64
#: Output pixels per side of one fake upscale tile.
UPSCALE_TILE = 64
_SLEEP = re.compile(r"\[sleep=([0-9.]+)\]")


@dataclass(frozen=True, kw_only=True)
class FakeProgress:
    step: int
    total: int
    stage: str = "base"
    preview: Image.Image | None = None


def _colour(seed: int) -> tuple[int, int, int]:
    digest = hashlib.sha256(str(seed).encode()).digest()
    return digest[0], digest[1], digest[2]


class FakeEngine:
    """Duck-types :class:`imagegen.engine.Engine` for the worker: ``load``, ``generate`` and ``upscale``."""

    def __init__(self, *, default_model: str | None, data_dir: str, step_sleep: float = 0.0) -> None:
        self.default_model = default_model
        self.data_dir = data_dir
        self.step_sleep = step_sleep
        self.loaded: list[str | None] = []

    def load(self, ref: str | None = None) -> str | None:
        if os.environ.get("IMAGEGEN_FAKE_LOAD_ERROR") == "1":
            raise ModelLoadError(f"cannot load {ref or self.default_model}: simulated load failure")
        self.loaded.append(ref or self.default_model)
        return ref or self.default_model

    def generate(
        self,
        request: GenerationRequest,
        *,
        progress: Callable[[Any], None] | None = None,
        cancel: threading.Event | None = None,
        previews: int = 0,
    ) -> GenerationResult:
        steps = request.num_inference_steps or DEFAULT_STEPS
        width = request.width or DEFAULT_SIZE
        height = request.height or DEFAULT_SIZE
        seed = request.seed if request.seed != -1 else int.from_bytes(os.urandom(4), "big") % (MAX_SEED - 1000)
        match = _SLEEP.search(request.prompt)
        sleep = float(match.group(1)) if match else self.step_sleep
        for step in range(1, steps + 1):
            if sleep:
                time.sleep(sleep)
            if step == 1:
                self._magic(request.prompt)
            if progress is not None:
                # A preview is a grey whose level is the step's share of the steps: tests can tell them apart.
                level = round(255 * step / steps)
                picture = Image.new("RGB", (16, 16), (level,) * 3) if previews and step % previews == 0 else None
                progress(FakeProgress(step=step, total=steps, preview=picture))
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled after step {step} of {steps}")
        model = request.model or self.default_model or "fake"
        effective = dataclasses.replace(
            request,
            seed=seed,
            num_inference_steps=steps,
            width=width,
            height=height,
            model=model,
            init_image=None,
            mask=None,
            outpaint=(0, 0, 0, 0),
            sd_upscale=0.0,
        )
        seeds = tuple(seed + i for i in range(request.num_images))
        infotexts = tuple(
            format_infotext(
                Infotext(
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt,
                    steps=steps,
                    sampler=request.sampler or "Euler",
                    cfg_scale=request.guidance_scale if request.guidance_scale is not None else 7.0,
                    seed=s,
                    width=width,
                    height=height,
                    model=model,
                    version="imagegen fake",
                )
            )
            for s in seeds
        )
        images = tuple(Image.new("RGB", (width, height), _colour(s)) for s in seeds)
        return GenerationResult(
            images=images,
            seeds=seeds,
            infotexts=infotexts,
            effective=effective,
            model=model,
            timings=MappingProxyType({"total": sleep * steps}),
        )

    def upscale(
        self,
        request: UpscaleRequest,
        *,
        progress: Callable[[Any], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> UpscaleResult:
        width, height, factor = request.target_size()
        in_w, in_h = request.image.size
        cover = (max(width, round(in_w * factor)), max(height, round(in_h * factor)))
        tiles = math.ceil(cover[0] / UPSCALE_TILE) * math.ceil(cover[1] / UPSCALE_TILE)
        for tile in range(1, tiles + 1):
            if self.step_sleep:
                time.sleep(self.step_sleep)
            if progress is not None:
                progress(FakeProgress(step=tile, total=tiles, stage="upscale"))
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"upscale cancelled after tile {tile} of {tiles}")
        resample = Image.Resampling.NEAREST if request.upscaler == "Nearest" else Image.Resampling.LANCZOS
        image = request.image.convert("RGB").resize(cover, resample)
        left, top = (cover[0] - width) // 2, (cover[1] - height) // 2
        image = image.crop((left, top, left + width, top + height))
        info = upscale_infotext(request)
        return UpscaleResult(
            images=(image,),
            infotexts=(info,),
            effective=request,
            model=request.upscaler,
            timings=MappingProxyType({"upscale": self.step_sleep * tiles, "total": self.step_sleep * tiles}),
        )

    def _magic(self, prompt: str) -> None:
        if "[crash]" in prompt:
            os._exit(3)
        if "[crash-once]" in prompt:
            marker = os.path.join(self.data_dir, "fake-crashed-once")
            if not os.path.exists(marker):
                with open(marker, "w") as handle:
                    handle.write("crashed")
                os._exit(3)
        if "[oom]" in prompt:
            raise ResourceExhausted("out of memory on fake: simulated")
        if "[fail]" in prompt:
            raise RuntimeError("simulated unexpected failure")


def create(settings: Any) -> FakeEngine:
    """The engine factory named in ``ServerSettings.engine_factory``."""
    return FakeEngine(
        default_model=settings.default_model,
        data_dir=str(settings.data_dir),
        step_sleep=float(os.environ.get("IMAGEGEN_FAKE_STEP_SLEEP", "0")),
    )
