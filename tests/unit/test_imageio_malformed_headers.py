"""Pillow raises ValueError/SyntaxError (not OSError) for some malformed headers: they must be InvalidRequest too."""

from __future__ import annotations

import pytest

from imagegen import InvalidRequest
from imagegen.imageio import decode_image
from support.malformed_png import png, truncated_ihdr, ztxt_bomb

LIMITS = {"max_pixels": 4096 * 4096, "max_bytes": 1 << 20}


def test_the_fixtures_are_valid_apart_from_the_defect() -> None:
    # The well-formed variant decodes, so the failures below come from the defect alone.
    assert decode_image(png(), field="init_image", **LIMITS).size == (16, 16)
    assert len(ztxt_bomb()) < 10_000


@pytest.mark.parametrize("data", [ztxt_bomb(), truncated_ihdr()], ids=["ztxt-bomb", "truncated-ihdr"])
def test_value_errors_from_pillow_are_invalid_requests_naming_the_field(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as exc:
        decode_image(data, field="image", **LIMITS)
    assert exc.value.field == "image"
    assert exc.value.message == "is not a readable image (ValueError); send PNG, JPEG or WebP"
