"""The request rules that depend on the model: one place, used by the service (before queueing, from the served models'
files) and by the engine (after loading), so both refuse the same requests with the same words.

:class:`~imagegen.requests.GenerationRequest` checks what needs no model (ranges, names); these need to know what the
model *is*: its family (a refiner continues only an SDXL base; a refiner alone only refines an image) and its own
scheduler (what ``eta`` means when a request names no sampler). Pure Python: no torch, no diffusers.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from imagegen.errors import InvalidRequest
from imagegen.loading import Family
from imagegen.samplers import parse_sampler, resolve_eta

if TYPE_CHECKING:
    from imagegen.loading import ModelInfo
    from imagegen.options import EngineOptions
    from imagegen.requests import GenerationRequest, Limits, UpscaleRequest
    from imagegen.samplers import SamplerChoice

__all__ = [
    "check_hires",
    "check_models",
    "check_networks",
    "check_sd_upscale",
    "check_upscale",
    "effective_eta",
    "hires_size",
    "sd_upscale_size",
]


def check_models(request: GenerationRequest, base: ModelInfo, refiner: ModelInfo | None) -> None:
    """Raise :class:`InvalidRequest` when the models cannot run ``request`` together (field ``model``/``refiner``)."""
    if base.family is Family.SDXL_REFINER and request.init_image is None:
        raise InvalidRequest(
            "model",
            f"{base.ref} is an SDXL refiner, which only refines images: give an init image, "
            "or use it as the refiner of an SDXL base",
        )
    if refiner is None:
        return
    if base.family is not Family.SDXL:
        raise InvalidRequest(
            "refiner", f"a refiner continues an SDXL base's latents, but {base.ref} is {base.family.value}"
        )
    if refiner.family is not Family.SDXL_REFINER:
        raise InvalidRequest("refiner", f"{refiner.ref} is a {refiner.family.value} model, not an SDXL refiner")


def effective_eta(request: GenerationRequest, base: ModelInfo, refiner: ModelInfo | None = None) -> float | None:
    """The eta ``request`` runs with on ``base``: ``None`` when its sampler adds no noise (eta is then a no-op, accepted
    silently, as in A1111), else the checked value (:class:`InvalidRequest` naming ``eta``). The refiner runs the same
    sampler (or its own scheduler when none is named), so its eta is checked too."""
    choice = parse_sampler(request.sampler)  # the schedule type changes no eta rule (and was checked already)
    if refiner is not None:
        _model_eta(request, choice, refiner)
    return _model_eta(request, choice, base)


def _model_eta(request: GenerationRequest, choice: SamplerChoice | None, model: ModelInfo) -> float | None:
    # Only a model whose config names a scheduler with noise can refuse an eta, so its class is named here.
    own = f"{model.ref}'s own sampler ({model.scheduler_config.get('_class_name')})"
    return resolve_eta(request.eta, choice, model.scheduler_config, sampler=request.sampler or own)


def check_networks(request: GenerationRequest, options: EngineOptions) -> None:
    """Raise :class:`InvalidRequest` for a style, LoRA, extra-network tag or hires upscaler the engine would refuse:
    unknown names, paths instead of names, pickle files without the operator's opt-in. File lookups only, no weights
    read."""
    from imagegen.networks.lora import resolve_loras
    from imagegen.prompts.styles import apply_styles, read_styles

    if request.styles:
        prompt, negative = apply_styles(
            request.prompt, request.negative_prompt, request.styles, read_styles(options.styles_path())
        )
        request = dataclasses.replace(request, prompt=prompt, negative_prompt=negative, styles=())
    resolve_loras(request, folders=options.lora_folders(), allow_pickle=options.allow_pickle)
    check_upscalers(request, options)


def check_upscalers(request: GenerationRequest, options: EngineOptions) -> None:
    """The hires fix's and the SD upscale script's upscaler must be one the engine has (a latent mode for the hires
    fix too); nothing is loaded."""
    from imagegen.upscalers import Upscalers
    from imagegen.upscalers.latent import is_latent_upscaler

    names = []
    if request.enable_hr and not is_latent_upscaler(request.hr_upscaler):
        names.append((request.hr_upscaler, "hr_upscaler"))
    if request.sd_upscale:
        names.append((request.sd_upscale_upscaler, "sd_upscale_upscaler"))
    if names:
        # Names only: whether a library imports is the engine's to say (it refuses an unavailable one with the
        # reason); importing OpenCV and Vulkan here, in the API process, for every request would cost too much.
        upscalers = Upscalers(
            folders=options.upscaler_folders(), allow_pickle=options.allow_pickle, import_probe=lambda package: None
        )
        for name, field in names:
            upscalers.check(name, field=field)


def hires_size(request: GenerationRequest) -> tuple[int, int, int, int]:
    """The hires fix's size (width, height) and the size the first pass is upscaled to before a centred crop to it
    (A1111: with both ``hr_resize_x`` and ``hr_resize_y``, the image covers the box and is cropped)."""
    w, h = int(request.width or 8), int(request.height or 8)
    x, y = request.hr_resize_x, request.hr_resize_y
    if x and y:
        scale = max(x / w, y / h)
        return x, y, max(x, _multiple_of_8(w * scale, up=True)), max(y, _multiple_of_8(h * scale, up=True))
    if x:
        y = _multiple_of_8(x * h / w)
    elif y:
        x = _multiple_of_8(y * w / h)
    else:
        x, y = _multiple_of_8(w * request.hr_scale), _multiple_of_8(h * request.hr_scale)
    return x, y, x, y


def _multiple_of_8(value: float, *, up: bool = False) -> int:
    whole = -(-int(round(value, 6)) // 8) if up else int(round(value, 6)) // 8
    return max(8, whole * 8)


def check_hires(request: GenerationRequest, limits: Limits) -> None:
    """The hires fix's second pass must fit the operator's size limits (``request`` has its size filled in)."""
    field = "hr_resize_x" if request.hr_resize_x or request.hr_resize_y else "hr_scale"
    limits.check_size(field, *hires_size(request)[:2])


def check_upscale(request: UpscaleRequest, limits: Limits) -> None:
    """An upscale's input and output must fit the operator's limits (before it is queued)."""
    in_w, in_h = request.image.size
    if in_w * in_h > limits.max_input_pixels:
        raise InvalidRequest("image", f"must have at most {limits.max_input_pixels} pixels, got {in_w}x{in_h}")
    width, height, _ = request.target_size()
    limits.check_size("scale" if request.width is None else "width", width, height)


def sd_upscale_size(request: GenerationRequest, size: tuple[int, int]) -> tuple[int, int]:
    """The size the SD upscale script upscales an init image of ``size`` to."""
    return max(1, round(size[0] * request.sd_upscale)), max(1, round(size[1] * request.sd_upscale))


def check_sd_upscale(request: GenerationRequest, limits: Limits) -> None:
    """The SD upscale script's result must fit the limits and hold at least one tile (``request`` has its size)."""
    if not request.sd_upscale:
        return
    if request.init_image is None:
        raise InvalidRequest("sd_upscale", "upscales an init_image: send one")
    width, height = sd_upscale_size(request, request.init_image.size)
    limits.check_size("sd_upscale", width, height)
    tile_w, tile_h = int(request.width or 8), int(request.height or 8)
    if width < tile_w or height < tile_h:
        raise InvalidRequest(
            "sd_upscale",
            f"makes a {width}x{height} image, smaller than one {tile_w}x{tile_h} tile; ask for a larger factor or "
            "a smaller width and height",
        )
    if request.sd_upscale_overlap >= min(tile_w, tile_h):
        raise InvalidRequest(
            "sd_upscale_overlap", f"must be less than the tile size {tile_w}x{tile_h}, got {request.sd_upscale_overlap}"
        )
