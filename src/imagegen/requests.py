"""What a caller asks for (:class:`GenerationRequest`) and what it gets back (:class:`GenerationResult`).

A request is validated once, when it is built: every bad value raises :class:`~imagegen.errors.InvalidRequest` naming
the field and the allowed range. Settings left at ``None`` take the model's defaults inside the engine. Limits that
an operator configures (largest size, most steps, ...) live in :class:`Limits` and are checked by the engine before
any model work.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from imagegen.errors import InvalidRequest

if TYPE_CHECKING:
    from PIL.Image import Image

#: Seeds are stored in PNG metadata and passed to ``torch.Generator.manual_seed``; A1111 uses 32-bit seeds.
MAX_SEED = 2**32 - 1
#: Hard ceiling on steps whatever the operator allows: the schedulers are trained on 1000 timesteps.
MAX_STEPS = 1000
#: Hard ceiling on images per request whatever the operator allows.
MAX_IMAGES = 1000
#: A1111's clip skip range (CLIP_stop_at_last_layers).
MAX_CLIP_SKIP = 12
#: LoRA weights beyond this only burn the image; A1111 sets no limit, but a typo (80 for 0.8) should fail loudly.
MAX_LORA_WEIGHT = 10.0
#: Emphasis modes (A1111's ``emphasis`` setting): how attention weights like ``(word:1.2)`` are applied.
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Operator-configurable ceilings, enforced before any model work."""

    max_width: int = 2048
    max_height: int = 2048
    max_pixels: int = 2048 * 2048
    max_steps: int = 150
    max_images: int = 8
    max_guidance_scale: float = 30.0
    #: Largest decoded init image (pixels), the decompression-bomb guard.
    max_input_pixels: int = 4096 * 4096
    #: Largest encoded init image file (bytes).
    max_input_bytes: int = 32 * 1024 * 1024

    def check(self, request: GenerationRequest) -> None:
        """Raise :class:`InvalidRequest` if ``request`` asks for more than these limits allow."""
        if request.width is not None and request.width > self.max_width:
            raise InvalidRequest("width", f"must be at most {self.max_width}, got {request.width}")
        if request.height is not None and request.height > self.max_height:
            raise InvalidRequest("height", f"must be at most {self.max_height}, got {request.height}")
        if (
            request.width is not None
            and request.height is not None
            and request.width * request.height > self.max_pixels
        ):
            raise InvalidRequest(
                "width",
                f"width × height must be at most {self.max_pixels} pixels, got {request.width}x{request.height}",
            )
        if request.num_inference_steps is not None and request.num_inference_steps > self.max_steps:
            raise InvalidRequest(
                "num_inference_steps", f"must be between 1 and {self.max_steps}, got {request.num_inference_steps}"
            )
        if request.num_images > self.max_images:
            raise InvalidRequest("num_images", f"must be between 1 and {self.max_images}, got {request.num_images}")
        if request.guidance_scale is not None and request.guidance_scale > self.max_guidance_scale:
            raise InvalidRequest(
                "guidance_scale", f"must be between 0 and {self.max_guidance_scale}, got {request.guidance_scale}"
            )
        if request.init_image is not None:
            w, h = request.init_image.size
            if w * h > self.max_input_pixels:
                raise InvalidRequest("init_image", f"must have at most {self.max_input_pixels} pixels, got {w}x{h}")


