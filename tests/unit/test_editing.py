"""imagegen.editing: inpainting/outpainting masks, seamless tiling and tiled img2img, against hand-computed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen.editing.masks import (
    InpaintFill,
    _bilinear_upscale,
    _block_mean,
    _gaussian,
    binary_mask,
    blur_mask,
    composite,
    crop_region,
    expand_to_aspect,
    fill_masked,
    mask_bounds,
    outpaint_canvas,
    paste_region,
)
from imagegen.editing.tiles import combine_tiles, split_tiles
from imagegen.editing.tiling import seam_score, seamless


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")


def _rect_mask(width: int, height: int, box: tuple[int, int, int, int], value: int = 255) -> Image.Image:
    mask = np.zeros((height, width), dtype=np.uint8)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = value
    return Image.fromarray(mask, mode="L")


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int32)


# --- InpaintFill ---------------------------------------------------------------------------------------------------


def test_inpaint_fill_from_a1111_maps_the_four_api_integers_in_order():
    assert [InpaintFill.from_a1111(i) for i in range(4)] == [
        InpaintFill.FILL,
        InpaintFill.ORIGINAL,
        InpaintFill.LATENT_NOISE,
        InpaintFill.LATENT_NOTHING,
    ]
    assert InpaintFill("latent noise") is InpaintFill.LATENT_NOISE


@pytest.mark.parametrize("value", [-1, 4, True])
def test_inpaint_fill_from_a1111_rejects_other_values(value):
    with pytest.raises(ValueError, match="inpainting_fill"):
        InpaintFill.from_a1111(value)


def test_inpaint_fill_from_a1111_error_names_the_valid_range():
    with pytest.raises(ValueError, match=r"integer from 0 to 3, got 7"):
        InpaintFill.from_a1111(7)


# --- binary_mask ---------------------------------------------------------------------------------------------------


def test_binary_mask_thresholds_above_128():
    gray = Image.fromarray(np.array([[0, 128, 129, 255]], dtype=np.uint8), mode="L")
    result = binary_mask(gray)
    assert result.mode == "L"
    assert _pixels(result).tolist() == [[0, 0, 255, 255]]
    assert _pixels(binary_mask(gray, invert=True)).tolist() == [[255, 255, 0, 0]]


def test_binary_mask_reads_rgb_through_grayscale():
    rgb = Image.fromarray(np.array([[[255, 255, 255], [40, 40, 40], [255, 0, 0]]], dtype=np.uint8), mode="RGB")
    # Pure red is 76 in ITU-R 601 luma: below the threshold.
    assert _pixels(binary_mask(rgb)).tolist() == [[255, 0, 0]]


def test_binary_mask_uses_alpha_of_a_transparent_rgba_mask():
    rgba = np.zeros((1, 4, 4), dtype=np.uint8)
    # Black opaque strokes on a white transparent layer: the alpha decides, not the colour.
    rgba[0, :, :3] = [[0, 0, 0], [0, 0, 0], [255, 255, 255], [255, 255, 255]]
    rgba[0, :, 3] = [255, 129, 128, 0]
    result = binary_mask(Image.fromarray(rgba, mode="RGBA"))
    assert _pixels(result).tolist() == [[255, 255, 0, 0]]


def test_binary_mask_uses_grayscale_of_an_opaque_rgba_mask():
    rgba = np.full((1, 2, 4), 255, dtype=np.uint8)
    rgba[0, 1, :3] = 0
    assert _pixels(binary_mask(Image.fromarray(rgba, mode="RGBA"))).tolist() == [[255, 0]]


def test_binary_mask_uses_the_transparency_of_a_palette_mask():
    # A palette mask (a GIF or palette PNG) whose transparent entry is white: as for RGBA, transparency decides.
    mask = Image.fromarray(np.array([[0, 1, 1]], dtype=np.uint8), mode="P")
    mask.putpalette([255, 255, 255, 0, 0, 0])
    mask.info["transparency"] = 0
    assert _pixels(binary_mask(mask)).tolist() == [[0, 255, 255]]
    assert _pixels(binary_mask(mask, invert=True)).tolist() == [[255, 0, 0]]
    # A grayscale PNG with a transparent level (tRNS): only pixels of that level are transparent.
    gray = Image.fromarray(np.array([[0, 200, 100]], dtype=np.uint8), mode="L")
    gray.info["transparency"] = 0
    assert _pixels(binary_mask(gray)).tolist() == [[0, 255, 255]]


# --- blur_mask -----------------------------------------------------------------------------------------------------


def _dot(size: int = 21) -> Image.Image:
    return _rect_mask(size, size, (size // 2, size // 2, size // 2 + 1, size // 2 + 1))


def test_blur_mask_x_spreads_horizontally_only():
    blurred = _pixels(blur_mask(_dot(), 3, 0))
    assert blurred[10, 7] > 0
    assert blurred[10, 13] > 0
    assert blurred[10, 10] < 255
    assert (np.delete(blurred, 10, axis=0) == 0).all()


def test_blur_mask_y_spreads_vertically_only():
    blurred = _pixels(blur_mask(_dot(), 0, 3))
    assert blurred[7, 10] > 0
    assert blurred[13, 10] > 0
    assert (np.delete(blurred, 10, axis=1) == 0).all()


def test_blur_mask_zero_is_identity_and_negative_is_refused():
    dot = _dot()
    assert blur_mask(dot, 0, 0).tobytes() == dot.tobytes()
    with pytest.raises(ValueError, match="blur"):
        blur_mask(dot, -1, 0)


@pytest.mark.parametrize(("blur_x", "blur_y"), [(1, 0), (0, 1)])
def test_blur_mask_of_one_on_a_single_axis_still_blurs(blur_x, blur_y):
    blurred = _pixels(blur_mask(_dot(), blur_x, blur_y))
    assert blurred[10, 10] < 255
    assert blurred[10 + blur_y, 10 + blur_x] > 0


def test_blur_mask_returns_a_grayscale_mask_for_any_input_mode():
    rgb = _dot().convert("RGB")
    for blur in ((0, 0), (2, 2)):
        result = blur_mask(rgb, *blur)
        assert result.mode == "L"
        assert result.tobytes() == blur_mask(_dot(), *blur).tobytes()


# --- fill_masked ---------------------------------------------------------------------------------------------------


def test_fill_masked_keeps_unmasked_pixels_exactly():
    image = _noise(48, 40)
    mask = _rect_mask(48, 40, (10, 12, 30, 28))
    filled = _pixels(fill_masked(image, mask))
    outside = _pixels(mask) == 0
    assert (filled[outside] == _pixels(image)[outside]).all()
    assert not (filled[~outside] == _pixels(image)[~outside]).all()


def test_fill_masked_paints_a_hole_with_the_surrounding_colour():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[:, :] = (220, 20, 20)
    image[20:44, 20:44] = (0, 255, 0)  # the content to be replaced
    filled = _pixels(fill_masked(Image.fromarray(image, mode="RGB"), _rect_mask(64, 64, (20, 20, 44, 44))))
    hole = filled[20:44, 20:44]
    assert (np.abs(hole - [220, 20, 20]) <= 2).all()


def test_fill_masked_takes_the_nearer_colour():
    image = np.zeros((32, 96, 3), dtype=np.uint8)
    image[:, :48] = (255, 0, 0)
    image[:, 48:] = (0, 0, 255)
    filled = _pixels(fill_masked(Image.fromarray(image, mode="RGB"), _rect_mask(96, 32, (8, 8, 24, 24))))
    hole = filled[8:24, 8:24]
    assert (hole[..., 0] > 3 * hole[..., 2]).all()


def test_fill_masked_requires_matching_sizes():
    with pytest.raises(ValueError, match="mask must be"):
        fill_masked(_noise(8, 8), _rect_mask(8, 9, (0, 0, 1, 1)))


def test_fill_masked_reads_any_image_and_mask_mode():
    image = _noise(40, 32)
    mask = _rect_mask(40, 32, (8, 8, 24, 20))
    expected = fill_masked(image, mask)
    result = fill_masked(image.convert("RGBA"), mask.convert("RGB"))
    assert result.mode == "RGB"
    assert result.tobytes() == expected.tobytes()


def test_fill_masked_of_a_fully_masked_image_is_black_as_in_a1111():
    # Nothing is known to fill from: A1111's composite of fully transparent layers is black.
    for size in ((8, 8), (96, 64)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no 0/0 on the way
            filled = fill_masked(_noise(*size), Image.new("L", size, 255))
        assert filled.mode == "RGB"
        assert filled.getextrema() == ((0, 0), (0, 0), (0, 0))


# --- crop boxes ----------------------------------------------------------------------------------------------------


def test_mask_bounds_is_the_non_zero_bbox_or_none():
    assert mask_bounds(_rect_mask(100, 80, (10, 20, 30, 40), value=1)) == (10, 20, 30, 40)
    assert mask_bounds(Image.new("L", (10, 10))) is None


def test_mask_bounds_reads_an_opaque_rgba_mask_by_its_brightness():
    # An opaque RGBA mask (a white stroke on black, saved with an alpha channel): its alpha is non-zero everywhere.
    mask = _rect_mask(40, 30, (5, 6, 15, 20)).convert("RGBA")
    assert mask_bounds(mask) == (5, 6, 15, 20)


def test_crop_region_pads_and_clamps_to_the_image():
    mask = _rect_mask(100, 80, (10, 20, 30, 40))
    assert crop_region(mask, 0) == (10, 20, 30, 40)
    assert crop_region(mask, 5) == (5, 15, 35, 45)
    assert crop_region(mask, 50) == (0, 0, 80, 80)
    with pytest.raises(ValueError, match="empty"):
        crop_region(Image.new("L", (10, 10)), 4)
    with pytest.raises(ValueError, match="padding"):
        crop_region(mask, -1)


@pytest.mark.parametrize(
    ("box", "size", "image_size", "expected"),
    [
        # A1111's docstring example: a 128x32 region processed at 512x512 becomes 128x128, grown evenly.
        ((100, 200, 228, 232), (512, 512), (1024, 1024), (100, 152, 228, 280)),
        # Tall box: grows in width.
        ((100, 100, 132, 228), (512, 512), (1024, 1024), (52, 100, 180, 228)),
        # Past the top: shifted down, size kept.
        ((0, 0, 128, 32), (512, 512), (1024, 1024), (0, 0, 128, 128)),
        # Past the bottom: 128x24 grows by 104 to (948, 1076), shifted up by 52.
        ((10, 1000, 138, 1024), (512, 512), (1024, 1024), (10, 896, 138, 1024)),
        # Past the left edge at a 3:2 processing size.
        ((0, 0, 100, 100), (768, 512), (1000, 1000), (0, 0, 150, 100)),
        # Odd growth: the extra pixel goes to the far side (100x33 at 1:1 grows by 67: 33 above, 34 below).
        ((0, 500, 100, 533), (512, 512), (1000, 1000), (0, 467, 100, 567)),
        # The image is too short for the ratio: clamped to it.
        ((0, 40, 200, 60), (512, 512), (200, 100), (0, 0, 200, 100)),
        # Already the right ratio: unchanged.
        ((8, 8, 72, 40), (1024, 512), (100, 100), (8, 8, 72, 40)),
    ],
)
def test_expand_to_aspect(box, size, image_size, expected):
    assert expand_to_aspect(box, *size, *image_size) == expected


def test_expand_to_aspect_rejects_a_box_outside_the_image():
    with pytest.raises(ValueError, match="box"):
        expand_to_aspect((0, 0, 20, 20), 512, 512, 10, 10)


@pytest.mark.parametrize(
    ("box", "size", "expected"),
    [
        # A1111: desired width 100 * 640 / 480 = 133.33, int() -> grows by 33: 16 left, 17 right.
        ((100, 100, 200, 200), (640, 480), (84, 100, 217, 200)),
        # desired height 100 / (480 / 640) = 133.33 -> grows by 33: 16 above, 17 below.
        ((100, 100, 200, 200), (480, 640), (100, 84, 200, 217)),
    ],
)
def test_expand_to_aspect_truncates_a_fractional_growth_like_a1111(box, size, expected):
    result = expand_to_aspect(box, *size, 1000, 1000)
    assert result == expected
    assert all(type(v) is int for v in result)


def test_expand_to_aspect_accepts_the_smallest_processing_size_and_refuses_zero():
    assert expand_to_aspect((10, 10, 20, 20), 1, 2, 100, 100) == (10, 5, 20, 25)
    assert expand_to_aspect((10, 10, 20, 20), 2, 1, 100, 100) == (5, 10, 25, 20)
    for size in ((0, 512), (512, 0)):
        with pytest.raises(ValueError, match="width and height must be positive"):
            expand_to_aspect((10, 10, 20, 20), *size, 100, 100)


@pytest.mark.parametrize("box", [(0, 0, 10, 20), (5, 0, 5, 8), (0, 4, 8, 4)])
def test_expand_to_aspect_refuses_a_box_outside_on_one_axis_or_empty(box):
    # (0, 0, 10, 20) fits across but not down a 100x10 image; the others are empty.
    with pytest.raises(ValueError, match="box must be"):
        expand_to_aspect(box, 512, 512, 100, 10)


# --- composite and paste_region --------------------------------------------------------------------------------------


def test_composite_is_exact_outside_and_inside_and_linear_between():
    original, generated = _noise(32, 16, seed=1), _noise(32, 16, seed=2)
    mask = np.zeros((16, 32), dtype=np.uint8)
    mask[:, 8:16] = 255
    mask[:, 16:24] = 51  # 20 %
    result = _pixels(composite(original, generated, Image.fromarray(mask, mode="L")))
    o, g = _pixels(original), _pixels(generated)
    assert (result[:, :8] == o[:, :8]).all()
    assert (result[:, 24:] == o[:, 24:]).all()
    assert (result[:, 8:16] == g[:, 8:16]).all()
    expected = o[:, 16:24] * 0.8 + g[:, 16:24] * 0.2
    assert np.abs(result[:, 16:24] - expected).max() <= 0.5 + 1e-9


def test_composite_requires_equal_sizes():
    with pytest.raises(ValueError, match="generated must be"):
        composite(_noise(8, 8), _noise(8, 7), Image.new("L", (8, 8)))


def test_paste_region_resizes_the_crop_into_the_box_and_keeps_the_rest():
    original = _noise(64, 64)
    box = (16, 8, 48, 40)
    # The crop comes back at the processing size (2x the box here), solid blue.
    generated_crop = Image.new("RGB", (64, 64), (0, 0, 255))
    mask = _rect_mask(64, 64, (20, 12, 44, 36))
    result = _pixels(paste_region(original, generated_crop, box, mask))
    inside = _pixels(mask) == 255
    assert (result[inside] == [0, 0, 255]).all()
    assert (result[~inside] == _pixels(original)[~inside]).all()


def test_paste_region_blends_through_a_blurred_mask():
    original = Image.new("RGB", (32, 32), (0, 0, 0))
    generated_crop = Image.new("RGB", (16, 16), (200, 200, 200))
    mask = blur_mask(_rect_mask(32, 32, (12, 12, 20, 20)), 2, 2)
    box = (4, 4, 28, 28)
    bounds = mask_bounds(mask)
    assert bounds is not None
    assert bounds[:2] >= box[:2]
    assert bounds[2:] <= box[2:]
    result = _pixels(paste_region(original, generated_crop, box, mask))
    expected = np.rint(200 * _pixels(mask) / 255)
    assert np.abs(result[..., 0] - expected).max() <= 1


def test_paste_region_rejects_a_box_outside_the_image():
    with pytest.raises(ValueError, match="box"):
        paste_region(_noise(16, 16), _noise(8, 8), (8, 8, 24, 24), Image.new("L", (16, 16)))


def test_composite_reads_any_image_and_mask_mode():
    original, generated = _noise(24, 16, seed=1), _noise(24, 16, seed=2)
    mask = _rect_mask(24, 16, (4, 4, 12, 12), value=200)
    expected = composite(original, generated, mask)
    result = composite(original.convert("RGBA"), generated.convert("RGBA"), mask.convert("RGB"))
    assert result.mode == "RGB"
    assert result.tobytes() == expected.tobytes()


def test_composite_and_paste_region_name_a_mask_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"^mask must be the image's size 8x8, got 8x7"):
        composite(_noise(8, 8), _noise(8, 8), Image.new("L", (8, 7)))
    with pytest.raises(ValueError, match=r"^mask must be the image's size 8x8, got 7x8"):
        paste_region(_noise(8, 8), _noise(4, 4), (0, 0, 4, 4), Image.new("L", (7, 8)))


def test_paste_region_puts_the_lanczos_resized_crop_in_the_box():
    original = _noise(48, 32, seed=1)
    crop = _noise(64, 48, seed=2)  # generated at 2x the box
    box = (8, 4, 40, 28)
    result = paste_region(original, crop, box, _rect_mask(48, 32, box))
    expected = crop.resize((32, 24), Image.Resampling.LANCZOS)
    assert result.crop(box).tobytes() == expected.tobytes()


def test_paste_region_accepts_the_whole_image_as_the_box():
    original, crop = _noise(16, 12, seed=1), _noise(16, 12, seed=2)
    result = paste_region(original, crop, (0, 0, 16, 12), Image.new("L", (16, 12), 255))
    assert result.tobytes() == crop.tobytes()


def test_paste_region_returns_rgb_with_the_crops_colours_for_any_mode():
    original = _noise(32, 32, seed=1)
    crop = Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 32, 4), dtype=np.uint8), mode="RGBA")
    box, mask = (8, 8, 24, 24), _rect_mask(32, 32, (8, 8, 24, 24))
    # The alpha of a generated crop is dropped before resizing (as A1111's RGB images never have one).
    expected = paste_region(original, crop.convert("RGB"), box, mask)
    assert paste_region(original, crop, box, mask).tobytes() == expected.tobytes()
    # A palette crop is resized by its colours with Lanczos too, not by its palette indices.
    palette_crop = crop.convert("RGB").convert("P")
    palette_expected = paste_region(original, palette_crop.convert("RGB"), box, mask)
    assert paste_region(original, palette_crop, box, mask).tobytes() == palette_expected.tobytes()
    # A grayscale original still takes the crop's colours.
    gray_result = paste_region(original.convert("L"), crop.convert("RGB"), box, mask)
    assert gray_result.mode == "RGB"
    assert gray_result.crop(box).tobytes() == expected.crop(box).tobytes()


@pytest.mark.parametrize("box", [(0, 8, 16, 24), (4, 4, 4, 8), (4, 4, 8, 4)])
def test_paste_region_refuses_a_box_outside_on_one_axis_or_empty(box):
    with pytest.raises(ValueError, match="box must be"):
        paste_region(_noise(16, 16), _noise(8, 8), box, Image.new("L", (16, 16)))


# --- outpaint_canvas -----------------------------------------------------------------------------------------------


def test_outpaint_canvas_places_the_image_and_masks_the_new_area():
    image = np.zeros((24, 32, 3), dtype=np.uint8)
    image[:, :16] = (255, 0, 0)
    image[:, 16:] = (0, 0, 255)
    canvas, mask = outpaint_canvas(Image.fromarray(image, mode="RGB"), left=8, right=16, top=4, bottom=12)
    assert canvas.size == mask.size == (32 + 8 + 16, 24 + 4 + 12)
    assert (canvas.mode, mask.mode) == ("RGB", "L")
    pixels, mask_pixels = _pixels(canvas), _pixels(mask)
    assert (pixels[4:28, 8:40] == image).all()
    expected_mask = np.full(mask_pixels.shape, 255)
    expected_mask[4:28, 8:40] = 0
    assert (mask_pixels == expected_mask).all()
    # The margins continue the nearest edge colour.
    left_margin, right_margin = pixels[4:28, :8], pixels[4:28, 40:]
    assert (left_margin[..., 0] > 200).all()
    assert (left_margin[..., 2] < 55).all()
    assert (right_margin[..., 2] > 200).all()
    assert (right_margin[..., 0] < 55).all()
    top_left_of_top_margin = pixels[:4, 8:16]
    assert (top_left_of_top_margin[..., 0] > top_left_of_top_margin[..., 2]).all()


def test_outpaint_canvas_without_margins_and_refusing_negative_ones():
    image = _noise(8, 8)
    canvas, mask = outpaint_canvas(image, 0, 0, 0, 0)
    assert canvas.tobytes() == image.tobytes()
    assert mask.getbbox() is None
    with pytest.raises(ValueError, match="margins"):
        outpaint_canvas(image, -1, 0, 0, 0)


@pytest.mark.parametrize("side", range(4))
def test_outpaint_canvas_refuses_each_negative_margin(side):
    margins = [0, 0, 0, 0]
    margins[side] = -1
    with pytest.raises(ValueError, match="margins must be non-negative"):
        outpaint_canvas(_noise(8, 8), *margins)


def test_outpaint_canvas_returns_rgb_for_any_image_mode():
    image = _noise(12, 10)
    expected, expected_mask = outpaint_canvas(image, 4, 2, 3, 5)
    for mode in ("RGBA", "P"):
        canvas, mask = outpaint_canvas(image.convert(mode), 4, 2, 3, 5)
        assert canvas.mode == "RGB"
        assert mask.tobytes() == expected_mask.tobytes()
    canvas, _ = outpaint_canvas(image.convert("RGBA"), 4, 2, 3, 5)
    assert canvas.tobytes() == expected.tobytes()


def test_outpaint_canvas_of_a_flat_image_is_flat():
    canvas, _ = outpaint_canvas(Image.new("RGB", (10, 6), (90, 140, 200)), 5, 7, 3, 9)
    assert canvas.getextrema() == ((90, 90), (140, 140), (200, 200))


def _outpaint_noise() -> Image.Image:
    """Mid-range noise, so a blend that overshoots its inputs shows instead of being clipped."""
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(60, 191, (20, 24, 3), dtype=np.uint8), mode="RGB")


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom"])
def test_outpaint_canvas_blurs_a_single_margin_more_with_distance(side):
    image = _outpaint_noise()
    margins = {"left": 0, "right": 0, "top": 0, "bottom": 0, side: 16}
    canvas, _ = outpaint_canvas(image, **margins)
    pixels, source = _pixels(canvas), _pixels(image)
    # Orient so the margin lies below the image: row 0 is the image's edge line, then the margin outwards.
    turns = {"bottom": 0, "left": 1, "top": 2, "right": 3}[side]
    pixels, source = np.rot90(pixels, turns), np.rot90(source, turns)
    edge, next_to_edge, outermost = source[-1], pixels[len(source)], pixels[-1]
    assert pixels.min() >= source.min()
    assert pixels.max() <= source.max()
    # One pixel out (1/16 of the way) the edge line is nearly kept; at the far end only its blur is left.
    assert np.abs(next_to_edge - edge).mean() < 4
    assert np.diff(outermost, axis=0).std() < 0.3 * np.diff(edge, axis=0).std()


def test_outpaint_canvas_beyond_the_widest_margin_is_the_blurred_stretched_image():
    image = _outpaint_noise()
    left, right, top, bottom = 6, 10, 16, 3
    canvas, _ = outpaint_canvas(image, left, right, top, bottom)
    stretched = np.pad(_pixels(image), ((top, bottom), (left, right), (0, 0)), mode="edge").astype(np.float32)
    # Every pixel at least 16 (the widest margin) from the image is fully blurred, with a sigma of a quarter of it.
    blurred = np.clip(np.rint(_gaussian(stretched, 16 / 4)), 0, 255)
    rows = np.arange(canvas.height)[:, None]
    cols = np.arange(canvas.width)[None, :]
    dy = np.maximum(np.maximum(top - rows, rows - (top + image.height - 1)), 0)
    dx = np.maximum(np.maximum(left - cols, cols - (left + image.width - 1)), 0)
    far = np.hypot(dy, dx) >= 16
    assert far.sum() > 30
    assert (_pixels(canvas)[far] == blurred[far]).all()


# --- the blur helpers behind fill_masked and outpaint_canvas -------------------------------------------------------


def _impulse_response(sigma: float, shape: tuple[int, int] = (81, 97), at: tuple[int, int] = (37, 45)):
    """Total weight, centre (row, col) and variance (rows, cols) of _gaussian's response to one unit pixel."""
    impulse = np.zeros((*shape, 1), dtype=np.float32)
    impulse[at] = 1
    response = _gaussian(impulse, sigma)[..., 0].astype(np.float64)
    total = response.sum()
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    centre = ((response * rows).sum() / total, (response * cols).sum() / total)
    variance = (
        (response * (rows - centre[0]) ** 2).sum() / total,
        (response * (cols - centre[1]) ** 2).sum() / total,
    )
    return total, centre, variance


