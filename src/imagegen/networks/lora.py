"""LoRA: which files are LoRAs, what they are for, and how a pipeline wears them per request.

Files are read by diffusers' ``load_lora_weights`` (peft backend), which converts kohya/A1111 (civitai) files
(``lora_unet_*``, ``lora_te*_*`` keys) and reads diffusers/peft files; :func:`inspect_lora` first reads the header
alone, refuses the LyCORIS variants diffusers cannot read (LoHa, LoKr, OFT, IA³, full diffs) with the file and format
named, and tells which model family the file is for.

:class:`LoraAdapters` keeps the adapters of one loaded pipeline: each file is loaded once (as a peft adapter named
after its content), never fused, the least recently used dropped past a bound. Every request *activates* exactly its
own set with its weights; a request without LoRA disables them all, so it computes exactly the base weights.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from imagegen.errors import InvalidRequest, ModelLoadError
from imagegen.networks.files import NetworkFile, addnet_hash, find

if TYPE_CHECKING:
    from imagegen.requests import GenerationRequest

__all__ = ["ActiveLora", "LoraAdapters", "LoraInfo", "inspect_lora", "resolve_loras"]

#: Key fragments of LyCORIS variants that diffusers' loaders do not read → the name users know them by.
_UNSUPPORTED: Final[Mapping[str, str]] = MappingProxyType(
    {
        "hada_w1": "LyCORIS LoHa",
        "lokr_w1": "LyCORIS LoKr",
        "oft_blocks": "LyCORIS OFT",
        "oft_diag": "LyCORIS OFT",
        "on_input": "LyCORIS IA3",
        ".diff": "LyCORIS full (diff) weights",
        "diff_b": "LyCORIS full (diff) weights",
    }
)
#: The UNet's cross-attention width tells the family a LoRA was trained for.
_CONTEXT_FAMILY: Final[Mapping[int, str]] = MappingProxyType(
    {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL", 1280: "SDXL refiner"}
)


@dataclass(frozen=True, kw_only=True)
class LoraInfo:
    """What a LoRA file's header says."""

    #: ``kohya`` (A1111/civitai), ``diffusers`` (peft/diffusers keys).
    format: str
    #: Cross-attention width of the UNet it was trained on, when its keys show it.
    context_dim: int | None
    #: Trained parts: ``unet``, ``text_encoder``, ``text_encoder_2``.
    parts: tuple[str, ...]
    metadata: Mapping[str, str]

    @property
    def family(self) -> str | None:
        return _CONTEXT_FAMILY.get(self.context_dim or 0)


@dataclass(frozen=True, kw_only=True)
class ActiveLora:
    """One LoRA of a request, resolved to its file."""

    file: NetworkFile
    te_weight: float
    unet_weight: float


def resolve_loras(request: GenerationRequest, *, folders: Sequence[Path], allow_pickle: bool) -> list[ActiveLora]:
    """The LoRAs of ``request`` (``<lora:...>`` tags in its prompt, then its ``loras`` field), resolved to files
    inside ``folders``; weight 0 leaves one out. :class:`InvalidRequest` for unknown names and hypernetwork tags.
    Pure file lookups: the API checks a request with it before queueing."""
    from imagegen.prompts.syntax import extract_network_tags, lora_tags

    # As A1111: tags are read from the prompt only (a negative prompt's are text); kinds it would apply but imagegen
    # cannot are refused, kinds no one applies are removed and ignored.
    _, tags = extract_network_tags(request.prompt)
    for tag in tags:
        if tag.kind == "hypernet":
            raise InvalidRequest(
                "prompt",
                f"<{tag.kind}:{tag.name}> asks for a hypernetwork, which imagegen does not support "
                "(LoRA is: <lora:name:weight>)",
            )
    loras = [tag for tag in tags if tag.kind in ("lora", "lyco")]
    wanted = [(tag.name, tag.te_weight, tag.unet_weight, "prompt") for tag in lora_tags(loras)]
    wanted += [(lora.name, lora.text_encoder, lora.unet, "loras") for lora in request.loras]
    active: list[ActiveLora] = []
    seen: set[str] = set()
    for name, te_weight, unet_weight, field in wanted:
        if name in seen:
            raise InvalidRequest(field, f"LoRA {name!r} is asked for twice; give it once, with its weight")
        seen.add(name)
        file = find(folders, name, field=field, kind="LoRA", allow_pickle=allow_pickle)
        if te_weight == 0 and unet_weight == 0:
            continue  # weight 0: the model exactly as without it
        active.append(ActiveLora(file=file, te_weight=te_weight, unet_weight=unet_weight))
    return active


def inspect_lora(path: Path) -> LoraInfo:
    """Read a LoRA file's header (no weights): its format, family and parts. :class:`InvalidRequest` (field
    ``loras``) for formats diffusers cannot load, :class:`ModelLoadError` for unreadable files."""
    if path.suffix.lower() != ".safetensors":
        # A pickle LoRA (already allowed by the operator): its keys cannot be read without loading it.
        return LoraInfo(format="pickle", context_dim=None, parts=(), metadata={})
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = dict(handle.metadata() or {})
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises untyped errors for corrupt headers
        raise ModelLoadError(f"LoRA {path.name} is not a readable .safetensors file: {exc}") from None
    for fragment, variant in _UNSUPPORTED.items():
        if any(fragment in key for key in shapes):
            raise InvalidRequest(
                "loras",
                f"LoRA {path.name} is in the {variant} format, which imagegen (diffusers) cannot load; "
                "use a plain LoRA/LoCon file (kohya lora_up/lora_down or diffusers/peft keys)",
            )
    kohya = any(key.startswith(("lora_unet_", "lora_te")) for key in shapes)
    parts: list[str] = []
    if any(key.startswith(("lora_unet_", "unet.", "base_model.model.")) or "unet" in key[:12] for key in shapes):
        parts.append("unet")
    if any(key.startswith(("lora_te_", "lora_te1_", "text_encoder.")) for key in shapes):
        parts.append("text_encoder")
    if any(key.startswith(("lora_te2_", "text_encoder_2.")) for key in shapes):
        parts.append("text_encoder_2")
    if not parts:
        raise InvalidRequest(
            "loras", f"{path.name} holds no LoRA weights imagegen recognises (no lora_unet_*, lora_te*_, unet.* keys)"
        )
    return LoraInfo(
        format="kohya" if kohya else "diffusers",
        context_dim=_context_dim(shapes),
        parts=tuple(parts),
        metadata=metadata,
    )


