"""What the demo trainer feeds its UNets: the foreground mask that weights the loss, and the training scene mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imagegen_shapes.train import LATENT_SIZE, TRAIN_SCENES, TrainConfig, latent_foreground
from imagegen_shapes.world import (
    FREE_POSITION_PHRASES,
    Background,
    Scene,
    Size,
    describe,
    parse_prompt,
    render_array,
    render_batch,
    render_pool,
    sample_scene,
)


def _mask(prompt: str, seed: int = 0) -> np.ndarray:
    image = render_array(parse_prompt(prompt), np.random.default_rng(seed))
    return latent_foreground(image[None])[0, 0].numpy()


@pytest.mark.parametrize("background", list(Background))
def test_an_empty_canvas_has_no_foreground(background: Background) -> None:
    # A canvas of this background with the shape painted out: its corner colour everywhere.
    image = render_array(parse_prompt(f"a red circle on a {background.value} background"), np.random.default_rng(0))
    empty = np.broadcast_to(image[:1, :1], image.shape).copy()
    assert not latent_foreground(empty[None]).any()


def test_a_small_shape_in_the_top_left_marks_a_few_top_left_latents() -> None:
    mask = _mask("a small blue square in the top left")
    ys, xs = np.nonzero(mask)
    # 12 px over 4 px latents: 3 or 4 latents a side, all in the top-left third of the 16×16 grid.
    assert 9 <= mask.sum() <= 16
    assert ys.max() <= LATENT_SIZE // 3
    assert xs.max() <= LATENT_SIZE // 3


def test_three_shapes_mark_more_latents_than_one_and_a_large_one_more_than_a_small_one() -> None:
    assert _mask("three green circles").sum() > _mask("a green circle").sum()
    assert _mask("a large green circle").sum() > _mask("a small green circle").sum()


def test_the_mask_is_the_same_in_chunks() -> None:
    images, _ = render_batch(10, 3)
    assert (latent_foreground(images, chunk=3) == latent_foreground(images)).all()


def test_the_training_mix_has_more_small_shapes_and_threes_than_the_world_default() -> None:
    _, trained = render_batch(1500, 0, distribution=TRAIN_SCENES)
    _, default = render_batch(1500, 0)

    def share(captions: list[str], word: str) -> float:
        return sum(word in c.split() for c in captions) / len(captions)

    assert share(trained, "small") > share(default, "small") + 0.03
    assert share(trained, "three") > share(default, "three") + 0.03


@pytest.mark.parametrize("weight", [0.0, -1.0])
def test_a_non_positive_loss_weight_is_refused_by_name(weight: float) -> None:
    with pytest.raises(ValueError, match="latent_foreground_weight must be > 0"):
        TrainConfig(run_dir=Path("."), latent_foreground_weight=weight)


@pytest.mark.parametrize(
    ("flag", "text", "message"),
    [
        ("--latent-foreground-weight", "0", "must be a number > 0"),
        ("--latent-foreground-weight", "-2", "must be a number > 0"),
        ("--latent-foreground-weight", "lots", "must be a number > 0"),
        ("--latent-foreground-weight", "nan", "must be a number > 0"),
        ("--base-lr", "0", "must be a number > 0"),
        ("--base-steps", "0", "must be a whole number ≥ 1"),
        ("--vae-batch-size", "2.5", "must be a whole number ≥ 1"),
        ("--refiner-minutes", "-1", "must be a number ≥ 0"),
        ("--pool-size", "-10", "must be a whole number ≥ 1"),
        ("--threads", "0", "must be a whole number ≥ 1"),
    ],
)
def test_the_cli_refuses_a_bad_number_naming_the_flag_and_the_range(
    flag: str, text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from imagegen_shapes.train import main

    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exited:
        main(["--run-dir", str(run_dir), flag, text])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert flag in err
    assert message in err
    assert not run_dir.exists()  # refused before anything was written


# Held-out phrasings: the evaluator's second prompt set must be worded as no training caption is, and stay out of
# the trainer's reach, or its scores would measure memorised captions again.


def _normalised(text: str) -> str:
    # The CLIP tokenizer lower-cases and splits on spaces, so case and spacing differences are not new phrasings.
    return " ".join(text.lower().split())


def test_no_held_out_prompt_is_a_training_caption() -> None:
    from imagegen_shapes.evaluate import HELD_OUT

    # The pool of the real trainer: its scene mix and its seed-0 stream, with caption variants (one/big/background)
    # and the free wordings of every scene (world.describe).
    _, captions = render_pool(20_000, 0, distribution=TRAIN_SCENES, phrasings=TrainConfig(run_dir=Path(".")).phrasings)
    training = {_normalised(c) for wordings in captions for c in wordings}
    assert len(training) > 40_000  # a varied sample, not a few captions repeated
    assert not {_normalised(prompt) for prompt, _ in HELD_OUT} & training


def test_no_held_out_prompt_fits_the_caption_grammar() -> None:
    """``parse_prompt`` reads every caption ``caption()`` can write (checked here on samples), so a prompt it cannot
    read is not a caption of any scene; and none of the variants of the expected scene's caption is the prompt."""
    from imagegen_shapes.evaluate import HELD_OUT
    from imagegen_shapes.world import caption, describe, sample_scene

    rng = np.random.default_rng(7)
    for _ in range(500):
        scene = sample_scene(rng, TRAIN_SCENES)
        assert parse_prompt(caption(scene, rng)) == scene
    for prompt, scene in HELD_OUT:
        with pytest.raises(ValueError, match="cannot parse"):
            parse_prompt(prompt)
        variants = {_normalised(caption(scene, np.random.default_rng(i))) for i in range(200)}
        assert _normalised(caption(scene)) in variants
        assert _normalised(prompt) not in variants
        free = {_normalised(describe(scene, np.random.default_rng(i))) for i in range(400)}
        assert _normalised(prompt) not in free