@pytest.mark.parametrize("sigma", [1, 2, 3, 3.95, 4, 5.4, 6.2, 7.3, 10])
def test_gaussian_blur_has_the_variance_of_its_sigma_on_both_axes(sigma):
    total, centre, variance = _impulse_response(sigma)
    assert total == pytest.approx(1, abs=1e-4)
    assert centre == pytest.approx((37, 45), abs=1e-3)
    # Three box blurs of radius r have variance r(r + 1): the whole-pixel radius misses sigma² by at most sigma + 1/4.
    for axis_variance in variance:
        assert abs(axis_variance - sigma**2) <= sigma + 0.25


@pytest.mark.parametrize("sigma", [16, 40])
def test_gaussian_wide_blur_on_a_reduced_copy_keeps_its_centre_and_spread(sigma):
    total, centre, variance = _impulse_response(sigma, shape=(301, 331), at=(149, 171))
    assert total == pytest.approx(1, abs=1e-3)
    # A detail finer than the reduction's blocks (sigma // 8 pixels) moves at most to its block's centre.
    assert centre == pytest.approx((149, 171), abs=(sigma // 8) / 2)
    for axis_variance in variance:
        assert axis_variance == pytest.approx(sigma**2, rel=0.2)


@pytest.mark.parametrize("sigma", [3, 16, 24, 64, 256])
def test_gaussian_keeps_a_flat_image_flat_at_any_size(sigma):
    # Sizes that are no multiple of the reduction step: its partial blocks repeat the edge, they add no black.
    flat = np.full((37, 53, 2), 200, dtype=np.float32)
    blurred = _gaussian(flat, sigma)
    assert blurred.shape == flat.shape
    assert np.abs(blurred - 200).max() < 1e-3


def test_block_mean_completes_partial_blocks_with_the_edge():
    array = np.arange(7 * 5, dtype=np.float32).reshape(7, 5, 1)
    means = _block_mean(array, 3)
    assert means.shape == (3, 2, 1)
    padded = np.pad(array, ((0, 2), (0, 1), (0, 0)), mode="edge")
    expected = [[padded[r : r + 3, c : c + 3].mean() for c in (0, 3)] for r in (0, 3, 6)]
    assert means[..., 0] == pytest.approx(np.array(expected))


@pytest.mark.parametrize(("step", "height", "width"), [(4, 12, 20), (8, 21, 35), (3, 6, 13)])
def test_bilinear_upscale_matches_torch_half_pixel_bilinear(step, height, width):
    rng = np.random.default_rng(step)
    small = rng.random((-(-height // step), -(-width // step), 2)).astype(np.float32)
    result = _bilinear_upscale(small, step, height, width)
    assert result.shape == (height, width, 2)
    tensor = torch.from_numpy(small).permute(2, 0, 1)[None]
    reference = torch.nn.functional.interpolate(tensor, scale_factor=step, mode="bilinear", align_corners=False)
    expected = reference[0].permute(1, 2, 0).numpy()[:height, :width]
    assert np.abs(result - expected).max() < 1e-5


# --- seamless ------------------------------------------------------------------------------------------------------


class _SubclassedConv(torch.nn.Conv2d):
    """Like diffusers' LoRACompatibleConv: a Conv2d subclass that must be caught too."""


def _conv_stack() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.SiLU(),
        _SubclassedConv(8, 8, 5, padding=2),
        torch.nn.SiLU(),
        torch.nn.Conv2d(8, 3, 3, padding=1, padding_mode="reflect"),
        torch.nn.Conv2d(3, 3, 1),  # no padding: left alone
    )


def _padding_modes(module: torch.nn.Module) -> list[str]:
    return [layer.padding_mode for layer in module.modules() if isinstance(layer, torch.nn.Conv2d)]


def _roll_gap(forward, x: torch.Tensor, shift: int, scale: int = 1) -> float:
    """max |f(roll(x)) - roll(f(x))|: zero for a translation-equivariant (seamless) f."""
    with torch.no_grad():
        rolled_input = forward(torch.roll(x, shifts=(shift, shift), dims=(-2, -1)))
        rolled_output = torch.roll(forward(x), shifts=(shift * scale, shift * scale), dims=(-2, -1))
    return float((rolled_input - rolled_output).abs().max())


def test_seamless_makes_convolutions_circular_and_restores_them():
    stack = _conv_stack()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert _roll_gap(stack, x, 5) > 1e-2
    with seamless(stack):
        assert _padding_modes(stack) == ["circular", "circular", "circular", "zeros"]
        assert _roll_gap(stack, x, 5) < 1e-5
    assert _padding_modes(stack) == ["zeros", "zeros", "reflect", "zeros"]
    assert _roll_gap(stack, x, 5) > 1e-2


def test_seamless_restores_after_an_exception():
    stack = _conv_stack()
    with pytest.raises(RuntimeError, match="boom"), seamless(stack):
        raise RuntimeError("boom")
    assert _padding_modes(stack) == ["zeros", "zeros", "reflect", "zeros"]


def test_seamless_handles_a_module_passed_twice_and_nested_modules_once():
    stack = _conv_stack()
    with seamless(stack, stack[4], stack):
        assert _padding_modes(stack) == ["circular", "circular", "circular", "zeros"]
        with seamless(stack):  # nested use restores the outer state, not the original
            pass
        assert _padding_modes(stack) == ["circular", "circular", "circular", "zeros"]
    assert _padding_modes(stack) == ["zeros", "zeros", "reflect", "zeros"]


def test_seamless_on_a_tiny_vae_decoder_and_unet():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    ).eval()
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    ).eval()
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 5, 32, generator=generator)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z).sample

    def denoise(z: torch.Tensor) -> torch.Tensor:
        return unet(z, 10, encoder_hidden_states=context).sample

    with torch.no_grad():
        before = (decode(latents), denoise(latents))
    # One up/downsampling each: a latent shift of 1 is 2 pixels; the UNet's 2x downsampling needs even shifts.
    assert _roll_gap(decode, latents, 1, scale=2) > 1e-3
    assert _roll_gap(denoise, latents, 2) > 1e-3
    with seamless(unet, vae, vae):
        assert _roll_gap(decode, latents, 1, scale=2) < 1e-4
        assert _roll_gap(denoise, latents, 2) < 1e-4
    with torch.no_grad():
        after = (decode(latents), denoise(latents))
    assert torch.equal(before[0], after[0])
    assert torch.equal(before[1], after[1])


