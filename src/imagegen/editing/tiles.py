"""Overlapping tiles for tiled img2img (A1111's "SD upscale": ``scripts/sd_upscale.py``, ``images.split_grid`` and
``images.combine_grid``): cut a large image into model-sized tiles, transform each, and stitch them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["Tile", "TileGrid", "combine_tiles", "split_tiles"]


@dataclass(frozen=True, kw_only=True)
class Tile:
    """One tile: its top-left corner in the full image, its row and column in the grid, and its pixels."""

    x: int
    y: int
    row: int
    col: int
    image: Image.Image


@dataclass(frozen=True, kw_only=True)
class TileGrid:
    """An image of ``width`` x ``height`` cut into ``tile_w`` x ``tile_h`` tiles that overlap by at least ``overlap``.

    ``tiles`` are row-major. Tiles are spread evenly, the last ones flush with the right and bottom edges, so
    neighbours may overlap by more than ``overlap`` when the size does not divide evenly.
    """

    width: int
    height: int
    tile_w: int
    tile_h: int
    overlap: int
    tiles: tuple[Tile, ...]

    @property
    def rows(self) -> int:
        return self.tiles[-1].row + 1

    @property
    def cols(self) -> int:
        return self.tiles[-1].col + 1


def split_tiles(image: Image.Image, tile_w: int, tile_h: int, overlap: int) -> TileGrid:
    """A1111 ``split_grid``: ``image`` cut into overlapping ``tile_w`` x ``tile_h`` tiles covering all of it."""
    if tile_w <= 0 or tile_h <= 0:
        raise ValueError(f"tile size must be positive, got {tile_w}x{tile_h}")
    if not 0 <= overlap < min(tile_w, tile_h):
        raise ValueError(f"overlap must be from 0 to less than the tile size {tile_w}x{tile_h}, got {overlap}")
    if image.width < tile_w or image.height < tile_h:
        raise ValueError(f"image must be at least one tile ({tile_w}x{tile_h}), got {image.width}x{image.height}")
    rgb = image.convert("RGB")
    tiles = tuple(
        Tile(x=x, y=y, row=row, col=col, image=rgb.crop((x, y, x + tile_w, y + tile_h)))
        for row, y in enumerate(_tile_starts(image.height, tile_h, overlap))
        for col, x in enumerate(_tile_starts(image.width, tile_w, overlap))
    )
    return TileGrid(width=image.width, height=image.height, tile_w=tile_w, tile_h=tile_h, overlap=overlap, tiles=tiles)


def combine_tiles(grid: TileGrid, images: Sequence[Image.Image]) -> Image.Image:
    """A1111 ``combine_grid``: ``images`` (one per tile, in order) stitched into the grid's full size. RGB.

    Each tile overwrites its left (upper) neighbour except over its first ``overlap`` columns (rows), where the two
    blend linearly, the new tile's weight rising from 0 to ``(overlap - 1) / overlap``. Rows are stitched first,
    then stacked the same way.
    """
    if len(images) != len(grid.tiles):
        raise ValueError(f"images must have one image per tile ({len(grid.tiles)}), got {len(images)}")
    for index, tile_image in enumerate(images):
        if tile_image.size != (grid.tile_w, grid.tile_h):
            raise ValueError(
                f"images[{index}] must be the tile size {grid.tile_w}x{grid.tile_h}, "
                f"got {tile_image.width}x{tile_image.height}"
            )
    ramp = np.arange(grid.overlap, dtype=np.float64) / max(grid.overlap, 1)
    combined = np.zeros((grid.height, grid.width, 3), dtype=np.float64)
    for row in range(grid.rows):
        row_tiles = [(tile, images[i]) for i, tile in enumerate(grid.tiles) if tile.row == row]
        strip = np.zeros((grid.tile_h, grid.width, 3), dtype=np.float64)
        for tile, tile_image in row_tiles:
            pixels = np.asarray(tile_image.convert("RGB"), dtype=np.float64)
            _place(strip, pixels, tile.x, 0 if tile.col == 0 else grid.overlap, ramp[None, :, None], axis=1)
        _place(combined, strip, row_tiles[0][0].y, 0 if row == 0 else grid.overlap, ramp[:, None, None], axis=0)
    return Image.fromarray(np.clip(np.rint(combined), 0, 255).astype(np.uint8), mode="RGB")


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one axis start: the fewest that overlap by ``overlap``, spread evenly, last one flush."""
    count = -(-(size - overlap) // (tile - overlap))
    if count == 1:
        return [0]
    # Integer arithmetic for A1111's int(i * (size - tile) / (count - 1)).
    return [min(i * (size - tile) // (count - 1), size - tile) for i in range(count)]


def _place(
    target: npt.NDArray[np.float64],
    pixels: npt.NDArray[np.float64],
    start: int,
    blend: int,
    ramp: npt.NDArray[np.float64],
    *,
    axis: int,
) -> None:
    """Write ``pixels`` into ``target`` from ``start`` on ``axis``, blending the first ``blend`` lines by ``ramp``."""
    length = pixels.shape[axis]
    blended = np.take(pixels, np.arange(blend), axis=axis)
    rest = np.take(pixels, np.arange(blend, length), axis=axis)
    head = [slice(None)] * 3
    head[axis] = slice(start, start + blend)
    tail = [slice(None)] * 3
    tail[axis] = slice(start + blend, start + length)
    if blend:
        target[tuple(head)] += (blended - target[tuple(head)]) * ramp
    target[tuple(tail)] = rest
