"""The seed's second program (one pipeline, one call), against the built-in demo model.

.venv/bin/python examples/one_call_pipeline.py  ->  shapes.png
"""

import torch
from diffusers import DiffusionPipeline

from imagegen.loading import builtin_models

pipe = DiffusionPipeline.from_pretrained(
    str(builtin_models()["imagegen-shapes"]), torch_dtype=torch.float32, use_safetensors=True
)
pipe.to("cpu")  # the seed uses "cuda"

prompt = "two yellow triangles on a black background"
image = pipe(prompt, height=64, width=64).images[0]
image.save("shapes.png")
print("shapes.png")
