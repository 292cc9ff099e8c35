"""Inpainting and outpainting masks, as A1111 prepares them (``modules/processing.py``, ``modules/masking.py``).

A mask is a Pillow ``"L"`` image the size of the picture: 255 where the model repaints, 0 where the original stays,
values between after blurring (a linear blend). Every helper is pure: images in, new images out.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter, ImageOps

__all__ = [
    "Box",
    "InpaintFill",
    "binary_mask",
    "blur_mask",
    "composite",
    "crop_region",
    "expand_to_aspect",
    "fill_masked",
    "mask_bounds",
    "outpaint_canvas",
    "paste_region",
]

#: A pixel rectangle ``(x1, y1, x2, y2)``, right and bottom exclusive (Pillow's crop box).
Box = tuple[int, int, int, int]

#: Blurs run in float32: twice as fast as float64, and their running sums stay accurate well within one level.
FloatArray = npt.NDArray[np.float32]

#: A1111 ``masking.fill``'s blur passes, coarse to fine: (standard deviation, times composited).
_FILL_PASSES = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))
#: A1111 thresholds masks at "more than half": 129..255 repaint, 0..128 keep.
_MASK_THRESHOLD = 128
#: Wide blurs run on a copy downscaled until their standard deviation is about this many pixels.
_BLUR_DETAIL = 8


class InpaintFill(str, Enum):
    """What the masked area starts from before denoising: A1111's "Masked content" (API ``inpainting_fill``)."""

    #: The masked area painted with the surrounding colours (:func:`fill_masked`).
    FILL = "fill"
    #: The original pixels, noised as in img2img.
    ORIGINAL = "original"
    #: Fresh latent noise, ignoring what was there.
    LATENT_NOISE = "latent noise"
    #: Zero latents.
    LATENT_NOTHING = "latent nothing"

    @classmethod
    def from_a1111(cls, value: int) -> InpaintFill:
        """The member for A1111's integer ``inpainting_fill`` (0 fill, 1 original, 2 latent noise, 3 latent nothing)."""
        members = tuple(cls)
        # bool is an int subclass; True as "original" would only hide a client bug.
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(members):
            raise ValueError(f"inpainting_fill must be an integer from 0 to {len(members) - 1}, got {value!r}")
        return members[value]


def binary_mask(mask: Image.Image, *, invert: bool = False) -> Image.Image:
    """A1111 ``create_binary_mask``: 255 (repaint) where the mask is over half bright, else 0; ``"L"``.

    A mask with any transparency is read from its alpha channel (A1111's canvas paints opaque strokes on a
    transparent layer); an opaque one from its grayscale. ``invert`` swaps the two (``inpainting_mask_invert``).
    """
    if "A" in mask.getbands() or "transparency" in mask.info:
        alpha = mask.convert("RGBA").getchannel("A")
        gray = alpha if alpha.getextrema() != (255, 255) else mask.convert("L")
    else:
        gray = mask.convert("L")
    binary = gray.point(lambda level: 255 if level > _MASK_THRESHOLD else 0)
    return ImageOps.invert(binary) if invert else binary


def blur_mask(mask: Image.Image, blur_x: int, blur_y: int) -> Image.Image:
    """A1111 ``mask_blur_x``/``mask_blur_y``: a Gaussian blur with these standard deviations per axis (0: none)."""
    if blur_x < 0 or blur_y < 0:
        raise ValueError(f"mask blur must be non-negative, got blur_x={blur_x}, blur_y={blur_y}")
    gray = mask.convert("L")
    if blur_x == 0 and blur_y == 0:
        return gray.copy()
    # Pillow's radius is the standard deviation, one per axis; a zero axis is left untouched.
    return gray.filter(ImageFilter.GaussianBlur((blur_x, blur_y)))


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111 ``masking.fill``: the masked area painted with the colours around it; unmasked pixels unchanged. RGB.

    The known pixels (weighted by ``255 - mask``) are blurred with shrinking radii and each blur is laid over the
    previous ones, normalised by the blurred weights, so every hole pixel takes the colour of its nearest known
    surroundings. The last pass (radius 0) puts the known pixels back exactly. Where no pixel is known at all (a
    mask covering the whole image) the result is black, as in A1111.
    """
    _require_same_size(image, mask, "mask")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    known = np.asarray(ImageOps.invert(mask.convert("L")), dtype=np.float32)[..., None] / np.float32(255)
    # Premultiplied colour and its weight, blurred together so each pass is one normalised convolution.
    layer_source = np.concatenate([rgb * known, known], axis=-1)
    colour = np.zeros_like(rgb)
    alpha = np.zeros_like(known)
    for sigma, repeats in _FILL_PASSES:
        layer = _gaussian(layer_source, sigma)
        layer_colour, layer_alpha = layer[..., :3], np.clip(layer[..., 3:], 0.0, 1.0)
        for _ in range(repeats):
            # Porter-Duff "over" in premultiplied form.
            colour = layer_colour + colour * (1.0 - layer_alpha)
            alpha = layer_alpha + alpha * (1.0 - layer_alpha)
    straight = np.divide(colour, alpha, out=np.zeros_like(colour), where=alpha > 0)
    return _to_rgb_image(straight)


def mask_bounds(mask: Image.Image) -> Box | None:
    """The bounding box of the mask's non-zero pixels, or None for an empty mask."""
    return mask.convert("L").getbbox()


