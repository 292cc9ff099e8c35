"""The shapes world: grammar round trips, deterministic renders, and the analyser judged on its own renders."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageFilter

from imagegen_shapes.analyse import (
    CATEGORIES,
    EVAL_PROMPTS,
    aggregate,
    analyse,
    categories,
    label_components,
    preserves_layout,
    score,
)
from imagegen_shapes.world import (
    COLOUR_RGB,
    Background,
    Colour,
    ObjectSpec,
    Position,
    Scene,
    Shape,
    Size,
    caption,
    cell_centre,
    example,
    parse_prompt,
    render,
    render_array,
    render_batch,
    sample_scene,
)


def one(**kw: object) -> Scene:
    return Scene(objects=(ObjectSpec(**kw),))  # type: ignore[arg-type]


def degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian noise σ = 12/255, a slight tint, then a 1-px Gaussian blur: roughly a small model's output."""
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 12.0, (64, 64, 3)) + np.array([6.0, -5.0, 4.0])
    noisy = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    return noisy.filter(ImageFilter.GaussianBlur(1))


# ---------------------------------------------------------------------------------------------------------------
# Grammar
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a red circle", Scene(objects=(ObjectSpec(colour=Colour.RED, shape=Shape.CIRCLE),))),
        (
            "a small blue square in the top left",
            one(size=Size.SMALL, colour=Colour.BLUE, shape=Shape.SQUARE, position=Position.TOP_LEFT),
        ),
        (
            "two yellow triangles on a black background",
            Scene(
                objects=(ObjectSpec(count=2, colour=Colour.YELLOW, shape=Shape.TRIANGLE),),
                background=Background.BLACK,
            ),
        ),
        (
            "a green cross on the left and a pink circle on the right",
            Scene(
                objects=(
                    ObjectSpec(colour=Colour.GREEN, shape=Shape.CROSS, position=Position.LEFT),
                    ObjectSpec(colour=Colour.PINK, shape=Shape.CIRCLE, position=Position.RIGHT),
                )
            ),
        ),
        ("an orange square", one(colour=Colour.ORANGE, shape=Shape.SQUARE)),
        ("three big purple crosses", one(count=3, size=Size.LARGE, colour=Colour.PURPLE, shape=Shape.CROSS)),
        ("One cyan circle at the bottom.", one(colour=Colour.CYAN, shape=Shape.CIRCLE, position=Position.BOTTOM)),
        ("a pink square on a white background", one(colour=Colour.PINK, shape=Shape.SQUARE)),
    ],
)
def test_issue_examples_parse(prompt: str, expected: Scene) -> None:
    assert parse_prompt(prompt) == expected


def test_caption_uses_an_before_a_vowel_and_plural_nouns() -> None:
    assert caption(one(colour=Colour.ORANGE, shape=Shape.SQUARE)) == "an orange square"
    assert caption(one(size=Size.SMALL, colour=Colour.ORANGE, shape=Shape.SQUARE)) == "a small orange square"
    assert caption(one(count=2, colour=Colour.RED, shape=Shape.CROSS)) == "two red crosses"
    assert caption(one(count=3, size=Size.LARGE, colour=Colour.BLUE, shape=Shape.CIRCLE)) == "three large blue circles"
    scene = Scene(
        objects=(
            ObjectSpec(colour=Colour.GREEN, shape=Shape.CROSS, position=Position.LEFT),
            ObjectSpec(colour=Colour.PINK, shape=Shape.CIRCLE, position=Position.RIGHT),
        ),
        background=Background.GRAY,
    )
    assert caption(scene) == "a green cross on the left and a pink circle on the right on a gray background"


def test_caption_parse_round_trip_over_sampled_scenes() -> None:
    rng = np.random.default_rng(0)
    variants: Counter[str] = Counter()
    for _ in range(1000):
        scene = sample_scene(rng)
        assert parse_prompt(caption(scene)) == scene
        varied = caption(scene, rng)
        assert parse_prompt(varied) == scene, varied
        variants.update(word for word in ("one", "big", "white") if f" {word} " in f" {varied} ")
    # The rng really varies the synonyms a user may type.
    assert variants["one"] > 0
    assert variants["big"] > 0
    assert variants["white"] > 0


