"""Write a diffusers folder as an A1111/LDM-style single ``.safetensors`` checkpoint (original Stability key names).

The mapping is the inverse of what ``from_single_file`` undoes: UNet under ``model.diffusion_model.`` (``input_blocks``,
``middle_block``, ``output_blocks``), VAE under ``first_stage_model.`` (``encoder.down.N.block.M``, ``decoder.up.N`` in
reverse order, 1x1-conv attention), text encoders as

- SD 1.x: ``cond_stage_model.transformer.text_model.*`` (Hugging Face CLIP layout),
- SD 2.x: ``cond_stage_model.model.*`` (OpenCLIP layout: fused ``in_proj``, ``resblocks``, transposed projection),
- SDXL base: ``conditioner.embedders.0.transformer.text_model.*`` (CLIP-L) and ``conditioner.embedders.1.model.*``
  (OpenCLIP bigG), SDXL refiner: ``conditioner.embedders.0.model.*`` (OpenCLIP bigG).

Only what the tiny test models use is supported (int ``layers_per_block``, the standard block types); anything that
does not map raises instead of being dropped, so a silent gap cannot make a round-trip test pass.

Loading such a file back needs a diffusers config folder whose shapes match (the configs bundled with diffusers are
full-size): ``Pipeline.from_single_file(file, config=config_only_copy(model_dir, ...), local_files_only=True)``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHT_SUFFIXES = (".safetensors", ".bin")
SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline")

_UNET_RESNET_RENAMES = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
)
_VAE_RESNET_RENAMES = (("conv_shortcut.", "nin_shortcut."),)
_VAE_ATTENTION_RENAMES = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)
_OPEN_CLIP_LAYER_RENAMES = (
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
    ("self_attn.out_proj.", "attn.out_proj."),
)


def _rename(suffix: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        if suffix.startswith(old):
            return new + suffix[len(old) :]
    return suffix


def _map_by_prefix(
    state_dict: dict[str, torch.Tensor], prefixes: list[tuple[str, str, tuple[tuple[str, str], ...]]], what: str
) -> dict[str, torch.Tensor]:
    """Rename every key by its (diffusers prefix -> LDM prefix, suffix renames) rule; unmapped keys are an error."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        for old_prefix, new_prefix, renames in prefixes:
            if key.startswith(old_prefix):
                out[new_prefix + _rename(key[len(old_prefix) :], renames)] = tensor
                break
        else:
            raise ValueError(f"{what}: no LDM name for diffusers key {key!r}")
    return out