def crop_region(mask: Image.Image, padding: int) -> Box:
    """A1111 ``get_crop_region``: the masked pixels' bounding box grown by ``padding`` on each side, kept inside."""
    if padding < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    bounds = mask_bounds(mask)
    if bounds is None:
        # A1111 then falls back to whole-picture img2img; that decision belongs to the caller (see mask_bounds).
        raise ValueError("mask is empty: nothing to crop around (check mask_bounds first)")
    x1, y1, x2, y2 = bounds
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height)


def expand_to_aspect(box: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """A1111 ``expand_crop_region``: ``box`` grown to the aspect ratio ``width:height`` of the processing size.

    The short side grows evenly on both ends; a box pushed past an image edge is shifted back inside, and clamped
    only where the image itself is too small for the ratio.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= image_width and 0 <= y1 < y2 <= image_height):
        raise ValueError(f"box must be a non-empty rectangle inside {image_width}x{image_height}, got {box}")
    box_width, box_height = x2 - x1, y2 - y1
    # Cross-multiplied integers: the same growth A1111 computes in floats, without its rounding slips.
    if box_width * height > box_height * width:
        grow = (box_width * height - box_height * width) // width
        y1, y2 = _grow_span(y1, y2, grow, image_height)
    else:
        grow = (box_height * width - box_width * height) // height
        x1, x2 = _grow_span(x1, x2, grow, image_width)
    return x1, y1, x2, y2


def composite(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """``original`` where the mask is 0, ``generated`` where it is 255, blended linearly between (A1111's overlay)."""
    _require_same_size(original, generated, "generated")
    _require_same_size(original, mask, "mask")
    base = np.asarray(original.convert("RGB"), dtype=np.float64)
    new = np.asarray(generated.convert("RGB"), dtype=np.float64)
    weight = np.asarray(mask.convert("L"), dtype=np.float64)[..., None] / 255.0
    # base + (new - base) * w is exactly base at w = 0 and exactly new at w = 1.
    return _to_rgb_image(base + (new - base) * weight)


def paste_region(original: Image.Image, generated_crop: Image.Image, box: Box, mask: Image.Image) -> Image.Image:
    """A1111 "only masked" (``inpaint_full_res``): the crop generated for ``box`` put back into ``original``.

    ``generated_crop`` is resized (Lanczos) to the box, placed there, and blended over ``original`` through the
    full-size (blurred) ``mask``, so everything outside the mask stays exactly the original.
    """
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= original.width and 0 <= y1 < y2 <= original.height):
        raise ValueError(f"box must be a non-empty rectangle inside {original.width}x{original.height}, got {box}")
    _require_same_size(original, mask, "mask")
    resized = generated_crop.convert("RGB").resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS)
    canvas = original.convert("RGB")  # convert always returns a new image
    canvas.paste(resized, (x1, y1))
    return composite(original, canvas, mask)