def _context_dim(shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """The width of what the cross-attention keys read: the 'down' (A) matrix of an ``attn2`` ``to_k`` LoRA."""
    for key, shape in shapes.items():
        lowered = key.lower()
        down = "lora_down" in lowered or "lora_a" in lowered
        if "attn2" in lowered and "to_k" in lowered and down and len(shape) == 2:
            return int(shape[1])
    return None


class LoraAdapters:
    """The LoRA adapters loaded into one pipeline (see the module docstring). Callers hold the engine's device lock."""

    def __init__(self, pipeline: Any, *, context_dim: int | None, family: str, max_loaded: int = 8) -> None:
        self._pipeline = pipeline
        self._context_dim = context_dim
        self._family = family
        self._max_loaded = max_loaded
        #: adapter name → file key, least recently used first.
        self._loaded: OrderedDict[str, str] = OrderedDict()
        #: file key → A1111's hash of the file (SHA-256 after the header), computed once per file version.
        self._hashes: dict[str, str] = {}
        self._lock = threading.Lock()
        #: (adapter name, text-encoder weight) of the LoRAs active now: what the text encoders compute depends on it.
        self.text_encoder_state: tuple[tuple[str, float], ...] = ()

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def activate(self, loras: Sequence[ActiveLora]) -> list[str]:
        """Make exactly ``loras`` active with their weights (none: every adapter off); their A1111 short hashes
        (12 hex digits, as ``Lora hashes`` shows them), in order."""
        with self._lock:
            names = [self._ensure(lora.file) for lora in loras]
            self._set(names, loras)
            # Adapter names come from the files' contents: with the weights, they say what the text encoders are.
            self.text_encoder_state = tuple((name, lora.te_weight) for name, lora in zip(names, loras, strict=True))
            return [self._hashes[self._loaded[name]][:12] for name in names]

    # Steps ------------------------------------------------------------------------------------------------------

    def _ensure(self, file: NetworkFile) -> str:
        stat = file.path.stat()
        key = f"{file.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        for name, loaded_key in self._loaded.items():
            if loaded_key == key:
                self._loaded.move_to_end(name)
                return name
        if key not in self._hashes:
            self._hashes[key] = addnet_hash(file.path)
        info = inspect_lora(file.path)
        if info.context_dim is not None and self._context_dim is not None and info.context_dim != self._context_dim:
            raise InvalidRequest(
                "loras",
                f"LoRA {file.name} was trained for {info.family or f'a {info.context_dim}-wide model'}, "
                f"but the model is {self._family}: it cannot be applied",
            )
        name = f"lora_{self._hashes[key][:16]}"
        if name in self._loaded:  # the same content under another file name or an older mtime
            self._loaded[name] = key
            self._loaded.move_to_end(name)
            return name
        self._evict(keep=self._max_loaded - 1)
        try:
            with _quiet_loading():
                self._pipeline.load_lora_weights(str(file.path), adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as exc:
            self._drop(name)
            raise InvalidRequest(
                "loras", f"LoRA {file.name} could not be applied to this {self._family} model: {str(exc)[:300]}"
            ) from None
        self._loaded[name] = key
        return name

    def _set(self, names: Sequence[str], loras: Sequence[ActiveLora]) -> None:
        from diffusers.loaders.lora_base import (
            disable_lora_for_text_encoder,
            enable_lora_for_text_encoder,
            set_adapters_for_text_encoder,
        )

        if not self._loaded:
            return
        present: Mapping[str, list[str]] = self._pipeline.get_list_adapters()
        for component, adapters in present.items():
            model = getattr(self._pipeline, component, None)
            if model is None:
                continue
            chosen = [(n, lora) for n, lora in zip(names, loras, strict=False) if n in adapters]
            weights = [lora.unet_weight if component == "unet" else lora.te_weight for _, lora in chosen]
            unet_like = not hasattr(model, "get_input_embeddings")
            if not chosen:
                if unet_like:
                    model.disable_lora()
                else:
                    disable_lora_for_text_encoder(model)
                continue
            if unet_like:
                model.enable_lora()
                model.set_adapters([n for n, _ in chosen], weights)
            else:
                enable_lora_for_text_encoder(model)
                set_adapters_for_text_encoder([n for n, _ in chosen], model, weights)

    def _evict(self, *, keep: int) -> None:
        while len(self._loaded) > max(keep, 0):
            oldest = next(iter(self._loaded))
            self._drop(oldest)

    def _drop(self, name: str) -> None:
        key = self._loaded.pop(name, None)
        if key is not None and key not in self._loaded.values():
            self._hashes.pop(key, None)
        with suppress(ValueError, KeyError):  # never fully loaded
            self._pipeline.delete_adapters([name])


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence what loading a second adapter prints on every load: peft's "multiple adapters" warning (that is the
    point of adapters) and transformers' load report listing the *other* adapters' keys as missing from this file."""
    from transformers.utils import logging as transformers_logging

    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            yield
    finally:
        transformers_logging.set_verbosity(level)
