"""Seamless tiling (A1111's "Tiling" checkbox): images whose right edge continues into the left, bottom into top.

Every padded convolution of the models pads circularly for the duration of one request, so the network sees the
picture as a torus. :func:`seam_score` measures how well a result tiles.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

__all__ = ["seam_score", "seamless"]

_PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


@contextmanager
def seamless(*modules: torch.nn.Module) -> Iterator[None]:
    """Make every padded ``Conv2d`` in ``modules`` pad circularly while inside; restore each one's mode on exit.

    Subclasses count (diffusers' ``LoRACompatibleConv``, the base layers peft wraps), and a module reached twice (a
    VAE shared by two pipelines) is changed and restored once. Restored on exceptions too.
    """
    import torch

    previous: dict[int, tuple[torch.nn.Conv2d, _PaddingMode]] = {}
    try:
        for module in modules:
            for layer in module.modules():
                if not isinstance(layer, torch.nn.Conv2d) or id(layer) in previous:
                    continue
                # torch pads a non-"zeros" mode itself, with the amounts it computed at init (also for "same").
                if any(layer._reversed_padding_repeated_twice):
                    previous[id(layer)] = (layer, layer.padding_mode)
                    layer.padding_mode = "circular"
        yield
    finally:
        for layer, padding_mode in previous.values():
            layer.padding_mode = padding_mode


def seam_score(image: Image.Image) -> float:
    """How visible the wrap-around seams are: ~1 for a seamless tile, much more for one that does not tile.

    The mean absolute difference across the seams (last column to first, last row to first) divided by the mean
    absolute difference between neighbouring columns and rows inside the image. Each axis weighs the same whatever
    the image's aspect ratio.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    if pixels.shape[0] < 2 or pixels.shape[1] < 2:
        raise ValueError(f"image must be at least 2x2 to have seams, got {image.width}x{image.height}")
    seam_mean = float(np.abs(pixels[:, -1] - pixels[:, 0]).mean() + np.abs(pixels[-1] - pixels[0]).mean()) / 2
    interior_mean = float(np.abs(np.diff(pixels, axis=1)).mean() + np.abs(np.diff(pixels, axis=0)).mean()) / 2
    if interior_mean == 0.0:
        # A flat image: seamless if its seams are flat too.
        return 1.0 if seam_mean == 0.0 else float("inf")
    return seam_mean / interior_mean
