"""The demo-model trainer end to end at toy scale: every stage runs, resumes, and exports folders imagegen can load.

A few steps per stage cannot teach anything; what this checks is the plumbing the 2-hour run depends on (stage order,
checkpoints and resume, the export format and its defaults) so a broken trainer is caught in CI, not an hour into a run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagegen_shapes.train import BASE_NAME, REFINER_NAME, STAGES, StageBudget, TrainConfig, train

pytestmark = pytest.mark.slow


def _config(run_dir: Path, *, steps: int) -> TrainConfig:
    budget = StageBudget(steps=steps, batch_size=4, lr=1e-3, warmup=1)
    return TrainConfig(
        run_dir=run_dir,
        pool_size=48,
        vae=budget,
        base=budget,
        refiner=budget,
        decoder=budget,
        checkpoint_every=2,
        vae_check_scenes=8,
        guidance_scale=4.0,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("train-smoke")
    train(_config(folder, steps=3))
    return folder


def test_every_stage_finishes_and_records_its_steps(run_dir: Path) -> None:
    assert all((run_dir / f"{stage}.done").is_file() for stage in STAGES)
    for stage in ("base", "refiner"):
        assert json.loads((run_dir / stage / "train_report.json").read_text())["steps"] == 3
    vae_report = json.loads((run_dir / "vae_report.json").read_text())
    assert vae_report["steps"] == 3
    assert vae_report["scaling_factor"] > 0


def test_resume_continues_a_stage_from_its_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    import torch

    ckpt = torch.load(run_dir / "refiner.ckpt", weights_only=False)
    assert ckpt["step"] == 2  # checkpoint_every=2: the last checkpoint of 3 steps is at step 2
    # Going on to 5 steps: the refiner resumes at 2 (not 0), and nothing before it is redone.
    for stage in ("refiner", "decoder", "export"):
        (run_dir / f"{stage}.done").unlink()
    (run_dir / "refiner.ckpt").unlink()  # restart the refiner schedule cleanly at the new length
    train(_config(run_dir, steps=5), resume=True, stages=("refiner",))
    assert json.loads((run_dir / "refiner" / "train_report.json").read_text())["steps"] == 5
    assert (run_dir / "base.done").is_file()


def test_export_is_a_loadable_sdxl_base_and_refiner_with_defaults(run_dir: Path) -> None:
    from imagegen.loading import resolve

    base, refiner = run_dir / "export" / BASE_NAME, run_dir / "export" / REFINER_NAME
    assert json.loads((base / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    assert json.loads((refiner / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLImg2ImgPipeline"
    defaults = json.loads((base / "imagegen.json").read_text())["defaults"]
    assert defaults == {"width": 64, "height": 64, "num_inference_steps": 20, "guidance_scale": 4.0}
    assert resolve(str(base)).family.value == "sdxl"
    assert resolve(str(refiner)).family.value == "sdxl-refiner"


def test_exported_model_generates_through_the_engine(run_dir: Path) -> None:
    from imagegen.engine import Engine
    from imagegen.requests import GenerationRequest

    base, refiner = run_dir / "export" / BASE_NAME, run_dir / "export" / REFINER_NAME
    result = Engine(device="cpu").generate(
        GenerationRequest(prompt="a red circle", model=str(base), refiner=str(refiner), num_inference_steps=4)
    )
    assert [image.size for image in result.images] == [(64, 64)]


def test_evaluator_reports_every_category_for_base_and_refiner(run_dir: Path) -> None:
    from imagegen_shapes.evaluate import EvalOptions, evaluate, markdown

    base, refiner = run_dir / "export" / BASE_NAME, run_dir / "export" / REFINER_NAME
    options = EvalOptions(
        model=base,
        refiner=refiner,
        prompts=("a red circle", "two blue squares on the left"),
        seeds=2,
        num_inference_steps=4,  # strength 0.3 of 4 steps is 1 step; of 2 steps it would be none
        img2img_cases=2,
        timing_runs=1,
    )
    report = evaluate(options)
    assert report["guidance_scale"] == 4.0  # the exported default
    for mode in ("base", "base+refiner"):
        assert {"single_object", "colour", "counting"} <= set(report[mode])
        assert all(0.0 <= value <= 1.0 for value in report[mode].values())
    assert report["img2img"]["cases"] == 2
    assert report["timing"]["base_seconds"] > 0
    assert "| single_object |" in markdown(report)


def test_refiner_starts_as_the_base_without_text_encoder_1() -> None:
    """At step 0 the refiner computes what the base does with ``text_encoder``'s states zeroed, for any aesthetic score.

    (Run 2's refiner, trained from scratch, made every category worse; starting from the base is the fix, so the
    weight surgery must be exact: keys/values sliced to ``text_encoder_2``'s columns, target size folded into a bias.)
    """
    import torch

    from imagegen_shapes import train as trainer

    torch.manual_seed(0)
    base, refiner = trainer.build_unet("base"), trainer.build_unet("refiner")
    with torch.no_grad():
        for parameter in base.parameters():  # away from the initialisation, where many projections are zero
            parameter.add_(torch.randn_like(parameter) * 0.02)
    trainer.init_refiner_from_base(refiner, base)
    batch, tokens = 2, trainer.MAX_TOKENS
    latents, timesteps = torch.randn(batch, 4, 16, 16), torch.tensor([50, 150])
    states_2, pooled = torch.randn(batch, tokens, trainer.TEXT_2_HIDDEN), torch.randn(batch, trainer.TEXT_PROJECTION)
    states = torch.cat([torch.zeros(batch, tokens, trainer.TEXT_1_HIDDEN), states_2], dim=-1)
    with torch.no_grad():
        expected = base(
            latents,
            timesteps,
            encoder_hidden_states=states,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": torch.tensor(trainer.BASE_TIME_IDS).repeat(batch, 1)},
        ).sample
        for score in (trainer.AESTHETIC_POSITIVE, trainer.AESTHETIC_NEGATIVE):
            time_ids = torch.tensor([*trainer.BASE_TIME_IDS[:4], score]).repeat(batch, 1)
            got = refiner(
                latents,
                timesteps,
                encoder_hidden_states=states_2,
                added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
            ).sample
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # And it is a copy, not the same tensors: fine-tuning the refiner must not move the base.
    assert refiner.conv_in.weight.data_ptr() != base.conv_in.weight.data_ptr()


def test_full_size_base_and_refiner_fit_the_30_mb_budget() -> None:
    """The shipped widths: base + refiner folders (each with its own text_encoder_2 and VAE) in fp16 ≤ 30 MB."""
    from imagegen_shapes import train as trainer

    count = trainer.count_parameters
    text_2, vae = count(trainer.build_text_encoder("text_encoder_2")), count(trainer.build_vae())
    base = count(trainer.build_unet("base")) + count(trainer.build_text_encoder("text_encoder")) + text_2 + vae
    refiner = count(trainer.build_unet("refiner")) + text_2 + vae
    assert 2 * (base + refiner) <= 30e6
