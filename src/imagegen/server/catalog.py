"""The models a server serves: the built-in demo models, the operator's ``--model`` references and the models folder.

Requests name models only inside this catalog, by reference, A1111 title (``name [hash]``), hash or file name: never a
path, so ``..``, absolute paths, URLs and NUL in a request cannot reach the file system.
"""

from __future__ import annotations

import logging
from pathlib import Path

from imagegen.errors import ImagegenError, InvalidRequest
from imagegen.loading import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    Family,
    ModelInfo,
    builtin_models,
    default_models_dir,
    resolve,
)
from imagegen.server.settings import ServerSettings

logger = logging.getLogger("imagegen.server")

__all__ = ["ModelCatalog"]


class ModelCatalog:
    """The served models and the default one; :meth:`refresh` rebuilds it from the settings and the disk."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._models: dict[str, ModelInfo] = {}
        self._default: ModelInfo | None = None

    def refresh(self) -> list[ModelInfo]:
        """Rebuild: the built-in demo models, ``settings.models`` and the models directory; returns :meth:`models`.

        An operator's ``--model`` that does not resolve raises (a configuration error); a broken file in the models
        folder is skipped with a warning."""
        catalog: dict[str, ModelInfo] = {}
        for name, folder in builtin_models().items():
            if (folder / "model_index.json").is_file():
                catalog[name] = resolve(name)
        for ref in self.settings.models:
            info = resolve(ref, models_dir=self.settings.models_dir, allow_pickle=self.settings.engine.allow_pickle)
            catalog.setdefault(info.ref, info)
            catalog.setdefault(ref, info)
        catalog.update({k: v for k, v in self._scan_models_dir().items() if k not in catalog})
        default_ref = self.settings.default_model or (self.settings.models[0] if self.settings.models else None)
        if default_ref is None and DEFAULT_MODEL in catalog:
            default_ref = DEFAULT_MODEL
        if default_ref is None:
            # A refiner only refines: it cannot be the model of a plain text-to-image request.
            bases = [ref for ref, info in catalog.items() if info.family is not Family.SDXL_REFINER]
            default_ref = bases[0] if bases else None
        if default_ref is not None and default_ref not in catalog:
            raise InvalidRequest("default_model", f"{default_ref!r} is not one of the served models")
        self._models = catalog
        self._default = catalog[default_ref] if default_ref is not None else None
        return self.models()

    def _scan_models_dir(self) -> dict[str, ModelInfo]:
        folder = self.settings.models_dir or default_models_dir()
        if not folder.is_dir():
            return {}
        root = folder.resolve()
        found: dict[str, ModelInfo] = {}
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or entry.suffix == ".config" or entry.name in BUILTIN_MODELS:
                continue
            # A symlink pointing out of the models folder is not served: the folder is the operator's boundary.
            if not entry.resolve().is_relative_to(root):
                logger.warning("skipping %s: it points outside the models directory", entry.name)
                continue
            is_model = (entry / "model_index.json").is_file() or entry.suffix.lower() == ".safetensors"
            if not is_model:
                continue
            try:
                info = resolve(entry.name, models_dir=folder)
            except ImagegenError as exc:
                logger.warning("skipping %s: %s", entry.name, exc)
                continue
            found[info.ref] = info
        return found

    def models(self) -> list[ModelInfo]:
        """Each served model once, the default first."""
        unique = {id(info): info for info in self._models.values()}
        return sorted(unique.values(), key=lambda m: (m is not self._default, m.ref))

    @property
    def default_ref(self) -> str | None:
        """The default model's reference, or None when nothing is served."""
        return self._default.ref if self._default is not None else None

    def default(self) -> ModelInfo:
        """The model of requests that name none."""
        if self._default is None:
            raise InvalidRequest(
                "model", "this server has no models: start it with --model REF or put models in --models-dir"
            )
        return self._default

    def resolve(self, ref: str | None) -> ModelInfo:
        """A served model by reference, A1111 title (``name [hash]``) or name without extension; ``None``/"" is the
        default model. Raises :class:`InvalidRequest` (field ``model``) listing the served models."""
        if ref is None or ref == "":
            return self.default()
        if not isinstance(ref, str):
            raise InvalidRequest("model", f"must be a string, got {type(ref).__name__}")
        for info in self._models.values():
            if ref in (info.ref, info.title) or Path(info.ref).stem == ref:
                return info
        if ref in self._models:
            return self._models[ref]
        names = ", ".join(m.ref for m in self.models()) or "none"
        raise InvalidRequest("model", f"unknown model {ref[:200]!r}; this server serves: {names} (GET /v1/models)")

    def find(self, text: str, *, field: str) -> ModelInfo:
        """A served model named the way A1111 and OpenAI clients name checkpoints: a title (``name [hash]``), a
        reference, a hash, or a file name with or without its suffix. Errors name ``field``."""
        wanted = text.strip()
        if not wanted:
            raise InvalidRequest(field, "must name a model; see GET /sdapi/v1/sd-models or /v1/models")
        for info in self.models():
            names = {info.title, info.ref, info.path.name, info.path.stem}
            if info.hash:
                names.add(info.hash)
            if wanted in names:
                return info
        # A title of a model whose hash changed, e.g. "name [abcdef0123]": retry with the bare name.
        name, _, rest = wanted.rpartition(" [")
        bare = name if name and rest.endswith("]") else wanted
        try:
            return self.resolve(bare)
        except InvalidRequest as exc:
            raise InvalidRequest(field, exc.message) from None