# --- seam_score ----------------------------------------------------------------------------------------------------


def _periodic_texture(width: int, height: int) -> Image.Image:
    """A diagonal sine wave, 2 periods across and 3 down: a seamless tile.

    Diagonal, so every column and row (the seams included) sweeps whole periods of it, like the interior does.
    """
    x = np.arange(width)[None, :] / width
    y = np.arange(height)[:, None] / height
    level = 127.5 + 120 * np.sin(2 * np.pi * (2 * x + 3 * y))
    return Image.fromarray(np.rint(level).astype(np.uint8), mode="L").convert("RGB")


def test_seam_score_is_about_one_for_a_periodic_texture():
    score = seam_score(_periodic_texture(64, 64))
    assert 0.9 < score < 1.1
    # Shifting a tile around the torus keeps it seamless.
    shifted = Image.fromarray(np.roll(np.asarray(_periodic_texture(64, 48)), (7, 13), axis=(0, 1)))
    assert 0.9 < seam_score(shifted) < 1.1


def test_seam_score_is_large_for_a_gradient():
    gradient = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    assert seam_score(Image.fromarray(gradient, mode="L")) > 3
    # Half a period across (16 of its 32 pixels) does not tile.
    assert seam_score(_periodic_texture(64, 64).crop((0, 0, 16, 64))) > 3


