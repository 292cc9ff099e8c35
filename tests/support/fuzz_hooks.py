"""Schemathesis hooks for the fuzz test (``SCHEMATHESIS_HOOKS``): the image fields of the schema (``format: image``
in JSON bodies, ``image/*`` parts of multipart bodies) get real images of random size, colour and format, so that
fuzzing reaches the image code of img2img, inpainting, edits and upscales instead of stopping at "not an image"."""

from __future__ import annotations

import base64
import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image


@st.composite
def image_bytes(draw: st.DrawFn, formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP")) -> bytes:
    size = (draw(st.integers(8, 96)), draw(st.integers(8, 96)))
    colour = tuple(draw(st.integers(0, 255)) for _ in range(3))
    mode = draw(st.sampled_from(("RGB", "RGBA", "L")))
    image_format = draw(st.sampled_from(formats))
    if image_format == "JPEG" and mode == "RGBA":
        mode = "RGB"
    picture = Image.new(mode, size, colour[0] if mode == "L" else (*colour, 255)[: len(mode)])
    if mode == "RGBA" and draw(st.booleans()):  # a transparent corner: OpenAI edits inpaint there
        picture.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format)
    return buffer.getvalue()


@st.composite
def image_text(draw: st.DrawFn) -> str:
    data = base64.b64encode(draw(image_bytes())).decode()
    return f"data:image/png;base64,{data}" if draw(st.booleans()) else data


schemathesis.openapi.format("image", image_text())
schemathesis.openapi.media_type("image/png", image_bytes(("PNG",)))
schemathesis.openapi.media_type("image/jpeg", image_bytes(("JPEG",)))
schemathesis.openapi.media_type("image/webp", image_bytes(("WEBP",)))
