"""Hand-built PNG bytes for the bad-input tests: decompression-bomb headers and headers Pillow refuses."""

from __future__ import annotations

import struct
import zlib


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(*, ihdr: bytes | None = None, before_idat: bytes = b"") -> bytes:
    """A valid 16x16 RGB PNG; ``ihdr`` replaces its header data, ``before_idat`` adds chunks in front of the pixels."""
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0) if ihdr is None else ihdr
    rows = b"\0" * (16 * 49)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + before_idat
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def declaring(width: int, height: int) -> bytes:
    """A few hundred bytes whose header declares ``width`` x ``height`` pixels (a decompression-bomb probe)."""
    return png(ihdr=struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def ztxt_bomb() -> bytes:
    """A few KB whose zTXt chunk inflates to 2 MB, past Pillow's MAX_TEXT_CHUNK (Pillow raises ValueError at open)."""
    return png(before_idat=chunk(b"zTXt", b"parameters\0\0" + zlib.compress(b"a" * (2 * 1024 * 1024))))


def truncated_ihdr() -> bytes:
    """An IHDR chunk of 4 bytes instead of 13 (Pillow raises ValueError "Truncated IHDR chunk")."""
    return png(ihdr=b"\0\0\0\x10")
