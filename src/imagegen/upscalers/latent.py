"""A1111's latent upscalers ("Latent", "Latent (bicubic)", ...): resize the latents instead of the decoded image."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["LATENT_UPSCALE_MODES", "is_latent_upscaler", "upscale_latents"]

#: A1111 name -> (``torch.nn.functional.interpolate`` mode, antialias), as in A1111's ``shared.latent_upscale_modes``.
LATENT_UPSCALE_MODES: Mapping[str, tuple[str, bool]] = MappingProxyType(
    {
        "Latent": ("bilinear", False),
        "Latent (antialiased)": ("bilinear", True),
        "Latent (bicubic)": ("bicubic", False),
        "Latent (bicubic antialiased)": ("bicubic", True),
        "Latent (nearest)": ("nearest", False),
        "Latent (nearest-exact)": ("nearest-exact", False),
    }
)


def is_latent_upscaler(name: str) -> bool:
    """Whether ``name`` is one of A1111's latent upscale modes (an image upscaler otherwise, or unknown)."""
    return name in LATENT_UPSCALE_MODES


def upscale_latents(latents: torch.Tensor, mode: str, *, width: int, height: int) -> torch.Tensor:
    """``latents`` (N, C, H, W) resized to ``height`` x ``width`` latent pixels; ``KeyError`` for an unknown mode."""
    import torch.nn.functional as F

    interpolation, antialias = LATENT_UPSCALE_MODES[mode]
    return F.interpolate(latents, size=(height, width), mode=interpolation, antialias=antialias)