def unet_to_ldm(state_dict: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Diffusers ``UNet2DConditionModel`` weights -> LDM ``openaimodel.UNetModel`` names (without the outer prefix)."""
    per_block = config["layers_per_block"]
    if not isinstance(per_block, int):
        raise ValueError(f"layers_per_block must be an int to map to LDM names, got {per_block!r}")
    num_blocks = len(config["block_out_channels"])
    resnet, plain = _UNET_RESNET_RENAMES, ()
    rules: list[tuple[str, str, tuple[tuple[str, str], ...]]] = [
        ("time_embedding.linear_1.", "time_embed.0.", plain),
        ("time_embedding.linear_2.", "time_embed.2.", plain),
        # SDXL's micro-conditioning MLP lives in LDM's label_emb (the class-embedding slot).
        ("add_embedding.linear_1.", "label_emb.0.0.", plain),
        ("add_embedding.linear_2.", "label_emb.0.2.", plain),
        ("conv_in.", "input_blocks.0.0.", plain),
        ("conv_norm_out.", "out.0.", plain),
        ("conv_out.", "out.2.", plain),
        ("mid_block.resnets.0.", "middle_block.0.", resnet),
        ("mid_block.attentions.0.", "middle_block.1.", plain),
        ("mid_block.resnets.1.", "middle_block.2.", resnet),
    ]
    # LDM numbers its input blocks flat: conv_in, then per level `per_block` (resnet[, attention]) blocks and one
    # downsampler (none after the last level).
    index = 1
    for level in range(num_blocks):
        for layer in range(per_block):
            rules.append((f"down_blocks.{level}.resnets.{layer}.", f"input_blocks.{index}.0.", resnet))
            rules.append((f"down_blocks.{level}.attentions.{layer}.", f"input_blocks.{index}.1.", plain))
            index += 1
        if level < num_blocks - 1:
            rules.append((f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{index}.0.op.", plain))
            index += 1
    # Output blocks: `per_block + 1` per level; the last one of each level but the final carries the upsampler, after
    # the attention if the level has one.
    index = 0
    for level, block_type in enumerate(config["up_block_types"]):
        for layer in range(per_block + 1):
            rules.append((f"up_blocks.{level}.resnets.{layer}.", f"output_blocks.{index}.0.", resnet))
            rules.append((f"up_blocks.{level}.attentions.{layer}.", f"output_blocks.{index}.1.", plain))
            if layer == per_block and level < num_blocks - 1:
                slot = 2 if "CrossAttn" in block_type else 1
                rules.append((f"up_blocks.{level}.upsamplers.0.conv.", f"output_blocks.{index}.{slot}.conv.", plain))
            index += 1
    # Transformer2DModel internals (norm, proj_in, transformer_blocks.*, proj_out) keep their names in LDM.
    return _map_by_prefix(state_dict, rules, "unet")


def vae_to_ldm(state_dict: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Diffusers ``AutoencoderKL`` weights -> LDM ``AutoencoderKL`` names (without the outer prefix)."""
    num_blocks = len(config["block_out_channels"])
    resnet, attention, plain = _VAE_RESNET_RENAMES, _VAE_ATTENTION_RENAMES, ()
    rules: list[tuple[str, str, tuple[tuple[str, str], ...]]] = [
        ("quant_conv.", "quant_conv.", plain),
        ("post_quant_conv.", "post_quant_conv.", plain),
    ]
    for part in ("encoder", "decoder"):
        rules += [
            (f"{part}.conv_in.", f"{part}.conv_in.", plain),
            (f"{part}.conv_out.", f"{part}.conv_out.", plain),
            (f"{part}.conv_norm_out.", f"{part}.norm_out.", plain),
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", resnet),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", resnet),
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", attention),
        ]
    for level in range(num_blocks):
        rules.append((f"encoder.down_blocks.{level}.resnets.", f"encoder.down.{level}.block.", plain))
        rules.append((f"encoder.down_blocks.{level}.downsamplers.0.", f"encoder.down.{level}.downsample.", plain))
        # LDM's decoder counts its levels from the lowest resolution up, diffusers' from the top down.
        ldm_level = num_blocks - 1 - level
        rules.append((f"decoder.up_blocks.{level}.resnets.", f"decoder.up.{ldm_level}.block.", plain))
        rules.append((f"decoder.up_blocks.{level}.upsamplers.0.", f"decoder.up.{ldm_level}.upsample.", plain))
    mapped = _map_by_prefix(state_dict, rules, "vae")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in mapped.items():
        key = key.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid.attn_1." in key and key.endswith("weight") and tensor.ndim == 2:
            # LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers.
            tensor = tensor[:, :, None, None]
        out[key] = tensor
    return out


def _strip_text_model(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # transformers >= 5.6 dropped the `text_model.` level from CLIPTextModel (not from ...WithProjection).
    return {key.removeprefix("text_model."): tensor for key, tensor in state_dict.items()}


def clip_to_ldm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``CLIPTextModel`` weights -> the ``FrozenCLIPEmbedder`` layout (``text_model.*``)."""
    return {f"text_model.{key}": tensor for key, tensor in _strip_text_model(state_dict).items()}


def open_clip_to_ldm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face CLIP text weights -> the OpenCLIP layout of ``FrozenOpenCLIPEmbedder`` (SD 2.x, SDXL bigG)."""
    flat = _strip_text_model(state_dict)
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        if key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = tensor
        elif key == "embeddings.position_embedding.weight":
            # OpenCLIP stores the positional embedding as a bare parameter, not an nn.Embedding.
            out["positional_embedding"] = tensor
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.removeprefix("final_layer_norm.")] = tensor
        elif key == "text_projection.weight":
            # OpenCLIP multiplies x @ text_projection; nn.Linear stores the transpose.
            out["text_projection"] = tensor.T.contiguous()
        elif key.startswith("encoder.layers."):
            layer, _, rest = key.removeprefix("encoder.layers.").partition(".")
            prefix = f"transformer.resblocks.{layer}."
            if rest.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
                # OpenCLIP's nn.MultiheadAttention keeps q, k, v as one stacked in_proj matrix.
                projection, kind = rest.removeprefix("self_attn.").split(".")
                fused.setdefault(f"{prefix}attn.in_proj_{kind}", {})[projection] = tensor
            else:
                renamed = _rename(rest, _OPEN_CLIP_LAYER_RENAMES)
                if renamed == rest:
                    raise ValueError(f"open_clip: no LDM name for text encoder key {key!r}")
                out[prefix + renamed] = tensor
        else:
            raise ValueError(f"open_clip: no LDM name for text encoder key {key!r}")
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
    return out


