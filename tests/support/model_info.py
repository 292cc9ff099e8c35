"""A :class:`ModelInfo` without a model behind it, for the rules that read only what a model is (family, defaults,
scheduler)."""

from __future__ import annotations

from pathlib import Path

from imagegen.loading import Family, ModelDefaults, ModelInfo


def model_info(ref: str, family: Family = Family.SD1, scheduler: str = "EulerDiscreteScheduler") -> ModelInfo:
    """A folder model ``ref`` of ``family`` whose own scheduler is ``scheduler``, native 64×64, 20 steps, CFG 7."""
    return ModelInfo(
        ref=ref,
        kind="folder",
        path=Path(ref),
        family=family,
        prediction_type="epsilon",
        defaults=ModelDefaults(width=64, height=64, num_inference_steps=20, guidance_scale=7.0),
        scheduler_config={"_class_name": scheduler},
    )
