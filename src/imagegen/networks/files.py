"""Finding extra-network files by name inside their folders, safely.

A name resolves only to a file found by listing the folders (``Lora/``, ``embeddings/``): never a path, never ``..``,
a URL or a symlink that leaves its folder, so a request cannot make the server read an arbitrary file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from imagegen.errors import InvalidRequest, UnsafeModelFile

__all__ = ["NetworkFile", "addnet_hash", "find", "list_files"]

SAFE_SUFFIXES: Final[tuple[str, ...]] = (".safetensors",)
PICKLE_SUFFIXES: Final[tuple[str, ...]] = (".pt", ".ckpt", ".bin", ".pth")
_FORBIDDEN: Final[tuple[str, ...]] = ("/", "\\", "\x00", "..", ":")


@dataclass(frozen=True, kw_only=True)
class NetworkFile:
    """A LoRA or embedding file: its name (the file name without suffix, as A1111 names it) and where it is."""

    name: str
    path: Path

    @property
    def pickle(self) -> bool:
        return self.path.suffix.lower() in PICKLE_SUFFIXES


def list_files(folders: Iterable[Path]) -> list[NetworkFile]:
    """Every network file in ``folders`` (recursively, sorted); the first folder wins a name found twice."""
    seen: dict[str, NetworkFile] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        root = folder.resolve()
        for path in sorted(folder.rglob("*")):
            if path.name.startswith(".") or path.suffix.lower() not in (*SAFE_SUFFIXES, *PICKLE_SUFFIXES):
                continue
            try:
                real = path.resolve()
                if not real.is_file() or not real.is_relative_to(root):
                    continue  # a symlink out of the folder is not one of its files
            except (OSError, RuntimeError):  # RuntimeError: a symlink loop on Python < 3.13
                continue
            seen.setdefault(path.stem, NetworkFile(name=path.stem, path=path))
    return sorted(seen.values(), key=lambda f: f.name.lower())


def find(folders: Sequence[Path], name: str, *, field: str, kind: str, allow_pickle: bool) -> NetworkFile:
    """The file called ``name``; :class:`InvalidRequest` naming ``field`` with the known names otherwise."""
    if not name or any(part in name for part in _FORBIDDEN) or name.startswith("."):
        raise InvalidRequest(field, f"{kind} name {name!r} must be a file name from the {kind} folder, not a path")
    files = list_files(folders)
    for file in files:
        if file.name == name:
            if file.pickle and not allow_pickle:
                raise UnsafeModelFile(
                    f"{kind} {name!r} ({file.path.name}) is a pickle file, which can run arbitrary code when loaded; "
                    "convert it to .safetensors, or opt in explicitly (--allow-pickle) if you trust its source"
                )
            return file
    known = ", ".join(f.name for f in files[:20]) or "none"
    where = ", ".join(str(f) for f in folders) or "no folder configured"
    raise InvalidRequest(field, f"unknown {kind} {name!r}; known: {known} (folders: {where})")


def addnet_hash(path: Path) -> str:
    """A1111's LoRA hash of a ``.safetensors`` file: SHA-256 of the bytes after the header (so editing the metadata
    keeps the hash); of the whole file for other formats. ``Lora hashes`` shows its first 12 hex digits."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if path.suffix.lower() == ".safetensors":
            header = int.from_bytes(handle.read(8), "little")
            handle.seek(8 + header)
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
