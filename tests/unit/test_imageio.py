"""Untrusted image input: decoded only after size checks, every failure a clear InvalidRequest."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image

from imagegen import InvalidRequest
from imagegen.imageio import decode_base64, decode_image, encode_png
from imagegen.metadata import read_infotext

LIMITS = {"max_pixels": 4096 * 4096, "max_bytes": 1 << 20}


def png_bytes(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width×height pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decodes_png_and_data_uri():
    data = png_bytes(Image.new("RGB", (16, 8), "red"))
    assert decode_image(data, field="init_image", **LIMITS).size == (16, 8)
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    assert decode_base64(uri, field="init_images") == data


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 not an image", "not a readable image"),
        (png_bytes(Image.new("RGB", (64, 64), "red"))[:60], "truncated or corrupt"),
        (bomb_png(50_000, 50_000), "at most"),
        (b"x" * ((1 << 20) + 1), "bytes"),
    ],
    ids=["empty", "pdf", "truncated", "bomb", "too-many-bytes"],
)
def test_bad_images(data, fragment):
    with pytest.raises(InvalidRequest) as exc:
        decode_image(data, field="init_image", **LIMITS)
    assert exc.value.field == "init_image"
    assert fragment in exc.value.message


def test_bad_base64():
    with pytest.raises(InvalidRequest, match="base64"):
        decode_base64("not base64!!", field="image")


def test_animated_images_are_refused():
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidRequest, match="animated"):
        decode_image(buffer.getvalue(), field="image", **LIMITS)


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "RGBA", "P", "L"])
def test_other_modes_become_rgb(mode):
    image = Image.new(mode, (8, 8))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(png_bytes(image, format=fmt), field="image", **LIMITS)
    assert decoded.mode == "RGB"


def test_sixteen_bit_is_scaled_not_clipped():
    image = Image.new("I;16", (4, 4), 32768)
    decoded = decode_image(png_bytes(image), field="image", **LIMITS)
    assert 120 <= decoded.getpixel((0, 0))[0] <= 135


def test_encode_png_carries_infotext():
    data = encode_png(Image.new("RGB", (8, 8)), "a cat\nSteps: 2, Sampler: Euler, Seed: 1")
    assert read_infotext(io.BytesIO(data)) == "a cat\nSteps: 2, Sampler: Euler, Seed: 1"
