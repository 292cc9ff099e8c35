"""The seed program, run as written against the built-in demo model: SDXL base + refiner, an ensemble of expert
denoisers. The base runs the first 80 % of the steps and hands its latents to the refiner, which shares the base's
second text encoder and VAE. Plain diffusers; no imagegen code involved except finding the shipped model folders.

    .venv/bin/python examples/sdxl_base_refiner.py  ->  base+refiner.png
"""

import torch
from diffusers import DiffusionPipeline

from imagegen.loading import builtin_models

# On a GPU the seed uses torch.float16 and base.to("cuda"); the demo model is small enough for the CPU.
models = builtin_models()
base = DiffusionPipeline.from_pretrained(
    str(models["imagegen-shapes"]), torch_dtype=torch.float32, use_safetensors=True
)
refiner = DiffusionPipeline.from_pretrained(
    str(models["imagegen-shapes-refiner"]),
    text_encoder_2=base.text_encoder_2,
    vae=base.vae,
    torch_dtype=torch.float32,
    use_safetensors=True,
)

# Define how many steps and what % of steps to be run on each experts (80/20) here
n_steps = 40
high_noise_frac = 0.8

prompt = "a green cross on the left and a pink circle on the right"

# run both experts
image = base(
    prompt=prompt,
    num_inference_steps=n_steps,
    denoising_end=high_noise_frac,
    output_type="latent",
    height=64,
    width=64,
).images
image = refiner(
    prompt=prompt,
    num_inference_steps=n_steps,
    denoising_start=high_noise_frac,
    image=image,
).images[0]
image.save("base+refiner.png")
print("base+refiner.png")
