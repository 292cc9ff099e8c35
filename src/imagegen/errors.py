"""The exceptions imagegen raises. Every adapter (CLI, HTTP) maps these, and only these, to user-facing errors."""

from __future__ import annotations

import errno

#: SQLite's result code for "database or disk is full".
_SQLITE_FULL = 13
#: PostgreSQL's SQLSTATE for "disk full" (class 53: insufficient resources).
_PG_DISK_FULL = "53100"


class ImagegenError(Exception):
    """Base class of every error imagegen raises on purpose."""

    #: A stable machine-readable code, used by the HTTP dialects and the CLI.
    code: str = "imagegen_error"


class InvalidRequest(ImagegenError, ValueError):
    """A request field has a bad value. ``field`` names it; the message says the allowed range."""

    code = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ModelNotFound(ImagegenError, LookupError):
    """A model reference does not resolve to anything loadable (the message says how to fix it)."""

    code = "model_not_found"


class UnsafeModelFile(ImagegenError):
    """A pickle-based checkpoint was refused because the caller did not opt in."""

    code = "unsafe_model_file"


class ModelLoadError(ImagegenError):
    """A model was found but could not be loaded (corrupt file, unknown family, incompatible parts)."""

    code = "model_load_error"


class ResourceExhausted(ImagegenError):
    """The device ran out of memory, or a configured limit on work was reached."""

    code = "out_of_memory"


class GenerationFailed(ImagegenError):
    """Generation ran but produced no valid image (e.g. NaNs that a float32 retry could not fix)."""

    code = "generation_failed"


class Cancelled(ImagegenError):
    """The caller cancelled the generation; raised between denoising steps."""

    code = "cancelled"


class DiskFull(ImagegenError):
    """A folder imagegen writes to (the server's data directory: job database, images) has no space left."""

    code = "disk_full"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or the exception it was raised from, says that a disk is full: ``ENOSPC`` or ``EDQUOT`` from
    the OS, ``SQLITE_FULL`` from SQLite, SQLSTATE 53100 from PostgreSQL, or :class:`DiskFull`."""
    current: BaseException | None = exc
    for _ in range(8):  # a bounded walk: a cause chain may loop
        if current is None:
            return False
        if isinstance(current, DiskFull):
            return True
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if getattr(current, "sqlstate", None) == _PG_DISK_FULL:
            return True
        current = current.__cause__
    return False
