"""The full-size diffusers configs (no weights) that ship with imagegen, for offline single-file loading.

``Pipeline.from_single_file(path, config=DIR, local_files_only=True)`` needs a diffusers config folder whose
``tokenizer*/`` subfolders hold ``vocab.json`` and ``merges.txt``. imagegen ships the JSON configs of SD 1.5, SD 2.1,
SDXL base and SDXL refiner, and one copy of the CLIP BPE files (``configs/clip-tokenizer``, built by
``tools/build_clip_tokenizer.py``); :func:`materialize_reference_config` assembles the two into a loadable folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from imagegen.errors import InvalidRequest

if TYPE_CHECKING:  # importlib.resources.abc is 3.11+; only the annotations need it
    from importlib.resources.abc import Traversable

#: The config families shipped under ``imagegen/configs/`` (see ``configs/SOURCES.md`` for where each file came from).
REFERENCE_CONFIGS = ("sd15", "sd21", "sdxl-base", "sdxl-refiner")
TOKENIZER_FILES = ("vocab.json", "merges.txt")


def _configs_root() -> Traversable:
    return files(__package__) / "configs"


def _copy_tree(source: Traversable, dest: Path) -> None:
    # Traversable, not Path: the package may be installed as a zip, where only read_bytes() works.
    dest.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            _copy_tree(entry, dest / entry.name)
        else:
            (dest / entry.name).write_bytes(entry.read_bytes())


def materialize_reference_config(family_dir_name: str, dest_root: Path) -> Path:
    """Create ``dest_root/<family_dir_name>``, a complete diffusers config folder, and return its path.

    The folder holds the shipped config files plus ``vocab.json``/``merges.txt`` in every ``tokenizer*/`` subfolder.
    An existing folder is reused as is. The folder is assembled under a temporary name and renamed into place, so a
    concurrent or interrupted call never leaves a half-written folder behind.
    """
    if family_dir_name not in REFERENCE_CONFIGS:
        raise InvalidRequest(
            "family_dir_name", f"unknown reference config {family_dir_name!r}; use one of {REFERENCE_CONFIGS}"
        )
    target = Path(dest_root) / family_dir_name
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{family_dir_name}-", dir=target.parent))
    try:
        _copy_tree(_configs_root() / family_dir_name, staging)
        tokenizer_source = _configs_root() / "clip-tokenizer"
        for tokenizer_dir in sorted(staging.glob("tokenizer*")):
            for name in TOKENIZER_FILES:
                (tokenizer_dir / name).write_bytes((tokenizer_source / name).read_bytes())
        try:
            os.rename(staging, target)
        except OSError:
            # Another caller won the race: its folder is complete (it was renamed into place whole), so use it.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
