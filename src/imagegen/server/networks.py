"""The extra networks and styles a server offers (LoRAs, textual-inversion embeddings, prompt styles), listed from the
same folders the workers' engines read (:class:`~imagegen.options.EngineOptions`), for every dialect's list routes.

Listing reads file headers only (LoRAs) or the small embedding files; nothing is cached, so a file dropped into a
folder is listed (and usable) at once, which is what A1111's ``refresh-loras``/``refresh-embeddings`` ask for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imagegen.errors import ImagegenError
from imagegen.loading import ModelInfo
from imagegen.networks.embeddings import Embedding, encoder_widths, load_embedding
from imagegen.networks.files import list_files
from imagegen.networks.lora import inspect_lora
from imagegen.options import EngineOptions
from imagegen.prompts.styles import Style, read_styles

__all__ = ["EmbeddingEntry", "LoraEntry", "list_embeddings", "list_loras", "list_styles"]


@dataclass(frozen=True, kw_only=True)
class LoraEntry:
    name: str
    path: str
    size: int
    format: str | None
    #: The model family it was trained for (from its cross-attention width), when its keys show it.
    family: str | None
    parts: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    #: Why it cannot be used (a LyCORIS variant, a pickle without opt-in, an unreadable file), else ``None``.
    error: str | None = None

    @property
    def alias(self) -> str:
        """A1111's alias: the trainer's output name in the metadata, else the file name."""
        return self.metadata.get("ss_output_name") or self.name


@dataclass(frozen=True, kw_only=True)
class EmbeddingEntry:
    name: str
    embedding: Embedding | None
    #: ``None`` when usable with the model asked about, else why it is skipped.
    skipped: str | None


def list_loras(options: EngineOptions) -> list[LoraEntry]:
    entries = []
    for file in list_files(options.lora_folders()):
        size = file.path.stat().st_size
        if file.pickle and not options.allow_pickle:
            entries.append(
                LoraEntry(
                    name=file.name,
                    path=str(file.path),
                    size=size,
                    format="pickle",
                    family=None,
                    error="a pickle file: refused unless the server runs with --allow-pickle",
                )
            )
            continue
        try:
            info = inspect_lora(file.path)
        except ImagegenError as exc:
            entries.append(
                LoraEntry(name=file.name, path=str(file.path), size=size, format=None, family=None, error=str(exc))
            )
            continue
        entries.append(
            LoraEntry(
                name=file.name,
                path=str(file.path),
                size=size,
                format=info.format,
                family=info.family,
                parts=info.parts,
                metadata=dict(info.metadata),
            )
        )
    return entries


def list_embeddings(options: EngineOptions, model: ModelInfo) -> list[EmbeddingEntry]:
    """The embeddings of the embedding folders, each usable with ``model`` or skipped with the reason."""
    widths = encoder_widths(model.family.value, model.path if model.path.is_dir() else None)
    entries = []
    for file in list_files(options.embedding_folders()):
        try:
            embedding = load_embedding(file, allow_pickle=options.allow_pickle)
        except (ValueError, RuntimeError, OSError) as exc:
            entries.append(EmbeddingEntry(name=file.name, embedding=None, skipped=f"{file.path.name}: {exc}"))
            continue
        entries.append(EmbeddingEntry(name=file.name, embedding=embedding, skipped=embedding.fits(widths)))
    return entries


def list_styles(options: EngineOptions) -> tuple[Style, ...]:
    return read_styles(options.styles_path())


def a1111_embedding(entry: EmbeddingEntry) -> dict[str, Any]:
    """One embedding in A1111's ``/sdapi/v1/embeddings`` shape."""
    embedding = entry.embedding
    if embedding is None:
        return {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None, "vectors": None}
    return {
        "step": embedding.step,
        "sd_checkpoint": embedding.sd_checkpoint,
        "sd_checkpoint_name": embedding.sd_checkpoint_name,
        "shape": embedding.shape,
        "vectors": embedding.vectors,
    }