def test_seam_score_of_a_flat_image_is_one():
    assert seam_score(Image.new("RGB", (8, 8), (10, 20, 30))) == 1.0


# --- tiles ---------------------------------------------------------------------------------------------------------


def test_split_tiles_counts_and_positions_for_uneven_sizes():
    grid = split_tiles(_noise(100, 130), 64, 64, 16)
    # cols = ceil((100 - 16) / 48) = 2, spread over 100 - 64 = 36; rows = ceil(114 / 48) = 3, step 66 / 2 = 33.
    assert (grid.cols, grid.rows) == (2, 3)
    assert [(t.x, t.y) for t in grid.tiles] == [(0, 0), (36, 0), (0, 33), (36, 33), (0, 66), (36, 66)]
    assert [(t.row, t.col) for t in grid.tiles[:3]] == [(0, 0), (0, 1), (1, 0)]
    assert all(t.image.size == (64, 64) for t in grid.tiles)
    assert (grid.width, grid.height, grid.tile_w, grid.tile_h, grid.overlap) == (100, 130, 64, 64, 16)


@pytest.mark.parametrize(
    ("width", "tile", "overlap", "starts"),
    [
        (64, 64, 8, [0]),
        (65, 64, 8, [0, 1]),
        # ceil((512 - 64) / 128) = 4 tiles over 512 - 192 = 320: int(i * 106.67).
        (512, 192, 64, [0, 106, 213, 320]),
        # ceil(200 / 64) = 4 tiles over 136: int(i * 45.33).
        (200, 64, 0, [0, 45, 90, 136]),
    ],
)
def test_split_tiles_spreads_tiles_evenly(width, tile, overlap, starts):
    grid = split_tiles(_noise(width, tile), tile, tile, overlap)
    assert [t.x for t in grid.tiles] == starts


