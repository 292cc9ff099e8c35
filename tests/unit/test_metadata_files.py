"""imagegen.metadata in image files: EXIF UserComment bytes as other tools write them, text that files cannot hold,
the JPEG size limit, and what ``write_image`` does to the pixels it saves."""

from __future__ import annotations

import codecs
import io
import struct

import pytest
from PIL import ExifTags, Image

from imagegen.errors import InvalidRequest
from imagegen.metadata import metadata_save_options, read_infotext, write_image

USER_COMMENT = ExifTags.Base.UserComment
UNICODE, ASCII, JIS, UNDEFINED = b"UNICODE\0", b"ASCII\0\0\0", b"JIS\0\0\0\0\0", b"\0" * 8


def _image_with_exif(exif: bytes) -> Image.Image:
    image = Image.new("RGB", (4, 4))
    image.info["exif"] = exif
    return image


def _exif_with_user_comment(value: bytes, *, exif_type: int = 7, count: int | None = None) -> bytes:
    """A big-endian EXIF block built by hand, so that UserComment can have any EXIF type (Pillow writes UNDEFINED, 7):
    IFD0 holds only the pointer to the Exif IFD, which holds only UserComment, its value right after the IFD.
    Each IFD: entry count (H), one entry (tag H, type H, count I, value offset I), next-IFD offset (I). ``count``
    is in values of the type (default: bytes); the value must take more than 4 bytes, else it would be inline."""
    ifd0 = struct.pack(">HHHIII", 1, ExifTags.IFD.Exif, 4, 1, 26, 0)  # at offset 8; the Exif IFD follows, at 26
    exif_ifd = struct.pack(">HHHIII", 1, USER_COMMENT, exif_type, count or len(value), 44, 0)  # value at 26 + 18 = 44
    return b"Exif\0\0MM\0*" + struct.pack(">I", 8) + ifd0 + exif_ifd + value