def _check_int(name: str, value: object, low: int, high: int | None, *, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    # bool is an int subclass; True as a step count is a client bug, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(name, f"must be an integer, got {value!r}")
    if high is None and value < low:
        raise InvalidRequest(name, f"must be at least {low}, got {value}")
    if high is not None and not low <= value <= high:
        raise InvalidRequest(name, f"must be between {low} and {high}, got {value}")


def _check_float(
    name: str, value: object, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidRequest(name, f"must be a number, got {value!r}")
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if math.isnan(v) or too_low or too_high:
        lb = "(" if low_open else "["
        rb = ")" if high_open else "]"
        raise InvalidRequest(name, f"must be in {lb}{low}, {high}{rb}, got {value!r}")


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidRequest(name, f"must be a string, got {type(value).__name__}")
    # PNG text chunks cannot hold NUL, so such a prompt could not be written into the image and reproduced.
    if "\x00" in value:
        raise InvalidRequest(name, "must not contain NUL characters")


@dataclass(frozen=True, kw_only=True)
class LoraWeight:
    """A LoRA asked for by name (a file in the LoRA folder, without its suffix) and its strength.

    ``weight`` applies to the UNet and the text encoders unless ``te_weight``/``unet_weight`` set them apart, as
    A1111's ``<lora:name:te:unet>``; weight 0 leaves the model unchanged."""

    name: str
    weight: float = 1.0
    te_weight: float | None = None
    unet_weight: float | None = None

    @property
    def text_encoder(self) -> float:
        return self.weight if self.te_weight is None else self.te_weight

    @property
    def unet(self) -> float:
        return self.weight if self.unet_weight is None else self.unet_weight

    def tag(self) -> str:
        """The A1111 prompt tag that asks for the same: ``<lora:name:w>`` or ``<lora:name:te:unet>``."""
        from imagegen.metadata import format_number

        if self.text_encoder == self.unet:
            return f"<lora:{self.name}:{format_number(self.unet)}>"
        return f"<lora:{self.name}:{format_number(self.text_encoder)}:{format_number(self.unet)}>"


def _lora(index: int, value: object) -> LoraWeight:
    name = f"loras[{index}]"
    if isinstance(value, LoraWeight):
        lora = value
    elif isinstance(value, Mapping):
        unknown = set(value) - {"name", "weight", "te_weight", "unet_weight"}
        if unknown:
            raise InvalidRequest(name, f"unknown keys {sorted(unknown)}; use name, weight, te_weight, unet_weight")
        if "name" not in value:
            raise InvalidRequest(f"{name}.name", "is required (a file name from the LoRA folder)")
        lora = LoraWeight(**{str(k): v for k, v in value.items()})
    else:
        raise InvalidRequest(name, f"must be an object with name and weight, got {type(value).__name__}")
    _check_text(f"{name}.name", lora.name)
    if not lora.name.strip():
        raise InvalidRequest(f"{name}.name", "must not be empty")
    _check_float(f"{name}.weight", lora.weight, -MAX_LORA_WEIGHT, MAX_LORA_WEIGHT)
    for part in ("te_weight", "unet_weight"):
        if getattr(lora, part) is not None:
            _check_float(f"{name}.{part}", getattr(lora, part), -MAX_LORA_WEIGHT, MAX_LORA_WEIGHT)
    te, unet = lora.te_weight, lora.unet_weight
    return LoraWeight(
        name=lora.name,
        weight=float(lora.weight),
        te_weight=None if te is None else float(te),
        unet_weight=None if unet is None else float(unet),
    )


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """One text-to-image or image-to-image job. Names follow diffusers; ``None`` means "the model's default".

    * ``seed`` -1 picks a random seed; image *i* of a batch uses ``seed + i`` and can be regenerated alone.
    * ``init_image`` switches to image-to-image; ``strength`` is the fraction of steps re-run on it.
    * ``refiner`` (SDXL) runs the base to ``denoising_end`` and the refiner from there on the same latents.
    * ``eta`` is A1111's noise scale of the samplers that add noise: DDIM's (default 0, deterministic), the ancestral
      and SDE samplers' (default 1; 0 removes their fresh noise). ``None`` is the sampler's default; for a sampler
      without noise eta changes nothing and is dropped (``result.effective.eta`` is ``None``).
    * ``prompt`` speaks A1111's prompt language: ``(word:1.2)``, ``[word]``, ``BREAK``, ``[from:to:when]``, ``[a|b]``,
      ``<lora:name:weight>`` tags and embedding names; ``loras`` asks for LoRAs without tags.
    * ``clip_skip`` (A1111's "Clip skip", SD 1.x) reads the text encoder that many layers from the end.
    * ``styles`` names styles of the styles file; their text is merged into the prompts (A1111's ``{prompt}`` rule).
    """

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    num_images: int = 1
    sampler: str | None = None
    schedule_type: str | None = None
    init_image: Image | None = None
    strength: float = 0.75
    model: str | None = None
    refiner: str | None = None
    denoising_end: float = 0.8
    eta: float | None = None
    loras: tuple[LoraWeight, ...] = ()
    clip_skip: int = 1
    emphasis: str = "Original"
    styles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_text("prompt", self.prompt)
        _check_text("negative_prompt", self.negative_prompt)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not -1 <= self.seed <= MAX_SEED:
            raise InvalidRequest("seed", f"must be -1 (random) or between 0 and {MAX_SEED}, got {self.seed!r}")
        _check_int("num_inference_steps", self.num_inference_steps, 1, MAX_STEPS, none_ok=True)
        if self.guidance_scale is not None:
            _check_float("guidance_scale", self.guidance_scale, 0.0, 100.0)
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is None:
                continue
            _check_int(name, value, 8, None)
            if value % 8:
                raise InvalidRequest(name, f"must be a multiple of 8, got {value}")
        _check_int("num_images", self.num_images, 1, MAX_IMAGES)
        # -1 (random) needs no exception: -1 + num_images - 1 is far below MAX_SEED.
        if self.seed + self.num_images - 1 > MAX_SEED:
            raise InvalidRequest("seed", f"seed + num_images - 1 must be at most {MAX_SEED}, got {self.seed}")
        _check_float("strength", self.strength, 0.0, 1.0, low_open=True)
        _check_float("denoising_end", self.denoising_end, 0.0, 1.0, low_open=True, high_open=True)
        for name in ("sampler", "schedule_type", "model", "refiner"):
            value = getattr(self, name)
            if value is not None:
                _check_text(name, value)
        if self.init_image is not None and not hasattr(self.init_image, "size"):
            raise InvalidRequest("init_image", f"must be a PIL image, got {type(self.init_image).__name__}")
        if not isinstance(self.loras, (list, tuple)):
            raise InvalidRequest("loras", f"must be a list of {{name, weight}}, got {type(self.loras).__name__}")
        object.__setattr__(self, "loras", tuple(_lora(i, value) for i, value in enumerate(self.loras)))
        _check_int("clip_skip", self.clip_skip, 1, MAX_CLIP_SKIP)
        if self.emphasis not in EMPHASIS_MODES:
            raise InvalidRequest("emphasis", f"must be one of {', '.join(EMPHASIS_MODES)}, got {self.emphasis!r}")
        if not isinstance(self.styles, (list, tuple)):  # a bare string is a common mistake: refused here too
            raise InvalidRequest("styles", f"must be a list of style names, got {type(self.styles).__name__}")
        object.__setattr__(self, "styles", tuple(self.styles))
        for index, style in enumerate(self.styles):
            _check_text(f"styles[{index}]", style)
        # Sampler names are checked here (pure Python), so a typo fails before any model work.
        from imagegen.samplers import parse_sampler, resolve_eta

        choice = parse_sampler(self.sampler, self.schedule_type)
        if self.eta is not None:
            _check_float("eta", self.eta, 0.0, 1.0)
            if choice is not None and not choice.uses_model_scheduler:
                # A named sampler's eta rule needs no model; the model's own sampler is checked in imagegen.rules.
                resolve_eta(self.eta, choice, {}, sampler=choice.name)


@dataclass(frozen=True, kw_only=True)
class GenerationResult:
    """Images with the seed, the A1111 infotext and the settings actually used for each."""

    images: tuple[Image, ...]
    seeds: tuple[int, ...]
    infotexts: tuple[str, ...]
    #: The request with every default filled in (seed, steps, size, sampler, ...): regenerates the same images.
    effective: GenerationRequest
    model: str
    #: Seconds spent per phase: "load", "denoise", "refine", "decode", "total".
    timings: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    #: Things the user should know, e.g. the part of a prompt the text encoder could not see.
    warnings: tuple[str, ...] = ()

    def save(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Write the images as PNGs with their infotext, A1111 style (``00000-SEED.png``, numbering continues in
        ``folder``); returns their paths."""
        from imagegen.metadata import save_images

        return save_images(self.images, self.infotexts, self.seeds, folder)
