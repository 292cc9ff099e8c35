"""How an engine runs: device, precision, memory savers, where named models live. One frozen value that the CLI
(``generate``, ``demo``, ``serve``), the server's workers and library callers build an
:class:`~imagegen.engine.Engine` from, so every front door offers the same knobs. Importing it loads no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from imagegen.errors import InvalidRequest

if TYPE_CHECKING:
    from imagegen.engine import Engine
    from imagegen.requests import Limits

__all__ = ["EngineOptions", "Offload"]


class Offload(str, Enum):
    """Where the weights wait between uses (accelerate's CPU offload), trading speed for device memory."""

    NONE = "none"
    #: Whole models move to the device when used (a small slowdown, large saving).
    MODEL = "model"
    #: Layer by layer (slow, smallest footprint).
    SEQUENTIAL = "sequential"

    @classmethod
    def parse(cls, value: object) -> Offload:
        """``value`` (an Offload or its name) as an Offload; :class:`InvalidRequest` naming ``offload`` otherwise."""
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(o.value for o in cls)
            raise InvalidRequest("offload", f"must be one of {valid}, got {value!r}") from None


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    """Everything about *how* to run that is not part of a request. ``None`` device/dtype mean ``auto``."""

    device: str | None = None
    dtype: str | None = None
    #: Folder of models referenced by name (default ``$IMAGEGEN_MODELS_DIR``).
    models_dir: Path | None = None
    #: Load pickle checkpoints (``.ckpt``, ``.bin``), which can run code.
    allow_pickle: bool = False
    offload: Offload = Offload.NONE
    #: Decode a batch one image at a time.
    vae_slicing: bool = False
    #: Decode large images in tiles.
    vae_tiling: bool = False
    #: Pipelines kept loaded (least recently used evicted).
    max_loaded: int = 2
    #: CPU threads for torch's operators (None: torch's default, every core). A server's CPU workers leave the API
    #: process a core (imagegen.server.jobs.worker.worker_threads), so polling clients cannot starve generation.
    threads: int | None = None
    #: Extra LoRA folders, searched before ``<models_dir>/Lora`` (A1111's ``--lora-dir``).
    lora_dirs: tuple[Path, ...] = ()
    #: Extra embedding folders, searched before ``<models_dir>/embeddings``.
    embeddings_dirs: tuple[Path, ...] = ()
    #: A1111-format styles file (default ``<models_dir>/styles.csv``).
    styles_file: Path | None = None
    #: LoRA adapters kept loaded per model (least recently used dropped).
    max_loras: int = 8
    #: ``torch.compile`` each loaded UNet (fixed shapes; compiled and warmed up at load, so a load takes minutes on a
    #: CPU). Measured on this project's 2-core CPU: 12 % off an SD 1.5 UNet call for a 2-minute compile; made for GPUs.
    compile: bool = False

    def __post_init__(self) -> None:
        # Library callers may pass the name ("model"); store the enum.
        object.__setattr__(self, "offload", Offload.parse(self.offload))
        if self.models_dir is not None:
            object.__setattr__(self, "models_dir", Path(self.models_dir))
        _check_count("max_loaded", self.max_loaded)
        _check_count("max_loras", self.max_loras)
        object.__setattr__(self, "lora_dirs", tuple(Path(p) for p in self.lora_dirs))
        object.__setattr__(self, "embeddings_dirs", tuple(Path(p) for p in self.embeddings_dirs))
        if self.styles_file is not None:
            object.__setattr__(self, "styles_file", Path(self.styles_file))
        if self.threads is not None:
            _check_count("threads", self.threads)

    def models_root(self) -> Path:
        """The models directory in effect (``models_dir``, else ``$IMAGEGEN_MODELS_DIR``'s default)."""
        from imagegen.loading import default_models_dir

        return self.models_dir or default_models_dir()

    def lora_folders(self) -> tuple[Path, ...]:
        """Where LoRA names resolve: ``lora_dirs``, ``<models dir>/Lora``, then the LoRAs shipped with the demo."""
        return (*self.lora_dirs, self.models_root() / "Lora", _builtin_networks("loras"))

    def embedding_folders(self) -> tuple[Path, ...]:
        """Where embedding names resolve: ``embeddings_dirs``, ``<models dir>/embeddings``, the shipped ones."""
        return (*self.embeddings_dirs, self.models_root() / "embeddings", _builtin_networks("embeddings"))

    def upscaler_folders(self) -> tuple[Path, ...]:
        """Where ESRGAN-family upscaler files are found (A1111's ``models/ESRGAN`` and ``models/RealESRGAN``)."""
        root = self.models_root()
        return (root / "ESRGAN", root / "RealESRGAN")

    def styles_path(self) -> Path:
        """The styles file: ``styles_file``, else ``<models dir>/styles.csv``."""
        return self.styles_file or self.models_root() / "styles.csv"

    def engine(self, *, default_model: str | None = None, limits: Limits | None = None) -> Engine:
        """An :class:`~imagegen.engine.Engine` with these options (imports torch)."""
        from imagegen.engine import Engine

        return Engine(
            default_model=default_model,
            models_dir=self.models_dir,
            device=self.device,
            dtype=self.dtype,
            limits=limits,
            max_loaded=self.max_loaded,
            allow_pickle=self.allow_pickle,
            offload=self.offload.value,
            vae_slicing=self.vae_slicing,
            vae_tiling=self.vae_tiling,
            threads=self.threads,
            lora_dirs=self.lora_dirs,
            embeddings_dirs=self.embeddings_dirs,
            styles_file=self.styles_file,
            max_loras=self.max_loras,
            compile=self.compile,
        )


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(name, f"must be an integer of at least 1, got {value!r}")


def _builtin_networks(kind: str) -> Path:
    """The LoRAs / embeddings shipped with the demo model (``kind``: ``loras`` or ``embeddings``)."""
    return Path(__file__).parent / "demo" / "weights" / kind
