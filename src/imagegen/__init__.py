"""imagegen: generate and transform images with open diffusion models.

Importing this package is cheap: torch and diffusers load only when an :class:`Engine` is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from imagegen.errors import (
    Cancelled,
    GenerationFailed,
    ImagegenError,
    InvalidRequest,
    ModelLoadError,
    ModelNotFound,
    ResourceExhausted,
    UnsafeModelFile,
)
from imagegen.requests import GenerationRequest, GenerationResult, Limits

if TYPE_CHECKING:
    from imagegen.engine import Engine

__all__ = [
    "Cancelled",
    "Engine",
    "GenerationFailed",
    "GenerationRequest",
    "GenerationResult",
    "ImagegenError",
    "InvalidRequest",
    "Limits",
    "ModelLoadError",
    "ModelNotFound",
    "ResourceExhausted",
    "UnsafeModelFile",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The engine pulls in torch; load it only when asked for (no import-time cost or device probing).
    if name == "Engine":
        from imagegen.engine import Engine

        return Engine
    raise AttributeError(f"module 'imagegen' has no attribute {name!r}")
