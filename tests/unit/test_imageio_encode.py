"""Encoding results: encode_png, and encode_image re-encoding a result PNG as PNG, JPEG or WebP, infotext or not."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops, PngImagePlugin

from imagegen import InvalidRequest
from imagegen.imageio import encode_image, encode_png
from imagegen.metadata import read_infotext

INFOTEXT = "a cat\nNegative prompt: dog\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64"


def picture(mode: str = "RGB") -> Image.Image:
    """A 64x64 image with detail in every channel, so lossy and lossless encodings differ."""
    ramp = Image.linear_gradient("L").resize((64, 64))
    bands = (ramp, ramp.rotate(90), ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ramp.rotate(180))
    return Image.merge(mode, bands[: len(mode)])


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and ImageChops.difference(a, b).getbbox() is None


# --- encode_png ----------------------------------------------------------------------------------------------------


def test_encode_png_without_infotext_is_a_plain_png() -> None:
    data = encode_png(picture())
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert opened(data).format == "PNG"
    assert same_pixels(opened(data), picture())
    assert read_infotext(io.BytesIO(data)) is None


def test_encode_png_carries_infotext() -> None:
    data = encode_png(picture(), INFOTEXT)
    assert opened(data).format == "PNG"
    assert same_pixels(opened(data), picture())
    assert read_infotext(io.BytesIO(data)) == INFOTEXT


# --- encode_image --------------------------------------------------------------------------------------------------


def stored_png(infotext: str | None = INFOTEXT, mode: str = "RGB") -> bytes:
    """A result PNG as imagegen stores it (infotext embedded), saved uncompressed so that re-encoding shows."""
    info = PngImagePlugin.PngInfo()
    if infotext is not None:
        info.add_text("parameters", infotext)
    buffer = io.BytesIO()
    picture(mode).save(buffer, format="PNG", compress_level=0, pnginfo=info)
    return buffer.getvalue()


def test_png_with_infotext_is_the_stored_png_itself() -> None:
    png = stored_png()
    assert encode_image(png, INFOTEXT) == png
    assert encode_image(png, INFOTEXT, format="PNG") == png


def test_png_without_infotext_drops_the_stored_text_and_keeps_the_pixels() -> None:
    data = encode_image(stored_png(), None)
    assert data != stored_png(None)  # re-encoded (compressed), not passed through
    assert opened(data).format == "PNG"
    assert same_pixels(opened(data), picture())
    assert read_infotext(io.BytesIO(data)) is None


@pytest.mark.parametrize(
    ("format", "kind"),
    [("jpg", "JPEG"), ("jpeg", "JPEG"), ("JPG", "JPEG"), ("webp", "WEBP"), ("WebP", "WEBP"), ("Png", "PNG")],
)
def test_formats_are_named_case_insensitively(format: str, kind: str) -> None:
    assert opened(encode_image(stored_png(), None, format=format)).format == kind


@pytest.mark.parametrize("format", ["jpg", "jpeg", "webp"])
def test_jpeg_and_webp_carry_the_infotext_when_given(format: str) -> None:
    data = encode_image(stored_png(), INFOTEXT, format=format)
    assert read_infotext(io.BytesIO(data)) == INFOTEXT


@pytest.mark.parametrize("format", ["png", "jpg", "webp"])
def test_no_text_at_all_when_infotext_is_none(format: str) -> None:
    data = encode_image(stored_png(), None, format=format)
    image = opened(data)
    assert read_infotext(image) is None
    assert "parameters" not in image.info
    assert "exif" not in image.info
    assert b"parameters" not in data


def test_a_jpeg_too_small_for_the_infotext_is_returned_without_it() -> None:
    # EXIF holds at most 64 KiB; the image is still delivered (the stored PNG keeps the text).
    data = encode_image(stored_png(), "a" * 70_000, format="jpg")
    assert opened(data).format == "JPEG"
    assert opened(data).size == (64, 64)
    assert read_infotext(io.BytesIO(data)) is None


def test_a_long_infotext_that_fits_is_kept_in_a_jpeg() -> None:
    data = encode_image(stored_png(), "a" * 30_000, format="jpg")
    assert read_infotext(io.BytesIO(data)) == "a" * 30_000


def test_alpha_is_kept_in_png_and_webp_and_dropped_in_jpeg() -> None:
    rgba = stored_png(None, mode="RGBA")
    assert opened(encode_image(rgba, None, format="png")).mode == "RGBA"
    assert opened(encode_image(rgba, None, format="webp", lossless=True)).mode == "RGBA"
    assert opened(encode_image(rgba, INFOTEXT, format="jpg")).mode == "RGB"


@pytest.mark.parametrize("format", ["jpg", "webp"])
def test_quality_sets_the_lossy_size(format: str) -> None:
    low = encode_image(stored_png(), None, format=format, quality=5)
    high = encode_image(stored_png(), None, format=format, quality=95)
    default = encode_image(stored_png(), None, format=format)
    assert len(low) < len(default) < len(high)


@pytest.mark.parametrize("format", ["jpg", "webp"])
def test_quality_is_clamped_to_1_100(format: str) -> None:
    def at(quality: int) -> bytes:
        return encode_image(stored_png(), None, format=format, quality=quality)

    assert at(-5) == at(0) == at(1) != at(2)
    assert at(150) == at(101) == at(100) != at(99)


def test_lossless_webp_keeps_every_pixel() -> None:
    lossless = opened(encode_image(stored_png(), INFOTEXT, format="webp", lossless=True))
    lossy = opened(encode_image(stored_png(), INFOTEXT, format="webp"))
    assert same_pixels(lossless.convert("RGB"), picture())
    assert not same_pixels(lossy.convert("RGB"), picture())
    assert read_infotext(lossless) == INFOTEXT


def test_lossless_and_quality_leave_png_alone() -> None:
    plain = encode_image(stored_png(), None)
    assert encode_image(stored_png(), None, format="png", quality=5, lossless=True) == plain


@pytest.mark.parametrize("format", ["gif", "tiff", "", "image/png"])
def test_unknown_format_is_refused_naming_format(format: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        encode_image(stored_png(), INFOTEXT, format=format)
    assert exc.value.field == "format"
    assert exc.value.message == f"must be one of png, jpg, jpeg, webp, got {format!r}"
