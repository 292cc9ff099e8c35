"""Textual-inversion embeddings, A1111 style: a file in ``embeddings/`` whose name, written in a prompt, stands for
its vectors.

Formats read (as A1111 reads them): A1111's ``.pt`` (``string_to_param['*']``) and ``.safetensors`` (``emb_params``),
diffusers' one-key files (``{token: vectors}``), and SDXL files with ``clip_l`` and ``clip_g``. Pickle formats
(``.pt``, ``.bin``) are read only when the operator allows pickle. An embedding whose width does not fit the model's
text encoder is *skipped* for that model, with the reason, as A1111's ``/sdapi/v1/embeddings`` reports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from imagegen.networks.files import NetworkFile

if TYPE_CHECKING:
    import torch

__all__ = ["Embedding", "encoder_widths", "load_embedding"]

#: An embedding longer than a chunk could never be placed whole in A1111's 75-token chunks.
MAX_VECTORS: Final[int] = 75
#: Text-encoder widths per family: SD 1.x (CLIP-L), SD 2.x (OpenCLIP-H), SDXL (CLIP-L + OpenCLIP-bigG).
FAMILY_WIDTHS: Final[Mapping[str, tuple[int, ...]]] = MappingProxyType(
    {"sd1": (768,), "sd2": (1024,), "sdxl": (768, 1280), "sdxl-refiner": (1280,)}
)


@dataclass(frozen=True, kw_only=True)
class Embedding:
    """One embedding's vectors: ``single`` [n, width] (SD 1.x/2.x files) or ``per_encoder`` (SDXL: clip_l, clip_g)."""

    name: str
    path: Path
    single: torch.Tensor | None = None
    per_encoder: Mapping[str, torch.Tensor] = field(default_factory=dict)
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None

    @property
    def vectors(self) -> int:
        tensor = self.single if self.single is not None else next(iter(self.per_encoder.values()))
        return int(tensor.shape[0])

    @property
    def shape(self) -> int:
        """A1111's ``shape``: the width of the (first) vectors."""
        tensor = self.single if self.single is not None else next(iter(self.per_encoder.values()))
        return int(tensor.shape[-1])

    def vectors_for(self, key: str | None, width: int) -> torch.Tensor | None:
        """The vectors for one text encoder (``clip_l``/``clip_g`` for SDXL's, ``None`` for SD 1.x/2.x's), or
        ``None`` when this embedding has none of that width."""
        tensor = self.per_encoder.get(key or "") if self.per_encoder else self.single
        if tensor is None or int(tensor.shape[-1]) != width:
            return None
        return tensor

    def fits(self, widths: Mapping[str, int]) -> str | None:
        """``None`` when usable with text encoders of ``widths`` (:func:`encoder_widths`), else why not (A1111's
        "skipped" reason)."""
        if self.per_encoder:
            if "" in widths:
                return "an SDXL embedding (clip_l/clip_g) does not fit an SD 1.x/2.x model"
            for key, width in widths.items():
                tensor = self.per_encoder.get(key)
                if tensor is None or int(tensor.shape[-1]) != width:
                    return f"its {key} vectors do not fit the model's {key} encoder (width {width})"
            return None
        if "" not in widths:
            return "an SD 1.x/2.x embedding does not fit an SDXL model (it needs clip_l and clip_g vectors)"
        if self.shape != widths[""]:
            return f"vectors of width {self.shape} do not fit the model's text encoder (width {widths['']})"
        return None


def encoder_widths(family: str, folder: Path | None = None) -> dict[str, int]:
    """The text-encoder widths an embedding must match, by its key (``""`` for SD 1.x/2.x's single encoder): read
    from a diffusers folder's configs when there is one, else the family's standard widths."""
    keys = {"sd1": ("",), "sd2": ("",), "sdxl": ("clip_l", "clip_g"), "sdxl-refiner": ("clip_g",)}.get(family, ("",))
    nominal = dict(zip(keys, FAMILY_WIDTHS.get(family, (768,)), strict=False))
    if folder is None or not folder.is_dir():
        return nominal
    import json

    components = {"": "text_encoder", "clip_l": "text_encoder", "clip_g": "text_encoder_2"}
    widths = {}
    for key in keys:
        try:
            config = json.loads((folder / components[key] / "config.json").read_text(encoding="utf-8"))
            widths[key] = int(config["hidden_size"])
        except (OSError, ValueError, KeyError, TypeError):
            widths[key] = nominal[key]
    return widths


def load_embedding(file: NetworkFile, *, allow_pickle: bool) -> Embedding:
    """Read one embedding file; ``ValueError`` with the reason when it is not one."""
    import torch

    if file.pickle:
        if not allow_pickle:
            raise ValueError("a pickle file (allowed only with --allow-pickle)")
        data: Any = torch.load(file.path, map_location="cpu", weights_only=True)
    else:
        from safetensors.torch import load_file

        try:
            data = load_file(str(file.path), device="cpu")
        except Exception as exc:  # safetensors raises its own untyped errors for corrupt files
            raise ValueError(f"not a readable .safetensors file: {exc}") from None
    return _from_data(file, data)


def _from_data(file: NetworkFile, data: Any) -> Embedding:
    import torch

    if not isinstance(data, Mapping):
        raise ValueError("not a mapping of tensors")
    extra = {
        "step": data.get("step") if isinstance(data.get("step"), int) else None,
        "sd_checkpoint": data.get("sd_checkpoint") if isinstance(data.get("sd_checkpoint"), str) else None,
        "sd_checkpoint_name": data.get("sd_checkpoint_name")
        if isinstance(data.get("sd_checkpoint_name"), str)
        else None,
    }
    params = data.get("string_to_param")
    if isinstance(params, Mapping) and params:
        return _single(file, next(iter(params.values())), extra)
    if isinstance(data.get("emb_params"), torch.Tensor):
        return _single(file, data["emb_params"], extra)
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if "clip_l" in tensors or "clip_g" in tensors:
        per = {k: _matrix(v) for k, v in tensors.items() if k in ("clip_l", "clip_g")}
        counts = {int(v.shape[0]) for v in per.values()}
        if len(counts) != 1:
            raise ValueError(f"clip_l and clip_g hold different vector counts {sorted(counts)}")
        _check_count(next(iter(counts)))
        return Embedding(name=file.name, path=file.path, per_encoder=per, **extra)
    if len(tensors) == 1:
        return _single(file, next(iter(tensors.values())), extra)
    raise ValueError(f"no embedding vectors found (keys: {', '.join(list(data)[:8])})")


def _single(file: NetworkFile, tensor: Any, extra: Mapping[str, Any]) -> Embedding:
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise ValueError("the embedding entry is not a tensor")
    matrix = _matrix(tensor)
    _check_count(int(matrix.shape[0]))
    return Embedding(name=file.name, path=file.path, single=matrix, **extra)


def _matrix(tensor: torch.Tensor) -> torch.Tensor:
    import torch

    matrix = tensor.detach().to(torch.float32)
    if matrix.ndim == 1:
        matrix = matrix.unsqueeze(0)
    if matrix.ndim != 2 or matrix.shape[0] < 1:
        raise ValueError(f"vectors must be [count, width], got shape {list(tensor.shape)}")
    return matrix


def _check_count(count: int) -> None:
    if count > MAX_VECTORS:
        raise ValueError(f"{count} vectors: more than a 75-token chunk can hold")
