"""Text to image in one diffusers call on the built-in shapes model: load a pipeline, call it with a prompt.

``DiffusionPipeline`` reads ``model_index.json`` and builds the right pipeline class (here SDXL's) by itself. It does
not know imagegen's per-model defaults (``imagegen.json``), so the demo model's size, steps and guidance are passed
explicitly; with imagegen they come from the model (see ``with_imagegen.py``).

    .venv/bin/python examples/one_call_pipeline.py  ->  shapes.png
"""

import torch
from diffusers import DiffusionPipeline

from imagegen.loading import builtin_models

PROMPT = "two yellow triangles on a black background"
OUTPUT = "shapes.png"


def main() -> None:
    folder = builtin_models()["imagegen-shapes"]
    # On a GPU: torch.float16 and .to("cuda"); the demo model runs in well under a second on a CPU in float32.
    pipeline = DiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch.float32, use_safetensors=True)
    pipeline.to("cpu")
    image = pipeline(PROMPT, height=64, width=64, num_inference_steps=20, guidance_scale=3.0).images[0]
    image.save(OUTPUT)
    print(OUTPUT)


if __name__ == "__main__":
    main()
