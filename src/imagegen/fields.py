"""Every request field's name at every front door, in one table.

A :class:`~imagegen.requests.GenerationRequest` field is called ``num_inference_steps`` in the library and the native
API, ``--steps`` on the command line, ``steps`` by A1111 clients and ``Steps`` in the infotext. Error messages name
the field the way the user sent it, and the infotext is written and read with the same keys, by reading this table;
the CLI builds its flags and the native API its schema from it. A new request field is one row here (plus its
validation in :mod:`imagegen.requests` and its effect in the engine).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["FIELDS", "Dialect", "FieldNames", "dialect_names", "field_names"]

Dialect = Literal["native", "cli", "a1111", "openai"]


@dataclass(frozen=True, kw_only=True)
class FieldNames:
    """One request field: its name per front door (``None``: that door does not take it) and what it means."""

    #: The :class:`GenerationRequest` attribute, which is also the native API's JSON key.
    field: str
    #: Its type as the CLI and JSON carry it (the init image travels as a path or base64 text).
    kind: type[int] | type[float] | type[str] | type[bool]
    #: One line for ``--help`` and the native API's schema.
    help: str
    cli: str | None = None
    a1111: str | None = None
    openai: str | None = None
    #: The A1111 infotext key (``Size-1``/``Size-2`` are the two halves of ``Size``, as A1111's parser names them).
    infotext: str | None = None


FIELDS: tuple[FieldNames, ...] = (
    FieldNames(field="prompt", kind=str, help="what to draw", cli="PROMPT", a1111="prompt", openai="prompt"),
    FieldNames(
        field="negative_prompt",
        kind=str,
        help="what not to draw",
        cli="--negative",
        a1111="negative_prompt",
        openai="negative_prompt",
    ),
    FieldNames(
        field="seed",
        kind=int,
        help="-1 picks a random seed; image i of a batch uses seed + i",
        cli="--seed",
        a1111="seed",
        openai="seed",
        infotext="Seed",
    ),
    FieldNames(
        field="num_inference_steps",
        kind=int,
        help="denoising steps (default: the model's)",
        cli="--steps",
        a1111="steps",
        infotext="Steps",
    ),
    FieldNames(
        field="guidance_scale",
        kind=float,
        help="classifier-free guidance scale (default: the model's)",
        cli="--cfg",
        a1111="cfg_scale",
        infotext="CFG scale",
    ),
    FieldNames(
        field="width",
        kind=int,
        help="image width, a multiple of 8 (default: the model's native size)",
        cli="--size",
        a1111="width",
        openai="size",
        infotext="Size-1",
    ),
    FieldNames(
        field="height",
        kind=int,
        help="image height, a multiple of 8 (default: the model's native size)",
        cli="--size",
        a1111="height",
        openai="size",
        infotext="Size-2",
    ),
    FieldNames(
        field="num_images",
        kind=int,
        help="images in the batch (image i uses seed + i)",
        cli="-n/--num-images",
        a1111="batch_size",
        openai="n",
    ),
    FieldNames(
        field="sampler",
        kind=str,
        help="A1111 name ('DPM++ 2M', 'Euler a', 'DPM++ 2M Karras') or diffusers class (default: the model's own)",
        cli="--sampler",
        a1111="sampler_name",
        infotext="Sampler",
    ),
    FieldNames(
        field="schedule_type",
        kind=str,
        help="Automatic, Uniform, Karras, Exponential, Beta, SGM Uniform",
        cli="--schedule-type",
        a1111="scheduler",
        infotext="Schedule type",
    ),
    FieldNames(
        field="init_image",
        kind=str,
        help="image-to-image input (a file on the CLI; base64 or a data: URI over HTTP)",
        cli="--init-image",
        a1111="init_images",
        openai="image",
    ),
    FieldNames(
        field="strength",
        kind=float,
        help="image-to-image: the fraction of the steps re-run on the input, in (0, 1]",
        cli="--strength",
        a1111="denoising_strength",
        openai="strength",
        infotext="Denoising strength",
    ),
    FieldNames(
        field="model",
        kind=str,
        help="hub id, local folder, .safetensors file or models-dir name (default: the built-in demo model); over "
        "HTTP, one of the served models (GET /v1/models; default: the server's)",
        cli="--model",
        a1111="override_settings.sd_model_checkpoint",
        openai="model",
        infotext="Model",
    ),
    FieldNames(
        field="refiner",
        kind=str,
        help="an SDXL refiner that continues the base's latents",
        cli="--refiner",
        a1111="refiner_checkpoint",
        infotext="Refiner",
    ),
    FieldNames(
        field="denoising_end",
        kind=float,
        help="where the SDXL base hands over to the refiner, in (0, 1)",
        cli="--refiner-switch",
        a1111="refiner_switch_at",
        infotext="Refiner switch at",
    ),
    FieldNames(
        field="eta",
        kind=float,
        help="noise scale of DDIM (default 0) and of the ancestral/SDE samplers (default 1; 0 = no fresh noise)",
        cli="--eta",
        a1111="eta",
        infotext="Eta",
    ),
    FieldNames(
        field="loras",
        kind=str,
        help="LoRAs from the LoRA folder with their weights, NAME[:WEIGHT] (also <lora:NAME:WEIGHT> in the prompt)",
        cli="--lora",
    ),
    FieldNames(
        field="clip_skip",
        kind=int,
        help="A1111's clip skip, 1-12: SD 1.x reads the text encoder's output that many layers from the end "
        "(SD 2.x and SDXL ignore it, as A1111 does)",
        cli="--clip-skip",
        a1111="override_settings.CLIP_stop_at_last_layers",
        infotext="Clip skip",
    ),
    FieldNames(
        field="emphasis",
        kind=str,
        help="how (word:1.2) weights apply: Original (A1111's default), No norm, Ignore, None (brackets are text)",
        cli="--emphasis",
        a1111="override_settings.emphasis",
        infotext="Emphasis",
    ),
    FieldNames(
        field="styles",
        kind=str,
        help="prompt styles from the styles file (A1111 styles.csv), merged into the prompts in order",
        cli="--style",
        a1111="styles",
    ),
    FieldNames(
        field="mask",
        kind=str,
        help="inpainting: white pixels of the mask are repainted, black kept (RGBA: opaque = repaint); same size as "
        "the init image (a file on the CLI; base64 or a data: URI over HTTP)",
        cli="--mask",
        a1111="mask",
        openai="mask",
    ),
    FieldNames(
        field="mask_blur",
        kind=int,
        help="inpainting: blur of the mask's edge in pixels, 0-64",
        cli="--mask-blur",
        a1111="mask_blur",
        infotext="Mask blur",
    ),
    FieldNames(
        field="inpainting_fill",
        kind=str,
        help="inpainting: what the masked area starts from: fill (surrounding colours), original, latent noise, "
        "latent nothing",
        cli="--inpaint-fill",
        a1111="inpainting_fill",
        infotext="Masked content",
    ),
    FieldNames(
        field="inpaint_full_res",
        kind=bool,
        help="inpainting: repaint only a crop around the mask, at the request's size, and paste it back "
        "(A1111's 'Only masked')",
        cli="--inpaint-full-res",
        a1111="inpaint_full_res",
        infotext="Inpaint area",
    ),
    FieldNames(
        field="inpaint_full_res_padding",
        kind=int,
        help="inpainting with --inpaint-full-res: pixels of context around the mask, 0-256",
        cli="--inpaint-padding",
        a1111="inpaint_full_res_padding",
        infotext="Masked area padding",
    ),
    FieldNames(
        field="invert_mask",
        kind=bool,
        help="inpainting: repaint the black area of the mask instead of the white",
        cli="--invert-mask",
        a1111="inpainting_mask_invert",
        infotext="Mask mode",
    ),
    FieldNames(
        field="outpaint",
        kind=str,
        help="outpainting: grow the init image's canvas by LEFT,RIGHT,TOP,BOTTOM pixels and paint the new area",
        cli="--outpaint",
        infotext="Outpaint",
    ),
    FieldNames(
        field="tiling",
        kind=bool,
        help="make a seamless tile: the left edge continues the right one, the top the bottom",
        cli="--tiling",
        a1111="tiling",
        infotext="Tiling",
    ),
    FieldNames(
        field="enable_hr",
        kind=bool,
        help="hires fix: generate, upscale, then re-run --strength of the steps at the large size",
        cli="--hires",
        a1111="enable_hr",
    ),
    FieldNames(
        field="hr_scale",
        kind=float,
        help="hires fix: upscale factor, 1-8",
        cli="--hr-scale",
        a1111="hr_scale",
        infotext="Hires upscale",
    ),
    FieldNames(
        field="hr_resize_x",
        kind=int,
        help="hires fix: target width instead of --hr-scale (0: from the scale)",
        cli="--hr-resize",
        a1111="hr_resize_x",
        infotext="Hires resize-1",
    ),
    FieldNames(
        field="hr_resize_y",
        kind=int,
        help="hires fix: target height instead of --hr-scale (0: from the scale)",
        cli="--hr-resize",
        a1111="hr_resize_y",
        infotext="Hires resize-2",
    ),
    FieldNames(
        field="hr_upscaler",
        kind=str,
        help="hires fix: Latent (and its variants), Lanczos, Nearest, R-ESRGAN 4x+, R-ESRGAN 4x+ Anime6B or an "
        "ESRGAN file's name (GET /sdapi/v1/upscalers)",
        cli="--hr-upscaler",
        a1111="hr_upscaler",
        infotext="Hires upscaler",
    ),
    FieldNames(
        field="hr_second_pass_steps",
        kind=int,
        help="hires fix: steps of the second pass (0: the first pass's)",
        cli="--hr-steps",
        a1111="hr_second_pass_steps",
        infotext="Hires steps",
    ),
    FieldNames(
        field="hr_sampler",
        kind=str,
        help="hires fix: the second pass's sampler (default: the first pass's)",
        cli="--hr-sampler",
        a1111="hr_sampler_name",
        infotext="Hires sampler",
    ),
    FieldNames(
        field="hr_schedule_type",
        kind=str,
        help="hires fix: the second pass's schedule type (default: the first pass's)",
        cli="--hr-schedule-type",
        a1111="hr_scheduler",
        infotext="Hires schedule type",
    ),
    FieldNames(
        field="hr_prompt",
        kind=str,
        help="hires fix: the second pass's prompt (default: the prompt)",
        cli="--hr-prompt",
        a1111="hr_prompt",
        infotext="Hires prompt",
    ),
    FieldNames(
        field="hr_negative_prompt",
        kind=str,
        help="hires fix: the second pass's negative prompt (default: the negative prompt)",
        cli="--hr-negative",
        a1111="hr_negative_prompt",
        infotext="Hires negative prompt",
    ),
    FieldNames(
        field="hr_cfg",
        kind=float,
        help="hires fix: the second pass's CFG scale (default: the first pass's)",
        cli="--hr-cfg",
        a1111="hr_cfg",
        infotext="Hires CFG Scale",
    ),
    FieldNames(
        field="sd_upscale",
        kind=float,
        help="image-to-image: A1111's SD upscale: upscale the init image by this factor, then re-run each tile of "
        "the request's size at --strength (0 = off)",
        cli="--sd-upscale",
        infotext="SD upscale",
    ),
    FieldNames(
        field="sd_upscale_upscaler",
        kind=str,
        help="SD upscale: the upscaler applied before the tiles are re-run",
        cli="--sd-upscale-upscaler",
        infotext="SD upscale upscaler",
    ),
    FieldNames(
        field="sd_upscale_overlap",
        kind=int,
        help="SD upscale: pixels by which neighbouring tiles overlap (blended)",
        cli="--sd-upscale-overlap",
        infotext="SD upscale overlap",
    ),
    FieldNames(
        field="initial_noise_multiplier",
        kind=float,
        help="image-to-image: scale of the noise added to the input, 0-2 (A1111's noise multiplier; 1 = as drawn)",
        cli="--noise-multiplier",
        a1111="initial_noise_multiplier",
        infotext="Noise multiplier",
    ),
)

_BY_FIELD: Mapping[str, FieldNames] = MappingProxyType({spec.field: spec for spec in FIELDS})


def field_names(field: str) -> FieldNames | None:
    """The row of a request field, or ``None`` for a name that is not one (``body``, ``Idempotency-Key``, ...)."""
    return _BY_FIELD.get(field)


def dialect_names(dialect: Dialect) -> Mapping[str, str]:
    """Request field -> the name ``dialect`` gives it (only the fields it takes)."""
    names: dict[str, str] = {}
    for spec in FIELDS:
        name = spec.field if dialect == "native" else getattr(spec, dialect)
        if name is not None:
            names[spec.field] = name
    return MappingProxyType(names)