def test_held_out_set_covers_every_evaluated_category_and_fits_the_text_encoder() -> None:
    from imagegen_shapes.analyse import EVAL_PROMPTS, categories
    from imagegen_shapes.evaluate import HELD_OUT
    from imagegen_shapes.train import MAX_TOKENS, load_tokenizer

    assert 24 <= len(HELD_OUT) <= 32
    assert len({prompt for prompt, _ in HELD_OUT}) == len(HELD_OUT)
    held_out = set().union(*(categories(scene) for _, scene in HELD_OUT))
    trained = set().union(*(categories(parse_prompt(prompt)) for prompt in EVAL_PROMPTS))
    assert trained <= held_out
    for category in ("single_object", "position", "counting", "two_objects", "colour_attribution"):
        assert sum(category in categories(scene) for _, scene in HELD_OUT) >= 4, category
    # A prompt cut off by the 32-token window would be scored against words the model never saw.
    tokenizer = load_tokenizer("tokenizer")
    for prompt, _ in HELD_OUT:
        assert len(tokenizer(prompt).input_ids) <= MAX_TOKENS, prompt


def test_the_trainer_never_imports_the_held_out_set() -> None:
    import ast
    import subprocess
    import sys

    import imagegen_shapes

    # At run time: importing the trainer (and with it the world and the analyser) loads no evaluator.
    code = "import sys, imagegen_shapes.train; print(sorted(m for m in sys.modules if m.startswith('imagegen_shapes')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(ast.literal_eval(done.stdout.strip()))
    assert "imagegen_shapes.train" in loaded
    assert "imagegen_shapes.evaluate" not in loaded
    # In the source: no import of the evaluator anywhere in the training code, not even inside a function.
    package = Path(imagegen_shapes.__file__).parent
    for name in ("train.py", "world.py", "analyse.py"):
        tree = ast.parse((package / name).read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {
            f"{node.module or ''}.{alias.name}"  # "from . import evaluate" has no module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        assert not [m for m in imported if "evaluate" in m or "HELD_OUT" in m], name


def _free_wordings(n: int, seed: int = 3) -> list[tuple[Scene, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        scene = sample_scene(rng, TRAIN_SCENES)
        out.append((scene, describe(scene, rng)))
    return out


def test_a_free_wording_names_every_part_of_its_scene() -> None:
    for scene, text in _free_wordings(3000):
        words = text.replace(",", " ").split()
        for obj in scene.objects:
            assert obj.colour.value in words, text
            assert (obj.shape.value if obj.count == 1 else obj.shape.plural) in words, text
            if obj.count > 1:
                assert ("two" if obj.count == 2 else "three") in words, text
            if obj.position is not None:
                assert any(phrase in text for phrase in FREE_POSITION_PHRASES[obj.position]), text
        sizes = {obj.size for obj in scene.objects}
        assert (Size.SMALL in sizes) == bool({"small", "little"} & set(words)), text
        assert (Size.LARGE in sizes) == bool({"large", "big"} & set(words)), text
        if scene.background is Background.WHITE:
            assert not {"black", "gray", "grey"} & set(words), text
        else:
            shown = {"gray", "grey"} if scene.background is Background.GRAY else {"black"}
            assert shown & set(words), text


def test_free_wordings_vary_order_connectors_and_phrases() -> None:
    texts = [text for _, text in _free_wordings(3000)]
    for construction in (
        " which is ",
        " which are ",
        " plus ",
        " and also ",
        ", and ",
        "an image of ",
        " little ",
        "corner",
        "in the centre",
        " on grey",
        "with a black background",
        "one ",
    ):
        assert any(construction in text for text in texts), construction
    # Two objects appear in both orders: the scene's first object is named first in some wordings, second in others.
    two = [(scene, text) for scene, text in _free_wordings(3000) if len(scene.objects) == 2]
    firsts = {
        text.index(scene.objects[0].colour.value) < text.index(scene.objects[1].colour.value)
        for scene, text in two
        if scene.objects[0].colour != scene.objects[1].colour
    }
    assert firsts == {True, False}


def test_free_wordings_fit_the_text_encoders() -> None:
    from imagegen_shapes.train import MAX_TOKENS, load_tokenizer

    tokenizer = load_tokenizer("tokenizer")
    texts = sorted({text for _, text in _free_wordings(20_000)}, key=len)[-300:]
    assert max(len(ids) for ids in tokenizer(texts).input_ids) <= MAX_TOKENS


def test_the_pool_keeps_render_batch_images_and_captions_and_adds_wordings() -> None:
    images, captions = render_batch(40, 5, distribution=TRAIN_SCENES)
    pool_images, wordings = render_pool(40, 5, distribution=TRAIN_SCENES, phrasings=2)
    assert np.array_equal(images, pool_images)
    assert [w[0] for w in wordings] == captions
    assert {len(w) for w in wordings} == {3}
    assert sum(w[1] != w[0] for w in wordings) > 30  # free wordings differ from the grammar caption
    assert render_pool(40, 5, distribution=TRAIN_SCENES, phrasings=2)[1] == wordings  # reproducible
    with pytest.raises(ValueError, match="phrasings must be >= 0"):
        render_pool(1, 0, phrasings=-1)


def test_caption_columns_mix_grammar_and_free_wordings() -> None:
    import torch

    from imagegen_shapes.train import caption_columns

    generator = torch.Generator().manual_seed(0)
    columns = caption_columns(20_000, 4, 0.4, generator)
    share = float((columns == 0).float().mean())
    assert 0.36 < share < 0.44
    assert set(columns.tolist()) == {0, 1, 2, 3}
    assert set(caption_columns(100, 1, 0.4, generator).tolist()) == {0}  # an older pool: the grammar caption only
    assert set(caption_columns(100, 4, 1.0, generator).tolist()) == {0}
    assert 0 not in set(caption_columns(100, 4, 0.0, generator).tolist())
