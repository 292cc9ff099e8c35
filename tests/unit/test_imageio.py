"""Untrusted image input: decoded only after size checks, every failure a clear InvalidRequest naming the field."""

from __future__ import annotations

import base64
import binascii
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from imagegen import InvalidRequest
from imagegen.imageio import decode_base64, decode_image, read_image_file

LIMITS = {"max_pixels": 4096 * 4096, "max_bytes": 1 << 20}
ACCEPTED = "send one of PNG, JPEG, WEBP, BMP, GIF"


def png_bytes(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=save.pop("format", "PNG"), **save)  # type: ignore[arg-type]
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width×height pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def refusal(data: bytes, **limits: int) -> InvalidRequest:
    """The InvalidRequest that decode_image raises for ``data`` (field ``init_image``)."""
    with pytest.raises(InvalidRequest) as exc:
        decode_image(data, field="init_image", **{**LIMITS, **limits})
    assert exc.value.field == "init_image"
    return exc.value


def animated(format: str) -> bytes:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=format, save_all=True, append_images=frames[1:])
    return buffer.getvalue()


# --- decode_base64 -----------------------------------------------------------------------------------------------

DATA = png_bytes(Image.new("RGB", (16, 8), "red"))
B64 = base64.b64encode(DATA).decode()


@pytest.mark.parametrize(
    "text",
    [B64, f" \n\t{B64}\r\n ", f"data:image/png;base64,{B64}", f"  data:image/webp;base64,{B64}\n"],
    ids=["plain", "whitespace-around", "data-uri", "data-uri-whitespace-around"],
)
def test_decode_base64_accepts_plain_base64_and_data_uris(text: str) -> None:
    assert decode_base64(text, field="init_images") == DATA


def test_decode_base64_of_nothing_is_no_bytes() -> None:
    # decode_image then names the field as empty.
    assert decode_base64("  ", field="image") == b""


@pytest.mark.parametrize(
    "text", ["data:image/png," + B64, "data:image/png;base64", "data:" + B64], ids=["not-base64", "no-comma", "bare"]
)
def test_decode_base64_refuses_data_uris_that_are_not_base64(text: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        decode_base64(text, field="mask")
    assert exc.value.field == "mask"
    assert exc.value.message == "data URI must be base64-encoded (data:image/png;base64,...)"


@pytest.mark.parametrize(
    "text",
    ["not base64!!", "AAAA!", "AAAA\x00", "AAA", "data:image/png;base64,AAAA,AAAA"],
    ids=["words", "trailing-symbol", "nul", "bad-padding", "second-comma"],
)
def test_decode_base64_refuses_anything_but_the_base64_alphabet(text: str) -> None:
    payload = text.partition(",")[2] if text.startswith("data:") else text
    with pytest.raises(binascii.Error) as reason:
        base64.b64decode(payload, validate=True)
    with pytest.raises(InvalidRequest) as exc:
        decode_base64(text, field="image")
    assert exc.value.field == "image"
    assert exc.value.message == f"is not valid base64 ({reason.value})"


# --- decode_image: what is accepted ------------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["PNG", "BMP", "GIF", "WEBP"])
def test_lossless_formats_decode_to_the_same_rgb_pixels(format: str) -> None:
    image = Image.new("RGB", (16, 8), (255, 0, 0))
    image.paste((0, 0, 255), (8, 0, 16, 8))
    save = {"lossless": True} if format == "WEBP" else {}
    decoded = decode_image(png_bytes(image, format=format, **save), field="image", **LIMITS)
    assert decoded.mode == "RGB"
    assert decoded.size == (16, 8)
    assert decoded.getpixel((0, 0)) == (255, 0, 0)
    assert decoded.getpixel((15, 7)) == (0, 0, 255)


def test_jpeg_decodes_to_rgb() -> None:
    decoded = decode_image(png_bytes(Image.new("RGB", (24, 16), (200, 30, 30)), format="JPEG"), field="image", **LIMITS)
    assert (decoded.mode, decoded.size) == ("RGB", (24, 16))
    assert all(abs(got - want) <= 3 for got, want in zip(decoded.getpixel((5, 5)), (200, 30, 30), strict=True))


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "RGBA", "P", "L", "LA", "1"])
def test_other_modes_become_rgb(mode: str) -> None:
    image = Image.new(mode, (8, 8))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(png_bytes(image, format=fmt), field="image", **LIMITS)
    assert decoded.mode == "RGB"


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    image = Image.new("I;16", (4, 4), 32768)
    decoded = decode_image(png_bytes(image), field="image", **LIMITS)
    assert decoded.getpixel((0, 0)) == (128, 128, 128)


