"""to_rgb: every mode a decoder yields becomes 8-bit RGB, with exact pixel values (16/32-bit scaled, alpha on white)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from PIL import Image

from imagegen.imageio import to_rgb


def row(mode: str, values: Sequence[object]) -> Image.Image:
    """A one-row image of ``mode`` holding ``values``."""
    image = Image.new(mode, (len(values), 1))
    for x, value in enumerate(values):
        image.putpixel((x, 0), value)  # type: ignore[arg-type]
    return image


def pixels(image: Image.Image) -> list[object]:
    assert image.mode == "RGB"
    return [image.getpixel((x, y)) for y in range(image.height) for x in range(image.width)]


def grey(*values: int) -> list[tuple[int, int, int]]:
    return [(v, v, v) for v in values]


def test_rgb_is_returned_as_is() -> None:
    image = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(image) is image


def test_rgb_with_a_transparent_colour_shows_white_there() -> None:
    image = row("RGB", [(1, 2, 3), (4, 5, 6)])
    image.info["transparency"] = (1, 2, 3)
    assert pixels(to_rgb(image)) == [(255, 255, 255), (4, 5, 6)]


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("1", [0, 1], grey(0, 255)),
        ("L", [0, 77, 255], grey(0, 77, 255)),
        ("CMYK", [(0, 0, 0, 0), (0, 255, 255, 0), (0, 0, 0, 255)], [(255, 255, 255), (255, 0, 0), (0, 0, 0)]),
    ],
)
def test_opaque_modes_convert_exactly(mode: str, values: list[object], expected: list[object]) -> None:
    assert pixels(to_rgb(row(mode, values))) == expected


def test_palette_without_transparency_uses_the_palette_colours() -> None:
    image = row("P", [0, 1])
    image.putpalette([10, 20, 30, 200, 100, 50])
    assert pixels(to_rgb(image)) == [(10, 20, 30), (200, 100, 50)]


def test_palette_with_a_transparent_index_shows_white_there() -> None:
    image = row("P", [0, 1])
    image.putpalette([10, 20, 30, 200, 100, 50])
    image.info["transparency"] = 0
    assert pixels(to_rgb(image)) == [(255, 255, 255), (200, 100, 50)]


def test_grey_with_a_transparent_value_shows_white_there() -> None:
    image = row("L", [10, 200])
    image.info["transparency"] = 10
    assert pixels(to_rgb(image)) == grey(255, 200)


# Alpha composited on opaque white: out = colour * a + 255 * (1 - a), so a half-transparent (128) black is 127.
@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        (
            "RGBA",
            [(255, 0, 0, 128), (0, 0, 0, 128), (0, 0, 255, 0), (0, 0, 255, 255)],
            [(255, 127, 127), *grey(127, 255), (0, 0, 255)],
        ),
        ("LA", [(100, 128), (0, 128), (0, 0), (30, 255)], grey(177, 127, 255, 30)),
        ("PA", [(0, 128), (1, 128), (1, 0), (0, 255)], [(255, 127, 127), *grey(127, 255), (255, 0, 0)]),
    ],
)
def test_alpha_is_composited_on_white(mode: str, values: list[object], expected: list[object]) -> None:
    image = row(mode, values)
    if mode == "PA":
        image.putpalette([255, 0, 0, 0, 0, 0])
    assert pixels(to_rgb(image)) == expected


# 16-bit: v * 255 / 65535 = v / 257, rounded: 128 -> 0.498 -> 0, 129 -> 0.502 -> 1, 65407 -> 254.502 -> 255.
SIXTEEN_BIT = [0, 128, 129, 257, 32768, 65278, 65407, 65535]
SIXTEEN_BIT_RGB = grey(0, 0, 1, 1, 128, 254, 255, 255)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I;16N"])
def test_sixteen_bit_grey_is_scaled_to_eight_bits(mode: str) -> None:
    assert pixels(to_rgb(row(mode, SIXTEEN_BIT))) == SIXTEEN_BIT_RGB


def test_sixteen_bit_scale_is_fixed_not_stretched_to_the_brightest_pixel() -> None:
    assert pixels(to_rgb(row("I;16", [0, 257, 514]))) == grey(0, 1, 2)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([-5, 0, 1, 2, 3], grey(0, 0, 85, 170, 255)),  # 2/3 * 255 = 170 (x256 would be 171); negatives are black
        ([0, 1], grey(0, 255)),
        ([1000, 100_000], grey(3, 255)),  # scaled to the brightest pixel, not to 65535 or 2**31
        ([0, 0], grey(0, 0)),  # all black: no division by zero
        ([-7, -1], grey(0, 0)),
    ],
    ids=["thirds", "max-one", "wide", "zero", "negative"],
)
def test_thirty_two_bit_grey_is_scaled_to_its_brightest_pixel(values: list[int], expected: list[object]) -> None:
    assert pixels(to_rgb(row("I", values))) == expected