def test_split_then_combine_of_unchanged_tiles_is_the_image():
    image = _noise(100, 130)
    grid = split_tiles(image, 64, 48, 16)
    combined = combine_tiles(grid, [t.image for t in grid.tiles])
    assert combined.size == image.size
    assert combined.tobytes() == image.tobytes()


def test_two_by_two_grid_at_overlap_zero_is_the_plain_crops():
    image = _noise(128, 96)
    grid = split_tiles(image, 64, 48, 0)
    assert [(t.x, t.y) for t in grid.tiles] == [(0, 0), (64, 0), (0, 48), (64, 48)]
    for tile in grid.tiles:
        assert tile.image.tobytes() == image.crop((tile.x, tile.y, tile.x + 64, tile.y + 48)).tobytes()
    solid = [Image.new("RGB", (64, 48), (i * 60, 0, 0)) for i in range(4)]
    combined = _pixels(combine_tiles(grid, solid))[..., 0]
    expected = np.zeros((96, 128))
    expected[:48, 64:], expected[48:, :64], expected[48:, 64:] = 60, 120, 180
    assert (combined == expected).all()


def test_combine_tiles_blends_the_overlap_linearly_across_columns():
    grid = split_tiles(_noise(112, 64), 64, 64, 16)
    assert [t.x for t in grid.tiles] == [0, 48]
    combined = _pixels(combine_tiles(grid, [Image.new("RGB", (64, 64), v) for v in ((0, 0, 0), (160, 160, 160))]))
    row = combined[10, :, 0]
    assert (row[:48] == 0).all()
    assert row[48:64].tolist() == [10 * i for i in range(16)]
    assert (row[64:] == 160).all()