def test_transparency_is_composited_on_white() -> None:
    image = Image.new("RGBA", (2, 1), (255, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 255, 255))
    decoded = decode_image(png_bytes(image), field="image", **LIMITS)
    assert [decoded.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (0, 0, 255)]


def malformed_mpo_jpeg() -> bytes:
    """A JPEG with an APP2 'MPF' (multi-picture) segment that is not a TIFF header: Pillow warns and reads the JPEG."""
    jpeg = png_bytes(Image.new("RGB", (8, 8), "red"), format="JPEG")
    payload = b"MPF\x00not-tiff"
    return jpeg[:2] + b"\xff\xe2" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.mark.filterwarnings("ignore:Image appears to be a malformed MPO file")
def test_only_pillows_decompression_bomb_warning_is_an_error() -> None:
    # Pillow's other warnings while reading a header (here: a malformed MPO index) leave a readable image readable.
    decoded = decode_image(malformed_mpo_jpeg(), field="image", **LIMITS)
    assert (decoded.mode, decoded.size) == ("RGB", (8, 8))


# --- decode_image: size limits -----------------------------------------------------------------------------------


def test_byte_limit_is_inclusive() -> None:
    assert decode_image(DATA, field="image", max_pixels=128, max_bytes=len(DATA)).size == (16, 8)
    refused = refusal(DATA, max_bytes=len(DATA) - 1)
    assert refused.message == f"must be at most {len(DATA) - 1} bytes, got {len(DATA)}"


def test_bytes_are_counted_before_anything_is_parsed() -> None:
    refused = refusal(b"x" * ((1 << 20) + 1))
    assert refused.message == f"must be at most {1 << 20} bytes, got {(1 << 20) + 1}"


def test_pixel_limit_is_inclusive_and_counts_width_times_height() -> None:
    # 16x8 = 128 pixels: a limit of 128 takes it, 127 does not (a width/height ratio would be 2).
    assert decode_image(DATA, field="image", max_pixels=128, max_bytes=len(DATA)).size == (16, 8)
    assert refusal(DATA, max_pixels=127).message == "must have at most 127 pixels, got 16x8"


def test_pixel_limit_applies_to_the_declared_size_before_decoding() -> None:
    assert refusal(bomb_png(4097, 4096)).message == f"must have at most {4096 * 4096} pixels, got 4097x4096"


@pytest.mark.parametrize(
    ("width", "height"), [(50_000, 50_000), (10_000, 10_000)], ids=["pillow-error", "pillow-warning"]
)
def test_decompression_bombs_are_refused_at_open(width: int, height: int) -> None:
    # Past 2x Pillow's MAX_IMAGE_PIXELS it raises; between 1x and 2x it only warns, which we make an error as well.
    refused = refusal(bomb_png(width, height))
    assert refused.message == f"declares too many pixels: must have at most {4096 * 4096} pixels"


# --- decode_image: what is refused -------------------------------------------------------------------------------


def test_empty_input_is_refused() -> None:
    assert refusal(b"").message == "is empty"


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF", b"GIF89a\x00", b"just some text"],
    ids=["pdf", "truncated-gif-header", "text"],
)
def test_unreadable_bytes_name_pillows_error(data: bytes) -> None:
    assert refusal(data).message == "is not a readable image (UnidentifiedImageError); send PNG, JPEG or WebP"


