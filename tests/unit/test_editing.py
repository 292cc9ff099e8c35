"""imagegen.editing: inpainting/outpainting masks, seamless tiling and tiled img2img, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen.editing.masks import (
    InpaintFill,
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


# --- crop boxes ----------------------------------------------------------------------------------------------------


def test_mask_bounds_is_the_non_zero_bbox_or_none():
    assert mask_bounds(_rect_mask(100, 80, (10, 20, 30, 40), value=1)) == (10, 20, 30, 40)
    assert mask_bounds(Image.new("L", (10, 10))) is None


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
