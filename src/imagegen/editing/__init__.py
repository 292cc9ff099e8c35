"""Pure image helpers for editing requests: inpainting and outpainting masks (masks), seamless tiling (tiling) and
tiled img2img, A1111's "SD upscale" (tiles). Importing the package loads no torch.
"""
