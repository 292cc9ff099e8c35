"""Split one denoising run between SDXL's two experts with plain diffusers, on the built-in shapes model.

The base model takes the noisy start of the schedule and stops at ``SWITCH_AT`` (``denoising_end``), handing back
latents instead of pixels; the refiner picks the schedule up at the same point (``denoising_start``) and finishes it.
The refiner is built around the base's own ``text_encoder_2`` and ``vae`` objects, so they are in memory once.

Only the model folders come from imagegen; the rest is the usual diffusers SDXL base + refiner code, which runs
unchanged because the demo model is stored in exactly SDXL's format. For the full-size models, swap in the hub ids
``stabilityai/stable-diffusion-xl-base-1.0`` / ``-refiner-1.0``, float16 and ``.to("cuda")``, and drop the size.

    .venv/bin/python examples/sdxl_base_refiner.py  ->  base+refiner.png
"""

import torch
from diffusers import DiffusionPipeline

from imagegen.loading import builtin_models

PROMPT = "a green cross on the left and a pink circle on the right"
STEPS = 40
#: Fraction of the schedule done by the base; the refiner is trained for the low-noise rest.
SWITCH_AT = 0.8
OUTPUT = "base+refiner.png"


def load_experts() -> tuple[DiffusionPipeline, DiffusionPipeline]:
    """The base pipeline, and the refiner sharing its second text encoder and VAE."""
    folders = builtin_models()
    # float32: the model is small enough for a CPU, where float16 would be slow and imprecise.
    base = DiffusionPipeline.from_pretrained(
        str(folders["imagegen-shapes"]), torch_dtype=torch.float32, use_safetensors=True
    )
    refiner = DiffusionPipeline.from_pretrained(
        str(folders["imagegen-shapes-refiner"]),
        text_encoder_2=base.text_encoder_2,
        vae=base.vae,
        torch_dtype=torch.float32,
        use_safetensors=True,
    )
    return base, refiner


def main() -> None:
    base, refiner = load_experts()
    # The base's last step is at SWITCH_AT of the schedule; "latent" skips a VAE decode the refiner would undo.
    handed_over = base(
        prompt=PROMPT,
        num_inference_steps=STEPS,
        denoising_end=SWITCH_AT,
        output_type="latent",
        height=64,
        width=64,
    ).images
    # Same prompt and step count, so the refiner's schedule lines up with where the base stopped.
    picture = refiner(
        prompt=PROMPT,
        num_inference_steps=STEPS,
        denoising_start=SWITCH_AT,
        image=handed_over,
    ).images[0]
    picture.save(OUTPUT)
    print(OUTPUT)


if __name__ == "__main__":
    main()
