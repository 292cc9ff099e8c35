"""Live previews of a running generation: the denoising loop's latents as an approximate picture, cheaply.

Small images are decoded by the model's own VAE (at 128x128 and below a decode costs about what a step does). Larger
ones go through a linear map from the latent channels to RGB, fitted once per VAE on pictures it encodes: any VAE
(SD 1.x/2.x, SDXL, the demo model's own) gets its map without a table of coefficients per family. The preview of a
256x256 latent grid (a 2048x2048 image) is 256x256 pixels, computed in a few milliseconds.

A preview shows the noisy latents of the current step (x_t), as A1111's "Approx cheap" does: blurry early, close to
the result near the end. Previews never change the image: they read the latents and hand back a picture.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["DECODE_MAX_PIXELS", "LatentPreview"]

#: Images up to this many pixels are previewed through the VAE itself; larger ones through the fitted linear map.
DECODE_MAX_PIXELS = 128 * 128
#: The pictures the linear map is fitted on: smooth random colour fields and flat colours, at this size.
_FIT_IMAGES = 24
_FIT_SIZE = 64


class LatentPreview:
    """Previews for one VAE: ``image(latents)`` → a PIL image of the first latent in the batch."""

    def __init__(self, vae: Any) -> None:
        self.vae = vae
        self._map: tuple[torch.Tensor, torch.Tensor] | None = None
        self._lock = threading.Lock()

    def image(self, latents: torch.Tensor) -> Image.Image:
        """The preview of ``latents[0]`` (the loop's scaled latents, as ``callback_on_step_end`` sees them)."""
        latent = latents[:1].detach()
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)  # diffusers' vae_scale_factor: 8 for SD
        height, width = latent.shape[-2] * factor, latent.shape[-1] * factor
        with torch.no_grad():
            if height * width <= DECODE_MAX_PIXELS:
                return self._decoded(latent)
            weight, bias = self.linear_map()
            rgb = torch.einsum("oc,bchw->bohw", weight, latent[:, : weight.shape[1]].float()) + bias.view(1, 3, 1, 1)
        return _to_image(rgb)

    def _decoded(self, latent: torch.Tensor) -> Image.Image:
        vae = self.vae
        parameter = next(vae.parameters())
        z = latent.to(device=parameter.device, dtype=parameter.dtype) / vae.config.scaling_factor
        shift = getattr(vae.config, "shift_factor", None)
        if shift:
            z = z + shift
        return _to_image(vae.decode(z).sample.float())

    def linear_map(self) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB in [-1, 1] ≈ ``weight @ latent + bias`` per latent pixel: least squares over the latents of
        :data:`_FIT_IMAGES` pictures and their 8x8-averaged colours. Fitted on first use, then kept."""
        with self._lock:
            if self._map is None:
                self._map = _fit(self.vae)
            return self._map


def _fit(vae: Any) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(_FIT_IMAGES, 3, 4, 4, generator=generator) * 2 - 1
    coarse[: _FIT_IMAGES // 3] = coarse[: _FIT_IMAGES // 3, :, :1, :1]  # a third flat colours
    pictures = torch.nn.functional.interpolate(coarse, size=(_FIT_SIZE, _FIT_SIZE), mode="bilinear")
    parameter = next(vae.parameters())
    with torch.no_grad():
        encoded = vae.encode(pictures.to(device=parameter.device, dtype=parameter.dtype)).latent_dist.mean.float()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    latents = ((encoded - shift) * vae.config.scaling_factor).cpu()
    colours = torch.nn.functional.avg_pool2d(pictures, kernel_size=_FIT_SIZE // latents.shape[-1])
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    y = colours.permute(0, 2, 3, 1).reshape(-1, 3)
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    solution = torch.linalg.lstsq(design.double(), y.double()).solution.float()  # [C + 1, 3]
    weight, bias = solution[:-1].T.contiguous(), solution[-1].contiguous()
    return weight.to(parameter.device), bias.to(parameter.device)


def _to_image(rgb: torch.Tensor) -> Image.Image:
    pixels = ((rgb[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