@pytest.mark.parametrize(("format", "name"), [("TIFF", "TIFF"), ("PPM", "PPM"), ("ICO", "ICO")])
def test_formats_outside_the_allowed_list_are_refused_before_decoding(format: str, name: str) -> None:
    data = png_bytes(Image.new("RGB", (16, 16), "red"), format=format)
    assert refusal(data).message == f"format {name} is not accepted; {ACCEPTED}"


@pytest.mark.parametrize("format", ["GIF", "WEBP", "PNG"])
def test_animated_images_are_refused(format: str) -> None:
    assert refusal(animated(format)).message == "animated images are not accepted; send a single frame"


def test_truncated_pixels_name_pillows_reason() -> None:
    data = png_bytes(Image.linear_gradient("L").convert("RGB"))[:400]
    with pytest.raises(OSError, match="truncated") as reason:
        Image.open(io.BytesIO(data)).load()
    assert refusal(data).message == f"could not be decoded (truncated or corrupt: {reason.value})"


# --- read_image_file ---------------------------------------------------------------------------------------------


def test_read_image_file_decodes_with_the_same_guards(tmp_path: Path) -> None:
    path = tmp_path / "init.png"
    path.write_bytes(DATA)
    image = read_image_file(str(path), field="init_image", max_pixels=128, max_bytes=len(DATA))
    assert (image.mode, image.size, image.getpixel((0, 0))) == ("RGB", (16, 8), (255, 0, 0))
    with pytest.raises(InvalidRequest) as exc:
        read_image_file(path, field="init_image", max_pixels=127, max_bytes=len(DATA))
    assert (exc.value.field, exc.value.message) == ("init_image", "must have at most 127 pixels, got 16x8")


def test_read_image_file_checks_the_size_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(DATA)
    with pytest.raises(InvalidRequest) as exc:
        read_image_file(path, field="init_image", max_pixels=128, max_bytes=len(DATA) - 1)
    assert exc.value.field == "init_image"
    assert exc.value.message == f"must be at most {len(DATA) - 1} bytes, got {len(DATA)} ({path})"


def test_read_image_file_names_the_field_when_the_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(b"")
    with pytest.raises(InvalidRequest) as exc:
        read_image_file(path, field="mask", **LIMITS)
    assert (exc.value.field, exc.value.message) == ("mask", "is empty")


@pytest.mark.parametrize(("name", "reason"), [("missing.png", "No such file or directory"), (".", "Is a directory")])
def test_read_image_file_reports_os_errors_with_the_path(tmp_path: Path, name: str, reason: str) -> None:
    path = tmp_path / name
    with pytest.raises(InvalidRequest) as exc:
        read_image_file(path, field="init_image", **LIMITS)
    assert exc.value.field == "init_image"
    assert exc.value.message == f"cannot read {path}: {reason}"


def test_base64_wrapped_in_lines_is_read_as_one_text():
    data = base64.encodebytes(b"\x89PNG" * 40).decode()  # 76-character lines, as RFC 2045 and `base64` write them
    assert "\n" in data.strip()
    assert decode_base64(data, field="f") == b"\x89PNG" * 40
    assert decode_base64("data:image/png;base64,AAAA AAAA\r\n", field="f") == b"\x00" * 6


def test_a_camera_jpeg_with_a_multi_picture_index_is_its_first_picture():
    first, second = Image.new("RGB", (32, 16), (200, 10, 10)), Image.new("RGB", (32, 16), (10, 10, 200))
    buffer = io.BytesIO()
    first.save(buffer, format="MPO", save_all=True, append_images=[second])
    with Image.open(io.BytesIO(buffer.getvalue())) as opened:
        assert (opened.format, opened.n_frames) == ("MPO", 2)
    image = decode_image(buffer.getvalue(), field="f", max_pixels=10_000, max_bytes=10**6)
    assert image.size == (32, 16)
    red, _, blue = image.getpixel((16, 8))
    assert red > 150  # the first picture (red) ...
    assert blue < 60  # ... not the second (blue)
