"""The same two programs with imagegen: one request each, seeds and settings embedded in the PNGs.

.venv/bin/python examples/with_imagegen.py  ->  outputs/examples/*.png
"""

from pathlib import Path

from imagegen import Engine, GenerationRequest

engine = Engine()  # no model given: the built-in imagegen-shapes demo model
out = Path("outputs/examples")

# SDXL base + refiner, 40 steps, switching at 0.8: the refiner shares text_encoder_2 and the VAE.
refined = engine.generate(
    GenerationRequest(
        prompt="a green cross on the left and a pink circle on the right",
        refiner="imagegen-shapes-refiner",
        num_inference_steps=40,
        denoising_end=0.8,
        seed=1234,
    )
)
# One call, the model's own defaults (64x64, 20 steps).
plain = engine.generate(GenerationRequest(prompt="two yellow triangles on a black background", seed=1234))

for result in (refined, plain):
    for path in result.save(out):
        print(path, f"({result.timings['total']:.2f} s)")