def _written_comment(text: str, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif.load(metadata_save_options(text, fmt)["exif"])
    comment: bytes = exif.get_ifd(ExifTags.IFD.Exif)[USER_COMMENT]
    return comment


def _read_comment(comment: bytes) -> str | None:
    exif = Image.Exif()
    exif[ExifTags.IFD.Exif] = {USER_COMMENT: comment}
    return read_infotext(_image_with_exif(exif.tobytes()))


@pytest.mark.parametrize(
    ("comment", "text"),
    [
        # UNICODE with a byte-order mark, either order; the mark is not part of the text.
        (UNICODE + codecs.BOM_UTF16_BE + "Größe 🐱".encode("utf-16-be"), "Größe 🐱"),
        (UNICODE + codecs.BOM_UTF16_LE + "Größe 🐱".encode("utf-16-le"), "Größe 🐱"),
        # UNICODE without a mark: the byte order that puts more zero bytes where ASCII-range characters have them.
        (UNICODE + "aaaĀĀ".encode("utf-16-le"), "aaaĀĀ"),  # 3 zero high bytes (little-endian) beat 2 zero low ones
        (UNICODE + "aaaĀĀ".encode("utf-16-be"), "aaaĀĀ"),
        # ... and big-endian, as A1111 writes it, when that does not decide.
        (UNICODE + "ĀaĀa".encode("utf-16-be"), "ĀaĀa"),  # as many zero bytes either way
        (UNICODE + "猫犬".encode("utf-16-be"), "猫犬"),  # no zero bytes at all
        # Broken UTF-16 (an unpaired surrogate) reads as U+FFFD, whichever way the byte order was found.
        (UNICODE + codecs.BOM_UTF16_LE + "ab".encode("utf-16-le") + b"\x00\xd8", "ab\ufffd"),
        (UNICODE + "ab".encode("utf-16-le") + b"\x00\xd8", "ab\ufffd"),
        (UNICODE + "ab".encode("utf-16-be") + b"\xd8\x00", "ab\ufffd"),
        # JIS means Shift_JIS; a truncated double-byte character reads as U+FFFD.
        (JIS + "猫, Steps: 1".encode("shift_jis") + b"\x81", "猫, Steps: 1\ufffd"),
        # ASCII and undefined: UTF-8, which many tools write behind them; bytes that are not UTF-8 read as U+FFFD.
        (ASCII + b"caf\xc3\xa9 caf\xe9", "café caf\ufffd"),
        (UNDEFINED + b"caf\xc3\xa9 caf\xe9", "café caf\ufffd"),
        # No character code at all: the whole comment as UTF-8 (A1111's fallback).
        (b"caf\xc3\xa9 caf\xe9, Steps: 1", "café caf\ufffd, Steps: 1"),
        # NUL padding is dropped, and nothing else ("X" is not padding).
        (ASCII + b"Model: AX\0\0\0", "Model: AX"),
        (UNICODE + "Model: AX\0".encode("utf-16-be"), "Model: AX"),
    ],
)
def test_user_comment_bytes_are_decoded(comment, text):
    assert _read_comment(comment) == text


@pytest.mark.parametrize("comment", [UNICODE, ASCII + b"\0\0", b""])
def test_empty_user_comment_reads_none(comment):
    assert _read_comment(comment) is None


def test_user_comment_stored_as_exif_ascii_keeps_its_bytes():
    # Pillow hands a comment of EXIF type ASCII (2) back as Latin-1 text; its bytes are read like any comment's,
    # so UTF-8 behind the ASCII code is not mangled.
    comment = ASCII + "Größe, Steps: 1".encode() + b"\0"
    assert read_infotext(_image_with_exif(_exif_with_user_comment(comment, exif_type=2))) == "Größe, Steps: 1"
    # The usual type, UNDEFINED (7), through the same hand-built block.
    assert read_infotext(_image_with_exif(_exif_with_user_comment(comment, exif_type=7))) == "Größe, Steps: 1"


def test_user_comment_that_is_not_text_reads_none():
    # A UserComment of type SHORT (3) is numbers, not a comment.
    image = _image_with_exif(_exif_with_user_comment(b"\0\1\0\2\0\3", exif_type=3, count=3))
    exif = Image.Exif()
    exif.load(image.info["exif"])
    assert exif.get_ifd(ExifTags.IFD.Exif)[USER_COMMENT] == (1, 2, 3)  # Pillow read the tag: it is not text
    assert read_infotext(image) is None


def test_png_parameters_as_bytes_are_read_as_utf8():
    image = Image.new("RGB", (4, 4))
    image.info["parameters"] = "Größe, Steps: 1 ".encode() + b"\xff"
    assert read_infotext(image) == "Größe, Steps: 1 \ufffd"


def test_empty_png_parameters_fall_back_to_exif():
    image = _image_with_exif(metadata_save_options("from exif", "WEBP")["exif"])
    image.info["parameters"] = ""
    assert read_infotext(image) == "from exif"
    del image.info["exif"]
    assert read_infotext(image) is None


def test_not_an_image_names_the_field_and_the_reason():
    with pytest.raises(InvalidRequest) as caught:
        read_infotext(io.BytesIO(b"%PDF-1.7 not an image"))
    assert caught.value.field == "image"
    assert caught.value.message.startswith("not a readable PNG, JPEG or WebP image: cannot identify image file")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_lone_surrogates_become_replacement_characters_and_nul_is_dropped(fmt):
    # Every lone surrogate, U+D800 to U+DFFF; U+E000 (private use), just above them, is ordinary text.
    text = "a\0b \ud800 \udbff \udc00 \udfff \ue000 \ud7ff c"
    buffer = io.BytesIO()
    write_image(Image.new("RGB", (4, 4)), text, buffer, format=fmt)
    assert read_infotext(io.BytesIO(buffer.getvalue())) == "ab \ufffd \ufffd \ufffd \ufffd \ue000 \ud7ff c"


# The largest texts that fit a JPEG's EXIF block (65,533 bytes; Pillow writes 58 bytes of EXIF around the comment
# and pads it to an even length): as A1111's UTF-16, and as UTF-8.
LONGEST_UTF16 = 32737  # 2 * 32737 + 58 = 65,532 bytes
LONGEST_UTF8 = 65474  # 65474 + 58 = 65,532 bytes


@pytest.mark.parametrize(
    ("text", "comment"),
    [
        ("a" * LONGEST_UTF16, UNICODE + ("a" * LONGEST_UTF16).encode("utf-16-be")),
        ("a" * (LONGEST_UTF16 + 1), ASCII + b"a" * (LONGEST_UTF16 + 1)),
        ("a" * LONGEST_UTF8, ASCII + b"a" * LONGEST_UTF8),
        # Not ASCII: UTF-8 under the "undefined" code (EXIF has none for UTF-8).
        ("é" + "a" * LONGEST_UTF16, UNDEFINED + ("é" + "a" * LONGEST_UTF16).encode()),
    ],
)
def test_jpeg_takes_utf8_only_when_utf16_does_not_fit(text, comment):
    assert _written_comment(text) == comment
    buffer = io.BytesIO()
    write_image(Image.new("RGB", (8, 8)), text, buffer, format="JPEG")  # Pillow accepts the block
    assert read_infotext(io.BytesIO(buffer.getvalue())) == text


def test_webp_always_takes_utf16():
    text = "a" * (LONGEST_UTF8 + 1)
    assert _written_comment(text, "WEBP") == UNICODE + text.encode("utf-16-be")


def test_text_too_long_for_a_jpeg_names_the_field_and_the_way_out():
    with pytest.raises(InvalidRequest) as caught:
        metadata_save_options("a" * (LONGEST_UTF8 + 1), "JPEG")
    assert caught.value.field == "infotext"
    assert caught.value.message == (
        "65475 characters do not fit in a JPEG's EXIF block (65533 bytes); save as PNG or WebP"
    )


@pytest.mark.parametrize("fmt", [None, 3, "GIF", ""])
def test_unknown_format_names_the_field_and_the_choices(fmt):
    expected = ("format", f"must be one of PNG, JPEG, WEBP, got {fmt!r}")
    with pytest.raises(InvalidRequest) as caught:
        metadata_save_options("x", fmt)
    assert (caught.value.field, caught.value.message) == expected
    with pytest.raises(InvalidRequest) as caught:
        write_image(Image.new("L", (4, 4)), "x", io.BytesIO(), format=fmt)
    assert (caught.value.field, caught.value.message) == expected


@pytest.mark.parametrize(
    ("fmt", "mode", "saved_mode"),
    [
        ("PNG", "RGBA", "RGBA"),  # PNG keeps alpha and palettes
        ("PNG", "P", "P"),
        ("WEBP", "RGBA", "RGBA"),
        ("JPEG", "RGBA", "RGB"),  # JPEG cannot hold them: flattened to RGB, as A1111 does
        ("JPEG", "P", "RGB"),
        ("JPEG", "L", "L"),  # modes JPEG holds are kept
        ("JPEG", "CMYK", "CMYK"),
    ],
)
def test_write_image_converts_only_what_the_format_cannot_hold(fmt, mode, saved_mode):
    buffer = io.BytesIO()
    write_image(Image.new(mode, (8, 8)), "Steps: 1, Seed: 2, Sampler: x", buffer, format=fmt)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        assert (image.format, image.mode) == (fmt, saved_mode)
        assert read_infotext(image) == "Steps: 1, Seed: 2, Sampler: x"
