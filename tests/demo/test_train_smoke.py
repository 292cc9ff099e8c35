"""The demo-model trainer end to end at toy scale: every stage runs, resumes, and exports folders imagegen can load.

A few steps per stage cannot teach anything; what this checks is the plumbing the 2-hour run depends on (stage order,
checkpoints and resume, the export format and its defaults) so a broken trainer is caught in CI, not an hour into a run.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
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
    # Each pool scene: its grammar caption and TrainConfig.phrasings (3) free wordings, the base shown both kinds.
    assert np.load(run_dir / "pool.npz")["captions"].shape == (48, 4)


class _Interrupted(Exception):
    """Stands for a killed run (Ctrl-C, out of time) in the middle of a stage."""


def _refiner_run(source: Path, dest: Path) -> Path:
    """A run folder with everything the refiner stage reads (pool, latents, the trained base), marked done up to it."""
    dest.mkdir()
    for name in ("pool.npz", "latents.pt", "pool.done", "vae.done", "base.done"):
        shutil.copy2(source / name, dest / name)
    shutil.copytree(source / "base", dest / "base")
    return dest


def _record_steps(monkeypatch: pytest.MonkeyPatch, *, stop_at: int | None = None) -> list[tuple[str, int]]:
    """Record every training step the trainer starts (each draws its batch from ``_step_generator``); with
    ``stop_at``, interrupt the run when that step starts."""
    from imagegen_shapes import train as trainer

    # The trainer's own function, also when an earlier call of this helper has wrapped it.
    original = getattr(trainer._step_generator, "__wrapped__", trainer._step_generator)
    steps: list[tuple[str, int]] = []

    @functools.wraps(original)  # sets __wrapped__, which a later call of this helper unwraps
    def recording(seed: int, stage: str, step: int) -> Any:
        if step == stop_at:
            raise _Interrupted(f"{stage} interrupted at step {step}")
        steps.append((stage, step))
        return original(seed, stage, step)

    monkeypatch.setattr(trainer, "_step_generator", recording)
    return steps


def _unet_weights(run: Path, stage: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(run / stage / "unet" / "diffusion_pytorch_model.safetensors")


def test_resume_continues_a_stage_from_its_checkpoint(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refiner run killed at step 3 resumes from its step-2 checkpoint and ends with the weights of a run that was
    never interrupted (the trainer draws every step's batch from its own seeded stream, so it is deterministic)."""
    import torch

    stages = ("base", "refiner")
    config = {"steps": 5}  # checkpoints at steps 2 and 4

    # 1. The reference: the refiner stage run to its end without interruption.
    whole = _refiner_run(run_dir, tmp_path / "whole")
    whole_steps = _record_steps(monkeypatch)
    train(_config(whole, **config), resume=True, stages=stages)
    assert whole_steps == [("refiner", step) for step in range(5)]  # the finished base stage was skipped

    # 2. The same run killed when step 3 starts: step 2 was trained but not checkpointed.
    broken = _refiner_run(run_dir, tmp_path / "interrupted")
    _record_steps(monkeypatch, stop_at=3)
    with pytest.raises(_Interrupted):
        train(_config(broken, **config), resume=True, stages=stages)
    assert torch.load(broken / "refiner.ckpt", weights_only=False)["step"] == 2
    assert not (broken / "refiner.done").exists()

    # 3. Resumed: it starts at the checkpoint's step 2, not at 0, and finishes the stage.
    capsys.readouterr()
    resumed_steps = _record_steps(monkeypatch)
    train(_config(broken, **config), resume=True, stages=stages)
    assert resumed_steps == [("refiner", 2), ("refiner", 3), ("refiner", 4)]
    log = capsys.readouterr().out
    assert "refiner: resumed at step 2" in log
    assert "base: already done, skipped" in log
    assert (broken / "refiner.done").is_file()
    assert json.loads((broken / "refiner" / "train_report.json").read_text())["steps"] == 5

    # 4. Same weights as the uninterrupted run: model, optimizer and EMA state all came back from the checkpoint.
    expected, got = _unet_weights(whole, "refiner"), _unet_weights(broken, "refiner")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=f"refiner unet {name} differs")


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


def test_evaluator_reports_every_category_for_both_prompt_sets(run_dir: Path) -> None:
    from imagegen_shapes.evaluate import HELD_OUT, EvalOptions, evaluate, markdown

    base, refiner = run_dir / "export" / BASE_NAME, run_dir / "export" / REFINER_NAME
    options = EvalOptions(
        model=base,
        refiner=refiner,
        prompts=("a red circle", "two blue squares on the left"),
        held_out=HELD_OUT[:2],
        seeds=2,
        num_inference_steps=4,  # strength 0.3 of 4 steps is 1 step; of 2 steps it would be none
        img2img_cases=2,
        timing_runs=1,
    )
    report = evaluate(options)
    assert report["guidance_scale"] == 4.0  # the exported default
    for name, prompts in (("training_phrasing", 2), ("held_out", 2)):
        part = report[name]
        assert part["prompts"] == prompts
        assert set(part["per_prompt"]) == (
            set(options.prompts) if name == "training_phrasing" else {p for p, _ in HELD_OUT[:2]}
        )
        for mode in ("base", "base+refiner"):
            assert {"single_object", "colour"} <= set(part[mode])
            assert all(0.0 <= value <= 1.0 for value in part[mode].values())
    # 2 prompts × 2 seeds; only the second training prompt counts shapes.
    assert report["training_phrasing"]["images"]["colour"] == 4
    assert report["training_phrasing"]["images"]["counting"] == 2
    assert report["img2img"]["cases"] == 2
    for key in ("base_seconds", "base+refiner_seconds"):
        assert isinstance(report["timing"][key], float), key
        assert report["timing"][key] > 0, key
    text = markdown(report)
    assert "| single_object |" in text
    assert "held-out phrasing: base + refiner" in text


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
