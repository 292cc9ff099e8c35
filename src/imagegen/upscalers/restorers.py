"""Face restorers (A1111's ``/sdapi/v1/face-restorers``): the registry is :data:`FACE_RESTORERS` below.

No face-restoration weights ship with imagegen, so a restorer is listed only when its weight file is found in one of
the given folders; running one is not implemented yet. A new restorer is added to :data:`FACE_RESTORERS` (its A1111
name and the file-name prefix of its weights) and, when it can run, next to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

__all__ = ["FACE_RESTORERS", "face_restorers"]

#: A1111 name -> lower-case prefix of its weight files (``GFPGANv1.4.pth``, ``codeformer-v0.1.0.pth``).
FACE_RESTORERS: Mapping[str, str] = MappingProxyType({"CodeFormer": "codeformer", "GFPGAN": "gfpgan"})
_SUFFIXES = (".pth", ".safetensors")


def face_restorers(folders: tuple[Path, ...]) -> list[dict[str, str | None]]:
    """``[{"name", "cmd_dir"}]`` of each restorer whose weights are in ``folders`` (the first folder that has them)."""
    found: list[dict[str, str | None]] = []
    for name, prefix in FACE_RESTORERS.items():
        for folder in folders:
            if folder.is_dir() and any(_is_weights(path, prefix) for path in folder.iterdir()):
                found.append({"name": name, "cmd_dir": str(folder)})
                break
    return found


def _is_weights(path: Path, prefix: str) -> bool:
    lower = path.name.lower()
    return lower.startswith(prefix) and lower.endswith(_SUFFIXES) and path.is_file()
