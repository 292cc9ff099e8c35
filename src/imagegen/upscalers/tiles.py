"""Run an image model tile by tile, so each call is small and the caller sees progress and can cancel in between.

Each tile is cut out with ``context`` extra pixels on every side (where the image has them), upscaled, and the
upscaled context is cropped away again before pasting: the model sees what lies around a tile, so the seams match an
untiled run (Real-ESRGAN's receptive field is wider than any context, hence "nearly": max abs diff of a few levels).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

from PIL import Image

from imagegen.errors import ModelLoadError

__all__ = ["Box", "tile_grid", "upscale_tiled"]

#: (left, top, right, bottom), right and bottom exclusive, as PIL's ``crop`` takes it.
Box = tuple[int, int, int, int]


def tile_grid(width: int, height: int, tile_size: int) -> list[Box]:
    """Boxes of at most ``tile_size`` pixels a side that cover the image, rows first, of near-equal sizes."""
    columns = _edges(width, tile_size)
    rows = _edges(height, tile_size)
    return [(x0, y0, x1, y1) for y0, y1 in pairwise(rows) for x0, x1 in pairwise(columns)]


def _edges(length: int, tile_size: int) -> list[int]:
    # Equal shares rather than full tiles plus a sliver: a 200 px side gives 100 + 100, not 192 + 8.
    count = max(1, math.ceil(length / tile_size))
    return [round(i * length / count) for i in range(count + 1)]


def upscale_tiled(
    image: Image.Image,
    run: Callable[[Image.Image], Image.Image],
    *,
    scale: int,
    tile_size: int,
    context: int,
    before_tile: Callable[[], None],
    after_tile: Callable[[], None],
) -> Image.Image:
    """``image`` (RGB) upscaled by ``run`` (one tile in, the tile ``scale`` times larger out), one tile at a time.

    ``before_tile`` runs before each tile (raise there to cancel), ``after_tile`` after each (progress).
    """
    width, height = image.size
    out = Image.new("RGB", (width * scale, height * scale))
    for x0, y0, x1, y1 in tile_grid(width, height, tile_size):
        before_tile()
        cx0, cy0 = max(0, x0 - context), max(0, y0 - context)
        cx1, cy1 = min(width, x1 + context), min(height, y1 + context)
        upscaled = run(image.crop((cx0, cy0, cx1, cy1)))
        expected = ((cx1 - cx0) * scale, (cy1 - cy0) * scale)
        if upscaled.size != expected:
            raise ModelLoadError(
                f"the upscaler model returned a {upscaled.width}x{upscaled.height} tile for a "
                f"{cx1 - cx0}x{cy1 - cy0} input; expected {expected[0]}x{expected[1]} (scale {scale})"
            )
        inner = ((x0 - cx0) * scale, (y0 - cy0) * scale, (x1 - cx0) * scale, (y1 - cy0) * scale)
        out.paste(upscaled.crop(inner), (x0 * scale, y0 * scale))
        after_tile()
    return out