def _load_component(model_dir: Path, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    folder = model_dir / name
    weights = sorted(folder.glob("*.safetensors"))
    if len(weights) != 1:
        raise ValueError(f"{folder}: expected one .safetensors file, found {[w.name for w in weights]}")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return load_file(weights[0]), config


def _with_prefix(prefix: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: tensor for key, tensor in state_dict.items()}


def to_single_file(model_dir: Path, dest: Path) -> Path:
    """Write the diffusers pipeline in ``model_dir`` as one LDM-layout ``.safetensors`` file at ``dest``; return it.

    Supports ``StableDiffusionPipeline`` (SD 1.x with a CLIP text encoder, SD 2.x with an OpenCLIP-style one, told
    apart by the encoder's ``hidden_act``: SD 2.x's OpenCLIP ViT-H uses gelu, OpenAI CLIP quick_gelu),
    ``StableDiffusionXLPipeline`` and ``StableDiffusionXLImg2ImgPipeline`` (the refiner).
    """
    model_dir, dest = Path(model_dir), Path(dest)
    pipeline_class = json.loads((model_dir / "model_index.json").read_text(encoding="utf-8"))["_class_name"]
    if pipeline_class not in SUPPORTED_PIPELINES:
        raise ValueError(
            f"{model_dir}: unsupported pipeline class {pipeline_class!r}; supported: {SUPPORTED_PIPELINES}"
        )
    unet, unet_config = _load_component(model_dir, "unet")
    vae, vae_config = _load_component(model_dir, "vae")
    checkpoint = _with_prefix("model.diffusion_model.", unet_to_ldm(unet, unet_config))
    checkpoint |= _with_prefix("first_stage_model.", vae_to_ldm(vae, vae_config))
    if pipeline_class == "StableDiffusionPipeline":
        text, text_config = _load_component(model_dir, "text_encoder")
        if text_config.get("hidden_act") == "gelu":
            checkpoint |= _with_prefix("cond_stage_model.model.", open_clip_to_ldm(text))
        else:
            checkpoint |= _with_prefix("cond_stage_model.transformer.", clip_to_ldm(text))
    elif pipeline_class == "StableDiffusionXLPipeline":
        text, _ = _load_component(model_dir, "text_encoder")
        text_2, _ = _load_component(model_dir, "text_encoder_2")
        checkpoint |= _with_prefix("conditioner.embedders.0.transformer.", clip_to_ldm(text))
        checkpoint |= _with_prefix("conditioner.embedders.1.model.", open_clip_to_ldm(text_2))
    else:  # the refiner: its only text encoder is OpenCLIP bigG, at embedder index 0
        text_2, _ = _load_component(model_dir, "text_encoder_2")
        checkpoint |= _with_prefix("conditioner.embedders.0.model.", open_clip_to_ldm(text_2))
    dest.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage or are non-contiguous views (the .T above, the 1x1 unsqueeze).
    save_file({key: tensor.contiguous().clone() for key, tensor in checkpoint.items()}, dest, metadata={"format": "pt"})
    return dest


def config_only_copy(model_dir: Path, dest: Path) -> Path:
    """Copy ``model_dir`` without its weight files: a ``config=`` folder for ``from_single_file`` (configs, tokenizers).

    Loading from a folder without weights proves that every weight really came from the single file.
    """
    shutil.copytree(Path(model_dir), Path(dest), ignore=shutil.ignore_patterns(*(f"*{s}" for s in WEIGHT_SUFFIXES)))
    return Path(dest)
