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
