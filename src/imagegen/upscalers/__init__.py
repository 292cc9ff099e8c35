"""Image upscalers by their A1111 names (PIL resamplers, Real-ESRGAN, ESRGAN-family files), latent upscale modes, and
the face-restorer listing. Importing this package loads no model and imports neither torch nor any native library."""

from __future__ import annotations

from imagegen.upscalers.latent import LATENT_UPSCALE_MODES, is_latent_upscaler, upscale_latents
from imagegen.upscalers.registry import UpscalerInfo, Upscalers
from imagegen.upscalers.restorers import FACE_RESTORERS, face_restorers

__all__ = [
    "FACE_RESTORERS",
    "LATENT_UPSCALE_MODES",
    "UpscalerInfo",
    "Upscalers",
    "face_restorers",
    "is_latent_upscaler",
    "upscale_latents",
]