def outpaint_canvas(
    image: Image.Image, left: int, right: int, top: int, bottom: int
) -> tuple[Image.Image, Image.Image]:
    """A larger canvas with ``image`` at ``(left, top)`` and its mask (``"L"``: 255 on the new area, 0 on the old).

    The new area starts from the image's edge pixels stretched outwards, blurred more the farther they are from the
    image, so the model gets the edge colours without hard streaks (A1111's outpainting scripts pre-fill similarly).
    """
    if min(left, right, top, bottom) < 0:
        raise ValueError(f"margins must be non-negative, got left={left} right={right} top={top} bottom={bottom}")
    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    stretched = np.pad(rgb, ((top, bottom), (left, right), (0, 0)), mode="edge").astype(np.float32)
    # Distance of every canvas pixel from the original rectangle (0 inside it).
    rows = np.arange(stretched.shape[0])
    cols = np.arange(stretched.shape[1])
    dy = np.maximum(np.maximum(top - rows, rows - (top + height - 1)), 0)
    dx = np.maximum(np.maximum(left - cols, cols - (left + width - 1)), 0)
    distance = np.hypot(dy[:, None], dx[None, :])
    reach = max(left, right, top, bottom, 1)
    smooth = _gaussian(stretched, reach / 4)
    weight = np.clip(distance / reach, 0.0, 1.0)[..., None]
    canvas = _to_rgb_image(stretched + (smooth - stretched) * weight)
    mask = Image.fromarray(np.where(distance > 0, 255, 0).astype(np.uint8), mode="L")
    return canvas, mask


def _grow_span(start: int, end: int, grow: int, limit: int) -> tuple[int, int]:
    """``[start, end)`` grown by ``grow`` (half each side), shifted back inside ``[0, limit)``, then clamped."""
    start -= grow // 2
    end += grow - grow // 2
    if end > limit:
        start, end = start - (end - limit), limit
    if start < 0:
        start, end = 0, end - start
    return start, min(end, limit)


def _require_same_size(reference: Image.Image, other: Image.Image, name: str) -> None:
    if other.size != reference.size:
        raise ValueError(
            f"{name} must be the image's size {reference.width}x{reference.height}, got {other.width}x{other.height}"
        )


def _to_rgb_image(array: npt.NDArray[np.floating[Any]]) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="RGB")


def _gaussian(array: FloatArray, sigma: float) -> FloatArray:
    """A Gaussian blur of an ``(H, W, C)`` array with edges extended (repeated), like Pillow's blur.

    Approximated by three box blurs per axis from cumulative sums, which cost the same at any radius; a wide blur
    (A1111's fill starts at 256) runs on a block-averaged copy and is scaled back up bilinearly, since it keeps no
    detail finer than its blocks anyway.
    """
    step = int(sigma) // _BLUR_DETAIL
    if step > 1:
        small = _gaussian(_block_mean(array, step), sigma / step)
        return _bilinear_upscale(small, step, array.shape[0], array.shape[1])
    # Three boxes of radius r have variance r(r + 1); pick the r closest to sigma².
    radius = round((math.sqrt(1 + 4 * sigma * sigma) - 1) / 2)
    blurred = array
    for axis in (0, 1) if radius else ():
        for _ in range(3):
            blurred = _box_blur(blurred, radius, axis)
    return blurred


def _box_blur(array: FloatArray, radius: int, axis: int) -> FloatArray:
    moved = np.moveaxis(array, axis, 0)
    padded = np.concatenate([np.repeat(moved[:1], radius + 1, axis=0), moved, np.repeat(moved[-1:], radius, axis=0)])
    # sums[i + 2r + 1] - sums[i] is the window of 2r + 1 pixels centred on pixel i.
    sums = np.cumsum(padded, axis=0)
    window = 2 * radius + 1
    blurred: FloatArray = np.moveaxis((sums[window:] - sums[: len(moved)]) / window, 0, axis)
    return blurred


def _block_mean(array: FloatArray, step: int) -> FloatArray:
    """The mean of each ``step`` x ``step`` block; a partial last block is completed with its edge pixels."""
    height, width = array.shape[:2]
    padded = np.pad(array, ((0, -height % step), (0, -width % step), (0, 0)), mode="edge")
    blocks = padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step, -1)
    means: FloatArray = blocks.mean(axis=(1, 3))
    return means


def _bilinear_upscale(array: FloatArray, step: int, height: int, width: int) -> FloatArray:
    """``array`` of block means scaled up ``step`` times (cropped to ``height`` x ``width``), bilinearly."""
    for axis, size in ((0, height), (1, width)):
        # Pixel i's centre in block coordinates; block k's mean sits at k.
        position = np.clip((np.arange(size) + 0.5) / step - 0.5, 0, array.shape[axis] - 1)
        lower = np.floor(position).astype(np.intp)
        upper = np.minimum(lower + 1, array.shape[axis] - 1)
        shape = [1, 1, 1]
        shape[axis] = size
        fraction = (position - lower).reshape(shape).astype(np.float32)
        array = np.take(array, lower, axis=axis) * (1 - fraction) + np.take(array, upper, axis=axis) * fraction
    return array