def test_combine_tiles_blends_the_overlap_linearly_across_rows():
    grid = split_tiles(_noise(64, 112), 64, 64, 16)
    assert [t.y for t in grid.tiles] == [0, 48]
    combined = _pixels(combine_tiles(grid, [Image.new("RGB", (64, 64), v) for v in ((160, 0, 0), (0, 0, 0))]))
    column = combined[:, 5, 0]
    assert (column[:48] == 160).all()
    assert column[48:64].tolist() == [160 - 10 * i for i in range(16)]
    assert (column[64:] == 0).all()


def test_tiles_refuse_bad_arguments():
    image = _noise(64, 64)
    with pytest.raises(ValueError, match="overlap"):
        split_tiles(image, 32, 32, 32)
    with pytest.raises(ValueError, match="at least one tile"):
        split_tiles(image, 65, 32, 0)
    grid = split_tiles(image, 32, 32, 0)
    with pytest.raises(ValueError, match="one image per tile"):
        combine_tiles(grid, [t.image for t in grid.tiles[:3]])
    with pytest.raises(ValueError, match=r"images\[1\] must be the tile size"):
        combine_tiles(grid, [t.image for t in grid.tiles[:1]] + [Image.new("RGB", (32, 31))] * 3)


def test_split_tiles_refuses_an_empty_tile_size_and_accepts_one_pixel():
    image = _noise(3, 2)
    for size in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match="tile size must be positive"):
            split_tiles(image, *size, 0)
    grid = split_tiles(image, 1, 1, 0)
    assert (grid.cols, grid.rows) == (3, 2)
    assert [t.image.getpixel((0, 0)) for t in grid.tiles] == [image.getpixel((t.x, t.y)) for t in grid.tiles]


def test_tiles_are_rgb_and_combine_accepts_any_mode():
    image = _noise(100, 70)
    grid = split_tiles(image.convert("RGBA"), 64, 48, 16)
    assert {t.image.mode for t in grid.tiles} == {"RGB"}
    combined = combine_tiles(grid, [t.image.convert("RGBA") for t in grid.tiles])
    assert combined.mode == "RGB"
    assert combined.tobytes() == image.tobytes()
