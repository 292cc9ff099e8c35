"""What the demo trainer feeds its UNets: the foreground mask that weights the loss, and the training scene mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imagegen_shapes.train import LATENT_SIZE, TRAIN_SCENES, TrainConfig, latent_foreground
from imagegen_shapes.world import Background, parse_prompt, render_array, render_batch


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

    # The pool of the real trainer: its scene mix and its seed-0 stream, with caption variants (one/big/background).
    _, captions = render_batch(20_000, 0, distribution=TRAIN_SCENES)
    training = {_normalised(c) for c in captions}
    assert len(training) > 5_000  # a varied sample, not a few captions repeated
    assert not {_normalised(prompt) for prompt, _ in HELD_OUT} & training


def test_no_held_out_prompt_fits_the_caption_grammar() -> None:
    """``parse_prompt`` reads every caption ``caption()`` can write (checked here on samples), so a prompt it cannot
    read is not a caption of any scene; and none of the variants of the expected scene's caption is the prompt."""
    from imagegen_shapes.evaluate import HELD_OUT
    from imagegen_shapes.world import caption, sample_scene

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
