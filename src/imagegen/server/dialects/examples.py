"""Request examples in the OpenAPI schema that work as they are: a real 64x64 PNG (a white disc on red) and a mask
(a white square), so that a reader can paste an example and a fuzzer's example phase reaches the image code, not
only the validation of a placeholder."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["EXAMPLE_IMAGE", "EXAMPLE_IMAGE_BASE64", "EXAMPLE_MASK_BASE64", "IMAGE_MEDIA_TYPES", "image_schema"]

#: An image in a JSON string: ``format: image`` (an OpenAPI format of our own: base64 or a data: URI of a PNG, JPEG
#: or WebP), so that clients and fuzzers can tell it from free text.
IMAGE_FORMAT: Mapping[str, str] = MappingProxyType({"format": "image", "contentMediaType": "image/*"})


def image_schema(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of an image field (a string, a list of strings, either optional): the string itself
    (inside ``anyOf`` where the field may be null) gets :data:`IMAGE_FORMAT`."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            branch.update(IMAGE_FORMAT)
        elif branch.get("type") == "array":
            branch["items"].update(IMAGE_FORMAT)


#: Media types an uploaded image may have (OpenAI's multipart endpoints).
IMAGE_MEDIA_TYPES = "image/png, image/jpeg, image/webp"

#: 64x64 RGB PNG, base64 (A1111's form).
EXAMPLE_IMAGE_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAIAAAAlC+aJAAAA00lEQVR42u3ZwQ2DQAxEUbBSBycqoP8COKUCikkB4QD2mMXy32OkDH5rK2Fh3pdl"
    "qrxsKr4AAAAAAAAAAAAAABi3Pkm523H8f/hdV/mFZu2B5rTuVIkMcLF0OcNGVe/+lrgDkiIirbDh1QdzGv8PqLY/mGZvqD6S2XKEMrbfnczNXDlA"
    "3vz48hkhAAAAFANknGsj+YxQRUDeFDmSu45QRhN8mfbw9eRpvX+FVE2I5GgeLboPCfEtsIFbKGkgT6fvSAq8H+BeCAAAAAAAAAAAAEAnwA8lMUGb"
    "bGM9aQAAAABJRU5ErkJggg=="
)
#: The same image as a data: URI (the native and OpenAI dialects' usual form).
EXAMPLE_IMAGE = f"data:image/png;base64,{EXAMPLE_IMAGE_BASE64}"
#: 64x64 greyscale PNG mask: white (repaint) in the middle, black (keep) around it.
EXAMPLE_MASK_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAAAAACPAi4CAAAAMklEQVR42u3OIQ4AMAgEQcr//9yKOhzBkRl5CRsiAL5Th9u8yOkHAgICAgICAusC"
    "wBoPPAEBQiMZ9wQAAAAASUVORK5CYII="
)
