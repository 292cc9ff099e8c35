"""The demo trainer end to end at toy size: every stage runs on a pool with free wordings, the export loads through
the engine and generates. Guards a two-hour retrain against a crash in its last stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imagegen_shapes.train import STAGES, StageBudget, TrainConfig, train


@pytest.mark.slow
def test_a_toy_run_trains_every_stage_and_exports_a_loadable_model(tmp_path: Path) -> None:
    from imagegen import Engine, GenerationRequest

    tiny = StageBudget(steps=2, batch_size=4, lr=1e-4, warmup=1)
    config = TrainConfig(
        run_dir=tmp_path,
        pool_size=48,
        vae=tiny,
        base=tiny,
        refiner=tiny,
        decoder=tiny,
        vae_check_scenes=8,
        checkpoint_every=1,
        phrasings=2,
    )
    train(config, stages=STAGES)
    pool = np.load(tmp_path / "pool.npz")
    assert pool["captions"].shape == (48, 3)  # the grammar caption and two free wordings per scene
    exported = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert exported == ["imagegen-shapes", "imagegen-shapes-refiner"]
    engine = Engine(device="cpu", default_model=str(tmp_path / "export" / "imagegen-shapes"))
    request = GenerationRequest(
        prompt="a red circle",
        seed=1,
        num_inference_steps=2,
        refiner=str(tmp_path / "export" / "imagegen-shapes-refiner"),
    )
    assert engine.generate(request).images[0].size == (64, 64)
