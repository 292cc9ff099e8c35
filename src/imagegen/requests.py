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
#: What the masked area starts from (A1111's "Masked content", API ``inpainting_fill`` 0-3, in that order).
INPAINT_FILLS = ("fill", "original", "latent noise", "latent nothing")
#: Largest mask blur (standard deviation, pixels) and "only masked" padding: beyond them nothing changes but the cost.
MAX_MASK_BLUR = 64
MAX_INPAINT_PADDING = 256
#: Largest canvas growth per side for outpainting, in pixels.
MAX_OUTPAINT = 2048
#: Largest upscale factor of an upscale request and of the SD upscale script (A1111's Extras slider stops at 8).
MAX_UPSCALE = 8.0
#: Image-to-image: the largest scale of the noise added to the input (A1111's slider stops at 1.5).
MAX_NOISE_MULTIPLIER = 2.0
#: Hires fix: the largest upscale factor (A1111's slider stops at 4; the size limits still apply).
MAX_HR_SCALE = 8.0


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
        for name in ("init_image", "mask"):
            image = getattr(request, name)
            if image is not None:
                w, h = image.size
                if w * h > self.max_input_pixels:
                    raise InvalidRequest(name, f"must have at most {self.max_input_pixels} pixels, got {w}x{h}")

    def check_size(self, field: str, width: int, height: int) -> None:
        """Raise :class:`InvalidRequest` naming ``field`` if an image of ``width`` x ``height`` is too large to make
        (the hires fix's second pass, an outpainted canvas, an upscale)."""
        if width > self.max_width or height > self.max_height or width * height > self.max_pixels:
            raise InvalidRequest(
                field,
                f"would make a {width}x{height} image; the limits are {self.max_width}x{self.max_height} and "
                f"{self.max_pixels} pixels",
            )


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


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidRequest(name, f"must be true or false, got {value!r}")


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
    * ``mask`` (with ``init_image``) inpaints: white pixels are repainted, black ones kept; an RGBA mask with
      transparency uses its alpha (opaque = repaint), as A1111. ``mask_blur`` softens its edge (pixels),
      ``inpainting_fill`` is what the masked area starts from, ``inpaint_full_res`` repaints only a crop around the
      mask (``inpaint_full_res_padding`` pixels of context) at the request's size, ``invert_mask`` swaps the areas.
      Pixels outside the blurred mask are the input's own. ``outpaint`` (left, right, top, bottom) grows the canvas
      and repaints the new area.
    * ``tiling`` makes a seamless tile (circular padding in the UNet and VAE convolutions, for this request only).
    * ``enable_hr`` (text-to-image) is A1111's hires fix: generate, upscale by ``hr_scale`` (or to ``hr_resize_x`` x
      ``hr_resize_y``) with ``hr_upscaler``, then re-run ``strength`` of ``hr_second_pass_steps`` (0: ``steps``) at
      the large size; ``hr_sampler``, ``hr_schedule_type``, ``hr_prompt``, ``hr_negative_prompt`` and ``hr_cfg``
      change the second pass (empty/None: the first pass's).
    * ``sd_upscale`` (image-to-image; 0 = off) is A1111's "SD upscale" script: the init image is upscaled by that
      factor with ``sd_upscale_upscaler``, cut into tiles of the request's size overlapping by ``sd_upscale_overlap``
      pixels, each tile re-run at ``strength`` (the same seed for every tile of an image), and stitched back.
    * ``initial_noise_multiplier`` (image-to-image, A1111's "Noise multiplier for img2img") scales the noise added to
      the input's latents; 1 leaves it as the sampler draws it.
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
    mask: Image | None = None
    mask_blur: int = 4
    inpainting_fill: str = "original"
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = 32
    invert_mask: bool = False
    outpaint: tuple[int, int, int, int] = (0, 0, 0, 0)
    tiling: bool = False
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0
    hr_sampler: str | None = None
    hr_schedule_type: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_cfg: float | None = None
    sd_upscale: float = 0.0
    sd_upscale_upscaler: str = "Lanczos"
    sd_upscale_overlap: int = 64
    initial_noise_multiplier: float = 1.0

    @property
    def inpainting(self) -> bool:
        """Whether this request repaints part of its init image (a mask, or a canvas grown by ``outpaint``)."""
        return self.mask is not None or any(self.outpaint)

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
        self._check_editing()
        self._check_hires()
        self._check_sd_upscale()
        _check_float("initial_noise_multiplier", self.initial_noise_multiplier, 0.0, MAX_NOISE_MULTIPLIER)
        object.__setattr__(self, "initial_noise_multiplier", float(self.initial_noise_multiplier))
        # Sampler names are checked here (pure Python), so a typo fails before any model work.
        from imagegen.samplers import parse_sampler, resolve_eta

        try:
            parse_sampler(self.hr_sampler, self.hr_schedule_type)
        except InvalidRequest as exc:  # the same names, but the second pass's fields
            raise InvalidRequest(f"hr_{exc.field}", exc.message) from None

        choice = parse_sampler(self.sampler, self.schedule_type)
        if self.eta is not None:
            _check_float("eta", self.eta, 0.0, 1.0)
            if choice is not None and not choice.uses_model_scheduler:
                # A named sampler's eta rule needs no model; the model's own sampler is checked in imagegen.rules.
                resolve_eta(self.eta, choice, {}, sampler=choice.name)

    def _check_editing(self) -> None:
        """Inpainting, outpainting and tiling fields."""
        if self.mask is not None:
            if not hasattr(self.mask, "size"):
                raise InvalidRequest("mask", f"must be a PIL image, got {type(self.mask).__name__}")
            if self.init_image is None:
                raise InvalidRequest("mask", "needs an init_image to paint into")
            if self.mask.size != self.init_image.size:
                mw, mh = self.mask.size
                iw, ih = self.init_image.size
                raise InvalidRequest(
                    "mask", f"is {mw}x{mh} but the init image is {iw}x{ih}; they must be the same size"
                )
        _check_int("mask_blur", self.mask_blur, 0, MAX_MASK_BLUR)
        if self.inpainting_fill not in INPAINT_FILLS:
            raise InvalidRequest(
                "inpainting_fill", f"must be one of {', '.join(INPAINT_FILLS)}, got {self.inpainting_fill!r}"
            )
        _check_bool("inpaint_full_res", self.inpaint_full_res)
        _check_int("inpaint_full_res_padding", self.inpaint_full_res_padding, 0, MAX_INPAINT_PADDING)
        _check_bool("invert_mask", self.invert_mask)
        if not isinstance(self.outpaint, (list, tuple)) or len(self.outpaint) != 4:
            raise InvalidRequest(
                "outpaint", f"must be 4 pixel counts (left, right, top, bottom), got {self.outpaint!r}"
            )
        object.__setattr__(self, "outpaint", tuple(self.outpaint))
        for side, value in zip(("left", "right", "top", "bottom"), self.outpaint, strict=True):
            _check_int(f"outpaint.{side}", value, 0, MAX_OUTPAINT)
        if any(self.outpaint) and self.init_image is None:
            raise InvalidRequest("outpaint", "needs an init_image to extend")
        _check_bool("tiling", self.tiling)

    def _check_sd_upscale(self) -> None:
        """A1111's "SD upscale" script's fields."""
        _check_float("sd_upscale", self.sd_upscale, 0.0, MAX_UPSCALE)
        if 0 < self.sd_upscale < 1:
            raise InvalidRequest(
                "sd_upscale", f"must be 0 (off) or between 1 and {MAX_UPSCALE}, got {self.sd_upscale!r}"
            )
        if self.sd_upscale and self.init_image is None:
            raise InvalidRequest("sd_upscale", "upscales an init_image: send one")
        if self.sd_upscale and self.inpainting:
            raise InvalidRequest("sd_upscale", "cannot be combined with a mask or outpaint")
        object.__setattr__(self, "sd_upscale", float(self.sd_upscale))
        _check_text("sd_upscale_upscaler", self.sd_upscale_upscaler)
        _check_int("sd_upscale_overlap", self.sd_upscale_overlap, 0, 1024)

    def _check_hires(self) -> None:
        """The hires fix's fields (checked whether or not it is enabled: a bad value is a client bug either way)."""
        _check_bool("enable_hr", self.enable_hr)
        if self.enable_hr and self.init_image is not None:
            raise InvalidRequest("enable_hr", "the hires fix is for text-to-image; for an init image, ask for its size")
        _check_float("hr_scale", self.hr_scale, 1.0, MAX_HR_SCALE)
        object.__setattr__(self, "hr_scale", float(self.hr_scale))
        for name in ("hr_resize_x", "hr_resize_y"):
            value = getattr(self, name)
            _check_int(name, value, 0, None)
            if value and (value < 8 or value % 8):
                raise InvalidRequest(name, f"must be 0 (use hr_scale) or a multiple of 8, got {value}")
        _check_text("hr_upscaler", self.hr_upscaler)
        _check_int("hr_second_pass_steps", self.hr_second_pass_steps, 0, MAX_STEPS)
        for name in ("hr_sampler", "hr_schedule_type"):
            value = getattr(self, name)
            if value is not None:
                _check_text(name, value)
        _check_text("hr_prompt", self.hr_prompt)
        _check_text("hr_negative_prompt", self.hr_negative_prompt)
        if self.hr_cfg is not None:
            _check_float("hr_cfg", self.hr_cfg, 0.0, 100.0)


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


@dataclass(frozen=True, kw_only=True)
class UpscaleRequest:
    """Upscale one image (A1111's "Extras"): by ``scale``, or to ``width`` x ``height`` (``crop``: cover the box,
    then cut the overflow from the centre; else keep the aspect ratio and cover it). ``upscaler_2`` is blended over
    the first at ``upscaler_2_visibility`` (0 = off). Upscaler names are checked by the engine, which knows them."""

    image: Image
    upscaler: str = "R-ESRGAN 4x+"
    scale: float = 2.0
    width: int | None = None
    height: int | None = None
    crop: bool = True
    upscaler_2: str = "None"
    upscaler_2_visibility: float = 0.0

    def __post_init__(self) -> None:
        if not hasattr(self.image, "size"):
            raise InvalidRequest("image", f"must be a PIL image, got {type(self.image).__name__}")
        _check_text("upscaler", self.upscaler)
        _check_text("upscaler_2", self.upscaler_2)
        _check_float("scale", self.scale, 0.0, MAX_UPSCALE, low_open=True)
        if (self.width is None) != (self.height is None):
            raise InvalidRequest("width" if self.width is None else "height", "give both width and height, or neither")
        _check_int("width", self.width, 1, None, none_ok=True)
        _check_int("height", self.height, 1, None, none_ok=True)
        _check_bool("crop", self.crop)
        _check_float("upscaler_2_visibility", self.upscaler_2_visibility, 0.0, 1.0)
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "upscaler_2_visibility", float(self.upscaler_2_visibility))

    def target_size(self) -> tuple[int, int, float]:
        """(width, height) of the result and the factor the image is upscaled by before any crop."""
        in_w, in_h = self.image.size
        if self.width is None or self.height is None:
            return max(1, round(in_w * self.scale)), max(1, round(in_h * self.scale)), float(self.scale)
        factor = max(self.width / in_w, self.height / in_h)
        if self.crop:
            return self.width, self.height, factor
        return max(1, round(in_w * factor)), max(1, round(in_h * factor)), factor


@dataclass(frozen=True, kw_only=True)
class UpscaleResult:
    """The upscaled image with its infotext (A1111's "Postprocess ..." keys) and the time it took."""

    images: tuple[Image, ...]
    infotexts: tuple[str, ...]
    effective: UpscaleRequest
    #: The upscaler used (what a job's "model" shows).
    model: str
    seeds: tuple[int, ...] = ()
    timings: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    warnings: tuple[str, ...] = ()