@pytest.mark.parametrize(
    ("prompt", "named"),
    [
        ("a red hexagon", "hexagon"),
        ("a magenta circle", "magenta"),
        ("seven red circles", "seven"),
        ("two red circle", "plural"),
        ("a red circles", "singular"),
        ("a red circle in the middle", "in the middle"),
        ("a red circle on a purple background", "purple"),
        ("a red circle and a blue square and a green cross", "at most two"),
        ("a red circle and a red circle", "differ"),
        ("a red", "shape is missing"),
        ("   ", "empty"),
    ],
)
def test_parse_errors_name_the_unparsable_part(prompt: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_prompt(prompt)


def test_scene_model_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="count"):
        ObjectSpec(count=4, colour=Colour.RED, shape=Shape.CIRCLE)
    with pytest.raises(ValueError, match="colour"):
        ObjectSpec(colour="red", shape=Shape.CIRCLE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one or two"):
        Scene(objects=())


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


def test_render_is_deterministic_given_the_rng() -> None:
    scene = parse_prompt("two small green crosses and a blue circle on a gray background")
    first = np.asarray(render(scene, np.random.default_rng(42)))
    again = np.asarray(render(scene, np.random.default_rng(42)))
    other = np.asarray(render(scene, np.random.default_rng(43)))
    assert first.shape == (64, 64, 3)
    assert first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_render_batch_is_deterministic_and_each_example_reproducible_alone() -> None:
    images, captions = render_batch(6, seed=7)
    images_again, captions_again = render_batch(6, seed=7)
    assert images.shape == (6, 64, 64, 3)
    assert np.array_equal(images, images_again)
    assert captions == captions_again
    tail, tail_captions = render_batch(3, seed=7, start=3)
    assert np.array_equal(tail, images[3:])
    assert tail_captions == captions[3:]
    lone = example(7, 4)
    assert np.array_equal(lone.image, images[4])
    assert lone.caption == captions[4]
    assert parse_prompt(lone.caption) == lone.scene


def test_caption_dropout_blanks_captions_but_not_images() -> None:
    images, _ = render_batch(20, seed=3)
    dropped_images, dropped = render_batch(20, seed=3, caption_dropout=1.0)
    assert np.array_equal(images, dropped_images)
    assert dropped == [""] * 20
    _, some = render_batch(200, seed=3, caption_dropout=0.5)
    assert 0 < some.count("") < 200


def test_render_paints_exact_palette_colours_on_the_cell_centre() -> None:
    scene = one(colour=Colour.PURPLE, shape=Shape.SQUARE, position=Position.BOTTOM_RIGHT)
    scene = Scene(objects=scene.objects, background=Background.BLACK)
    pixels = render_array(scene, np.random.default_rng(0))
    x, y = cell_centre(Position.BOTTOM_RIGHT)
    assert tuple(pixels[y, x]) == COLOUR_RGB[Colour.PURPLE]
    assert tuple(pixels[0, 0]) == (0, 0, 0)


def test_counts_with_a_position_keep_the_group_centre_in_the_cell_or_refuse() -> None:
    scene = parse_prompt("three small blue squares in the top left")
    for seed in range(10):
        analysis = analyse(render(scene, np.random.default_rng(seed)))
        assert score(scene, analysis) == {
            "colour": True,
            "counting": True,
            "position": True,
            "shape": True,
            "size": True,
        }
    # Two 32 px squares cannot sit 3 px apart on 64 px: refused, not drawn touching.
    with pytest.raises(ValueError, match="cannot place"):
        render(parse_prompt("two large red squares"), np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------------------------
# Analyser
# ---------------------------------------------------------------------------------------------------------------


def test_label_components_uses_8_connectivity() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # a diagonal chain: one component
    mask[5:8, 0:8] = True  # a bar
    mask[0, 7] = True  # a lone pixel
    labels, n = label_components(mask)
    assert n == 3
    assert labels[0, 0] == labels[2, 2] != labels[6, 3]
    assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_analyser_scores_every_category_on_clean_renders() -> None:
    rng = np.random.default_rng(1234)
    seen: Counter[str] = Counter()
    for _ in range(500):
        scene = sample_scene(rng)
        result = score(scene, analyse(render(scene, rng)))
        assert all(result.values()), (caption(scene), result)
        seen.update(result)
    # The sample really exercised every category.
    assert all(seen[category] >= 50 for category in CATEGORIES), seen


def test_analyser_is_robust_to_noise_tint_and_blur() -> None:
    rng = np.random.default_rng(99)
    results = []
    for _ in range(300):
        scene = sample_scene(rng)
        results.append(score(scene, analyse(degrade(render(scene, rng), rng))))
    accuracy = aggregate(results)
    assert set(accuracy) == set(CATEGORIES)
    assert all(value >= 0.95 for value in accuracy.values()), accuracy


def test_analyse_reads_objects_and_background() -> None:
    scene = parse_prompt(
        "a large red circle in the bottom right and a small cyan triangle at the top on a gray background"
    )
    analysis = analyse(render(scene, np.random.default_rng(0)))
    assert analysis.background is Background.GRAY
    big, small = analysis.objects  # largest first
    assert (big.colour, big.shape, big.size, big.position) == (
        Colour.RED,
        Shape.CIRCLE,
        Size.LARGE,
        Position.BOTTOM_RIGHT,
    )
    assert (small.colour, small.shape, small.size, small.position) == (
        Colour.CYAN,
        Shape.TRIANGLE,
        Size.SMALL,
        Position.TOP,
    )
    assert big.fill_ratio == pytest.approx(0.785, abs=0.05)
    assert small.fill_ratio == pytest.approx(0.5, abs=0.08)


def test_analyse_accepts_float_arrays_and_other_sizes() -> None:
    scene = parse_prompt("an orange cross on the left")
    image = render(scene, np.random.default_rng(5))
    reference = analyse(image)
    as_float = analyse(np.asarray(image, dtype=np.float32) / 255.0)
    upscaled = analyse(image.resize((256, 256), Image.Resampling.NEAREST))
    for analysis in (as_float, upscaled):
        assert [(o.colour, o.shape, o.position, o.size) for o in analysis.objects] == [
            (o.colour, o.shape, o.position, o.size) for o in reference.objects
        ]
    with pytest.raises(ValueError, match="shape"):
        analyse(np.zeros((64, 64), dtype=np.uint8))


def test_off_palette_colour_is_unknown_and_empty_canvas_has_no_objects() -> None:
    pixels = np.full((64, 64, 3), 255, dtype=np.uint8)
    pixels[20:40, 20:40] = (120, 80, 40)  # brown: far from every palette colour
    brown = analyse(pixels)
    assert len(brown.objects) == 1
    assert brown.objects[0].colour is None
    assert brown.objects[0].shape is Shape.SQUARE
    blank = analyse(np.full((64, 64, 3), 255, dtype=np.uint8))
    assert blank.background is Background.WHITE
    assert blank.objects == ()
    assert score(parse_prompt("a red circle"), blank)["single_object"] is False


def test_specks_below_the_minimum_area_are_ignored() -> None:
    pixels = render_array(parse_prompt("a blue square in the center"), np.random.default_rng(0))
    pixels[2:5, 2:5] = COLOUR_RGB[Colour.RED]  # a 9-px speck
    assert [o.colour for o in analyse(pixels).objects] == [Colour.BLUE]


@pytest.mark.parametrize(
    ("drawn", "asked", "failing"),
    [
        ("a red circle", "a blue circle", {"single_object", "colour"}),
        ("a red circle", "a red square", {"single_object", "shape"}),
        ("a red circle in the top left", "a red circle in the bottom right", {"position"}),
        ("two red circles", "three red circles", {"counting"}),
        ("a blue circle and a red square", "a red circle and a blue square", {"two_objects", "colour_attribution"}),
        ("a small green cross", "a large green cross", {"size"}),
        ("a red circle on a black background", "a red circle on a gray background", {"background"}),
    ],
)
def test_wrong_images_fail_the_matching_check(drawn: str, asked: str, failing: set[str]) -> None:
    image = render(parse_prompt(drawn), np.random.default_rng(0))
    result = score(parse_prompt(asked), analyse(image))
    assert {category for category, ok in result.items() if not ok} == failing


def test_categories_of_prompts() -> None:
    assert categories(parse_prompt("a red circle")) == {"single_object", "colour", "shape"}
    assert categories(parse_prompt("two small blue squares on a black background")) == {
        "colour",
        "shape",
        "counting",
        "size",
        "background",
    }
    assert categories(parse_prompt("a red cross and a red circle")) == {"two_objects"}
    assert categories(parse_prompt("a red circle on the left and a blue square")) == {
        "two_objects",
        "colour_attribution",
        "position",
    }


def test_eval_prompts_cover_every_category_and_pass_on_renders() -> None:
    assert 40 <= len(EVAL_PROMPTS) <= 60
    assert len(set(EVAL_PROMPTS)) == len(EVAL_PROMPTS)
    covered: Counter[str] = Counter()
    for prompt in EVAL_PROMPTS:
        scene = parse_prompt(prompt)
        covered.update(categories(scene))
        for seed in range(4):
            result = score(scene, analyse(render(scene, np.random.default_rng(seed))))
            assert all(result.values()), (prompt, seed, result)
    assert all(covered[category] >= 8 for category in CATEGORIES), covered


def test_preserves_layout_ignores_colour_but_not_shape_or_place() -> None:
    source = analyse(
        render(parse_prompt("a red circle on the left and a blue square on the right"), np.random.default_rng(0))
    )
    recoloured = analyse(
        render(parse_prompt("a green circle on the left and a yellow square on the right"), np.random.default_rng(1))
    )
    moved = analyse(
        render(parse_prompt("a red circle on the right and a blue square on the left"), np.random.default_rng(0))
    )
    reshaped = analyse(
        render(parse_prompt("a red cross on the left and a blue square on the right"), np.random.default_rng(0))
    )
    assert preserves_layout(source, recoloured)
    assert not preserves_layout(source, moved)
    assert not preserves_layout(source, reshaped)
