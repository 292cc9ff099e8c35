"""Inpainting's inputs and pipeline arguments, in A1111's order: the canvas (grown when outpainting) and the binary
mask at the input's size; the arguments that give diffusers' inpainting pipelines the mask, the masked image's latents
and, for A1111's latent fills, the starting latents. Used by :class:`imagegen.engine.Engine`; torch is imported only
inside the functions that need it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image as PILImage

from imagegen.editing.masks import binary_mask, mask_bounds, outpaint_canvas
from imagegen.errors import InvalidRequest

if TYPE_CHECKING:
    from typing import TypeAlias

    import torch
    from diffusers import DiffusionPipeline
    from PIL.Image import Image

    from imagegen.requests import GenerationRequest

    #: What a denoising run starts from: nothing (text-to-image), an image, one image per output, or latents.
    Init: TypeAlias = Image | list[Image] | torch.Tensor | None

__all__ = [
    "Inputs",
    "blank",
    "center_crop",
    "center_crop_latents",
    "full_mask",
    "inpaint_arguments",
    "inpaint_inputs",
    "inpainting_unet",
    "resized",
]


@dataclass(frozen=True, kw_only=True)
class Inputs:
    """The request's images as the run uses them: the init image (the grown canvas when outpainting) and, for
    inpainting, the binary mask at the same size (inverted if asked, the outpainted area added)."""

    image: Image | None = None
    mask: Image | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size if self.image is not None else (0, 0)


def resized(image: Image, width: int, height: int) -> Image:
    """``image`` as RGB at ``width`` x ``height`` (Lanczos, only when the size differs)."""
    image = image.convert("RGB")
    return image if image.size == (width, height) else image.resize((width, height), PILImage.Resampling.LANCZOS)


def blank(width: int, height: int) -> Image:
    """Mid-grey: zero in the VAE's [-1, 1] range, what an inpainting checkpoint sees where nothing is known."""
    return PILImage.new("RGB", (width, height), (127, 127, 127))


def full_mask(width: int, height: int) -> Image:
    return PILImage.new("L", (width, height), 255)


def inpainting_unet(pipeline: DiffusionPipeline) -> bool:
    """An inpainting checkpoint: its UNet takes the latents, the mask and the masked image's latents (9 channels)."""
    return int(getattr(pipeline.unet.config, "in_channels", 4)) == 9


def inpaint_inputs(request: GenerationRequest) -> Inputs:
    """The canvas and the binary mask of an inpainting or outpainting request, at the input's own size."""
    if request.init_image is None:  # GenerationRequest refuses a mask or outpaint without one
        raise InvalidRequest("init_image", "inpainting needs an init image")
    image = request.init_image.convert("RGB")
    if request.mask is not None:
        mask = binary_mask(request.mask, invert=request.invert_mask)
    else:
        mask = PILImage.new("L", image.size, 0)
    if any(request.outpaint):
        left, right, top, bottom = request.outpaint
        image, grown = outpaint_canvas(image, left, right, top, bottom)
        grown.paste(mask.point(lambda v: 255 if v else 0), (left, top), mask)  # the user's mask inside, too
        mask = grown
    if mask_bounds(mask) is None:
        inverted = " (after invert_mask)" if request.invert_mask else ""
        raise InvalidRequest(
            "mask", f"is empty{inverted}: no pixel is marked to repaint (white, or opaque in an RGBA mask)"
        )
    return Inputs(image=image, mask=mask)


def inpaint_arguments(pipe: DiffusionPipeline, request: GenerationRequest, init: Init, mask: Image) -> dict[str, Any]:
    """The inpainting pipeline's arguments: the image, the mask, the masked image's latents (which a 9-channel UNet
    reads, and which keep diffusers from masking latents when the image is given as latents) and, for A1111's
    "latent noise" and "latent nothing" fills, the image's latents with the masked area replaced."""
    if not isinstance(init, PILImage.Image):
        raise TypeError(f"inpainting starts from one image, got {type(init).__name__}")
    width, height = int(request.width or 8), int(request.height or 8)
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(init, height=height, width=width).to(device=vae.device, dtype=vae.dtype)
    masked_pixels = pipe.mask_processor.preprocess(mask, height=height, width=width).to(pixels)
    import torch

    encode = torch.Generator("cpu").manual_seed(request.seed)
    with torch.no_grad():
        masked = pipe._encode_vae_image(pixels * (masked_pixels < 0.5), generator=encode)
    arguments: dict[str, Any] = {
        "image": init,
        "mask_image": mask,
        "masked_image_latents": masked,
        "strength": request.strength,
        "width": width,
        "height": height,
    }
    if request.inpainting_fill in ("latent noise", "latent nothing"):
        with torch.no_grad():
            latents = pipe._encode_vae_image(pixels, generator=encode)
        small = torch.nn.functional.interpolate(masked_pixels, size=latents.shape[-2:], mode="nearest")
        if request.inpainting_fill == "latent noise":
            fresh = torch.cat(
                [
                    torch.randn(latents.shape, generator=torch.Generator("cpu").manual_seed(request.seed + i))
                    for i in range(request.num_images)
                ]
            ).to(latents)
        else:
            fresh = torch.zeros((request.num_images, *latents.shape[1:])).to(latents)
        arguments["image"] = latents * (1 - small) + fresh * small
    return arguments


def center_crop(image: Image, width: int, height: int) -> Image:
    if image.size == (width, height):
        return image
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def center_crop_latents(latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
    top, left = (latents.shape[-2] - height) // 2, (latents.shape[-1] - width) // 2
    return latents[..., top : top + height, left : left + width]
