"""Decode untrusted images safely and encode results.

Every size check happens *before* pixels are decoded, so a tiny file that declares 50k×50k pixels
(a decompression bomb) costs nothing. Errors are :class:`InvalidRequest` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import warnings
from pathlib import Path
from types import MappingProxyType

from PIL import Image, UnidentifiedImageError

from imagegen.errors import InvalidRequest

#: Formats we decode. Anything else (PDF, SVG, TIFF stacks, ...) is refused before decoding.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")


def decode_base64(data: str, *, field: str) -> bytes:
    """Bytes of a base64 string or ``data:image/...;base64,`` URI (A1111 and OpenAI clients send both)."""
    text = data.strip()
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise InvalidRequest(field, "data URI must be base64-encoded (data:image/png;base64,...)")
    # Line breaks and spaces are base64's own wrapping (RFC 2045 writes 76-character lines); they carry nothing.
    text = "".join(text.split())
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(field, f"is not valid base64 ({exc})") from None


def decode_image(data: bytes, *, field: str, max_pixels: int, max_bytes: int, keep_alpha: bool = False) -> Image.Image:
    """Decode image bytes into an RGB image, refusing oversized, animated or unknown inputs with a clear error.
    ``keep_alpha`` (masks, whose transparency means something) returns an image with transparency as RGBA."""
    if len(data) > max_bytes:
        raise InvalidRequest(field, f"must be at most {max_bytes} bytes, got {len(data)}")
    if not data:
        raise InvalidRequest(field, "is empty")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is stricter than Pillow's warning threshold; make its warning an error anyway.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequest(field, f"declares too many pixels: must have at most {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        # Pillow's header parsers raise ValueError (a truncated IHDR, a zTXt chunk inflating past MAX_TEXT_CHUNK) and
        # SyntaxError (a malformed header) besides OSError: all of them mean a bad upload, not a server fault.
        raise InvalidRequest(field, f"is not a readable image ({type(exc).__name__}); send PNG, JPEG or WebP") from None
    if image.format not in (*ALLOWED_FORMATS, "MPO"):
        raise InvalidRequest(field, f"format {image.format} is not accepted; send one of {', '.join(ALLOWED_FORMATS)}")
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidRequest(field, f"must have at most {max_pixels} pixels, got {width}x{height}")
    # A phone camera's JPEG often carries a multi-picture index (MPO: previews, depth maps); the photo is frame 0.
    if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":
        raise InvalidRequest(field, "animated images are not accepted; send a single frame")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidRequest(field, f"could not be decoded (truncated or corrupt: {exc})") from None
    if keep_alpha and image.has_transparency_data and not image.mode.startswith("I"):
        return image.convert("RGBA")
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any decoded mode (palette, CMYK, 16-bit, alpha) to 8-bit RGB; transparency (an alpha channel or a
    transparent colour) is composited on white. An RGB image without transparency is returned as is."""
    if image.mode.startswith("I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping everything above 255 to white.
        import numpy as np

        array = np.asarray(image).clip(0)
        peak = 65535 if image.mode.startswith("I;16") else max(int(array.max()), 1)
        image = Image.fromarray((array / peak * 255).round().astype(np.uint8))
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def read_image_file(
    path: str | Path, *, field: str, max_pixels: int, max_bytes: int, keep_alpha: bool = False
) -> Image.Image:
    """Read and decode an image file with the same guards as network input."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > max_bytes:
            raise InvalidRequest(field, f"must be at most {max_bytes} bytes, got {size} ({file})")
        data = file.read_bytes()
    except OSError as exc:
        raise InvalidRequest(field, f"cannot read {file}: {exc.strerror or exc}") from None
    return decode_image(data, field=field, max_pixels=max_pixels, max_bytes=max_bytes, keep_alpha=keep_alpha)


def encode_png(image: Image.Image, infotext: str | None = None) -> bytes:
    """PNG bytes, with the A1111 infotext in the ``parameters`` text chunk when given."""
    from imagegen.metadata import write_image

    buffer = io.BytesIO()
    if infotext is None:
        image.save(buffer, format="PNG")
    else:
        write_image(image, infotext, buffer)  # PNG is its default format
    return buffer.getvalue()


#: Output formats by the names clients use (A1111's ``samples_format``, OpenAI's ``output_format``).
_OUTPUT_FORMATS = MappingProxyType({"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"})


def encode_image(
    png: bytes, infotext: str | None, *, format: str = "png", quality: int | None = None, lossless: bool = False
) -> bytes:
    """A result PNG (imagegen's own file, so trusted) as PNG, JPEG or WebP, with ``infotext`` embedded where A1111
    puts it, or without any when ``infotext`` is None. ``quality`` (1-100) applies to JPEG and lossy WebP.

    A JPEG's EXIF block holds at most 64 KiB: an infotext that does not fit is left out of the JPEG (the PNG behind
    the image URL keeps it), rather than failing the request."""
    from imagegen.metadata import metadata_save_options

    kind = _OUTPUT_FORMATS.get(format.lower())
    if kind is None:
        raise InvalidRequest("format", f"must be one of {', '.join(_OUTPUT_FORMATS)}, got {format!r}")
    if kind == "PNG" and infotext is not None:
        return png  # the stored PNG already carries it
    with Image.open(io.BytesIO(png)) as image:
        pixels = image.convert("RGB") if kind == "JPEG" else image.copy()
    pixels.info.clear()  # no text chunk carried over unless asked for
    save: dict[str, object] = {}
    if infotext is not None:
        with contextlib.suppress(InvalidRequest):  # too long for a JPEG's EXIF: left out, as the docstring says
            save.update(metadata_save_options(infotext, kind))
    if kind in ("JPEG", "WEBP") and quality is not None:
        save["quality"] = max(1, min(100, quality))
    if kind == "WEBP" and lossless:
        save["lossless"] = True
    buffer = io.BytesIO()
    pixels.save(buffer, format=kind, **save)
    return buffer.getvalue()
