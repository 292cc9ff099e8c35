"""Pillow raises ValueError/SyntaxError (not OSError) for some malformed headers: they must be InvalidRequest too."""

from __future__ import annotations

import struct
import zlib

import pytest

from imagegen import InvalidRequest
from imagegen.imageio import decode_image

LIMITS = {"max_pixels": 4096 * 4096, "max_bytes": 1 << 20}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(*, ihdr: bytes | None = None, before_idat: bytes = b"") -> bytes:
    """A 16x16 RGB PNG; ``ihdr`` replaces its header data, ``before_idat`` adds chunks in front of the pixels."""
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0) if ihdr is None else ihdr
    rows = b"".join(b"\0" + b"\0" * 48 for _ in range(16))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + before_idat
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def ztxt_bomb() -> bytes:
    """A few KB of PNG whose zTXt chunk inflates to 2 MB, past Pillow's MAX_TEXT_CHUNK (Pillow: ValueError)."""
    return png(before_idat=_chunk(b"zTXt", b"parameters\0\0" + zlib.compress(b"a" * (2 * 1024 * 1024))))


def truncated_ihdr() -> bytes:
    """An IHDR chunk of 4 bytes instead of 13 (Pillow: ValueError "Truncated IHDR chunk")."""
    return png(ihdr=b"\0\0\0\x10")


def test_the_fixtures_are_valid_apart_from_the_defect() -> None:
    # The well-formed variant decodes, so the failures below come from the defect alone.
    assert decode_image(png(), field="init_image", **LIMITS).size == (16, 16)
    assert len(ztxt_bomb()) < 10_000


@pytest.mark.parametrize("data", [ztxt_bomb(), truncated_ihdr()], ids=["ztxt-bomb", "truncated-ihdr"])
def test_value_errors_from_pillow_are_invalid_requests_naming_the_field(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as exc:
        decode_image(data, field="image", **LIMITS)
    assert exc.value.field == "image"
    assert "not a readable image" in exc.value.message
