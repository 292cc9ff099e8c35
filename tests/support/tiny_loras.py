"""Tiny random LoRA files for the tiny models, in the formats users download: diffusers/peft and kohya (A1111/civitai).

Built with peft on the tiny model's own modules (so every key matches a real layer), with the ``B`` matrices
randomised (peft starts them at zero, which would make a LoRA that changes nothing), then saved the way diffusers'
training scripts save them (``save_lora_weights``) or converted to kohya key names (``lora_unet_*``, ``lora_te*_``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _randomise(module: Any, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def make_lora(
    model_dir: Path, dest: Path, *, fmt: str = "diffusers", seed: int = 0, text: bool = True, rank: int = 4
) -> Path:
    """A LoRA file for the tiny model in ``model_dir`` at ``dest`` (``fmt``: ``diffusers`` or ``kohya``)."""
    from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    pipe = DiffusionPipeline.from_pretrained(str(model_dir))
    xl = getattr(pipe, "text_encoder_2", None) is not None
    parts: dict[str, Any] = {"unet": pipe.unet}
    if text:
        parts["text_encoder"] = pipe.text_encoder
        if xl:
            parts["text_encoder_2"] = pipe.text_encoder_2
    layers: dict[str, dict[str, torch.Tensor]] = {}
    raw: dict[str, dict[str, torch.Tensor]] = {}
    for index, (name, module) in enumerate(parts.items()):
        targets = UNET_TARGETS if name == "unet" else TEXT_TARGETS
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
        if name == "unet":
            module.add_adapter(config)
        else:
            # peft directly: transformers' own add_adapter wants a newer peft than PyPI has for this torch.
            inject_adapter_in_model(config, module)
        _randomise(module, seed * 10 + index)
        raw[name] = get_peft_model_state_dict(module)
        layers[name] = convert_state_dict_to_diffusers(raw[name])
    dest.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "diffusers":
        cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
        extra = {"text_encoder_2_lora_layers": layers.get("text_encoder_2")} if xl else {}
        cls.save_lora_weights(
            str(dest.parent),
            unet_lora_layers=layers["unet"],
            text_encoder_lora_layers=layers.get("text_encoder"),
            weight_name=dest.name,
            **extra,
        )
        return dest
    flat: dict[str, torch.Tensor] = {}
    for name, state in raw.items():
        flat.update({f"{name}.{key}": value for key, value in state.items()})
    kohya = convert_state_dict_to_kohya(flat)
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(dest), metadata={"ss_output_name": dest.stem})
    return dest


def make_loha(dest: Path) -> Path:
    """A LyCORIS LoHa file (keys ``hada_w1_a`` ...), which diffusers cannot load."""
    from safetensors.torch import save_file

    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file(
        {
            f"{key}.hada_w1_a": torch.zeros(4, 4),
            f"{key}.hada_w1_b": torch.zeros(4, 32),
            f"{key}.alpha": torch.tensor(4.0),
        },
        str(dest),
    )
    return dest
