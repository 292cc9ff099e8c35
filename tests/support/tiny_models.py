"""Tiny random-weight Stable Diffusion models (the diffusers fast-test pattern), saved as real diffusers folders.

Each family starts from imagegen's shipped full-size reference config (``src/imagegen/configs/<family>``) and shrinks
only the sizes, so every behavioural switch stays real: SD2's ``v_prediction`` DDIM scheduler, ``upcast_attention``
and linear projections, SDXL's ``text_time`` micro-conditioning, the refiner's aesthetic score, the SD1 vs SD2/SDXL
pad token. The tokenizers are the real CLIP BPE (49,408 tokens), so the text encoders keep the real vocabulary size.

Every model generates at its native 64x64 pixels (8x8 latents, VAE downsampling 8x) in well under a second on CPU.
Weights depend only on ``seed`` and the component's name, never on the family: the tiny SDXL base and refiner built
with the same seed share the very same ``text_encoder_2``, ``tokenizer_2`` and VAE, as the real pair does, so the
base→refiner latent handoff works with either's components.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

FAMILIES = ("sd1", "sd2", "sdxl-base", "sdxl-refiner")
#: Which shipped reference config each tiny family shrinks.
REFERENCE_FOR_FAMILY = MappingProxyType(
    {"sd1": "sd15", "sd2": "sd21", "sdxl-base": "sdxl-base", "sdxl-refiner": "sdxl-refiner"}
)
CONFIGS_ROOT = Path(__file__).resolve().parents[2] / "src" / "imagegen" / "configs"
CLIP_TOKENIZER_DIR = CONFIGS_ROOT / "clip-tokenizer"

#: Native size in pixels. The UNet's sample_size is in latents: 64 px / 8.
NATIVE_SIZE = 64
TEXT_HIDDEN = 32
# SDXL's second encoder is wider than the first, as in the real pair (CLIP-L 768 vs OpenCLIP bigG 1280). It must be:
# diffusers' single-file loader tells the two apart in an SDXL checkpoint only by their embedding width.
TEXT_2_HIDDEN = 64
TEXT_PROJECTION = 32
TIME_EMBED_DIM = 8

# Each component draws from its own seed stream (seed * 100 + offset); the offsets never change, so a given seed
# always gives the same weights, and the same component name gives the same weights in every family.
_COMPONENT_SEED_OFFSET = MappingProxyType({"unet": 0, "vae": 1, "text_encoder": 2, "text_encoder_2": 3})

_TEXT_CONFIG_KEYS_TO_DROP = ("_name_or_path", "architectures", "model_type", "torch_dtype", "transformers_version")


def _reference_json(family: str, relative: str) -> dict[str, Any]:
    path = CONFIGS_ROOT / REFERENCE_FOR_FAMILY[family] / relative
    config = json.loads(path.read_text(encoding="utf-8"))
    # Drop the recorded diffusers version: StableDiffusionPipeline "repairs" a UNet config from before 0.9.0 whose
    # sample_size is under 64 by forcing it to 64, which would make our 8-latent (64 px) UNet default to 512 px.
    config.pop("_diffusers_version", None)
    return config


def _unet_overrides(family: str) -> dict[str, Any]:
    common: dict[str, Any] = {"block_out_channels": (32, 64), "layers_per_block": 2, "sample_size": NATIVE_SIZE // 8}
    if family in ("sd1", "sd2"):
        # Same block order as the real SD1/SD2 UNet: cross-attention first, plain ResNet block last.
        common |= {
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": TEXT_HIDDEN,
        }
        # SD1 reads attention_head_dim as a head count (8 heads of 4); SD2 gives one per block, 8 channels per head.
        common["attention_head_dim"] = 8 if family == "sd1" else (4, 8)
        return common
    # SDXL: plain ResNet block first, as in the real base and refiner.
    common |= {
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (2, 4),
        "addition_time_embed_dim": TIME_EMBED_DIM,
    }
    if family == "sdxl-base":
        # Base: 6 time ids (original size, crop, target size) and the two encoders' hidden states concatenated.
        return common | {
            "transformer_layers_per_block": (1, 2),
            "cross_attention_dim": TEXT_HIDDEN + TEXT_2_HIDDEN,
            "projection_class_embeddings_input_dim": 6 * TIME_EMBED_DIM + TEXT_PROJECTION,
        }
    # Refiner: 5 time ids (original size, crop, aesthetic score), text_encoder_2 only, an int layer count as upstream.
    return common | {
        "transformer_layers_per_block": 2,
        "cross_attention_dim": TEXT_2_HIDDEN,
        "projection_class_embeddings_input_dim": 5 * TIME_EMBED_DIM + TEXT_PROJECTION,
    }


def _seeded(seed: int, component: str) -> torch.Generator:
    return torch.manual_seed(seed * 100 + _COMPONENT_SEED_OFFSET[component])


def _build_unet(family: str, seed: int, full_size: bool = False) -> Any:
    from diffusers import UNet2DConditionModel

    config = _reference_json(family, "unet/config.json") | ({} if full_size else _unet_overrides(family))
    with torch.random.fork_rng(devices=[]):
        _seeded(seed, "unet")
        return UNet2DConditionModel.from_config(config)


def _build_vae(family: str, seed: int, full_size: bool = False) -> Any:
    from diffusers import AutoencoderKL

    # Four blocks keep the standard 8x downsampling (vae_scale_factor = 2 ** 3); the channels are the fewest that
    # still have a channel change (so encoder/decoder shortcut convolutions exist, as in the real VAE).
    tiny = {
        "block_out_channels": (8, 16, 32, 32),
        "norm_num_groups": 8,
        "layers_per_block": 1,
        "sample_size": NATIVE_SIZE,
    }
    config = _reference_json(family, "vae/config.json") | ({} if full_size else tiny)
    with torch.random.fork_rng(devices=[]):
        _seeded(seed, "vae")
        return AutoencoderKL.from_config(config)


def _build_text_encoder(family: str, component: str, seed: int, full_size: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    reference = _reference_json(family, f"{component}/config.json")
    fields = {k: v for k, v in reference.items() if k not in _TEXT_CONFIG_KEYS_TO_DROP}
    hidden = TEXT_2_HIDDEN if component == "text_encoder_2" else TEXT_HIDDEN
    fields |= (
        {"vocab_size": 49408}
        if full_size
        else {
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "projection_dim": TEXT_PROJECTION,
            "max_position_embeddings": 77,
            "vocab_size": 49408,  # the real CLIP vocabulary: the tokenizer emits real ids up to 49407
        }
    )
    model_class = (
        CLIPTextModelWithProjection if "CLIPTextModelWithProjection" in reference["architectures"] else CLIPTextModel
    )
    with torch.random.fork_rng(devices=[]):
        _seeded(seed, component)
        return model_class(CLIPTextConfig(**fields))


def _load_tokenizer(family: str, component: str) -> Any:
    from transformers import CLIPTokenizer

    # The reference tokenizer_config/special_tokens_map decide the pad token ("!" for SD2 / SDXL tokenizer_2).
    with tempfile.TemporaryDirectory(prefix="tiny-tokenizer-") as tmp:
        folder = Path(tmp)
        for source in (CONFIGS_ROOT / REFERENCE_FOR_FAMILY[family] / component).iterdir():
            shutil.copyfile(source, folder / source.name)
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(CLIP_TOKENIZER_DIR / name, folder / name)
        return CLIPTokenizer.from_pretrained(folder)


def _build_scheduler(family: str) -> Any:
    import diffusers

    config = _reference_json(family, "scheduler/scheduler_config.json")
    return getattr(diffusers, config["_class_name"]).from_config(config)


def build_tiny_pipeline(family: str, *, seed: int = 0, full_size: bool = False) -> Any:
    """An in-memory tiny pipeline of ``family`` (one of :data:`FAMILIES`), deterministic for a given ``seed``;
    ``full_size`` keeps the reference configs' sizes (random weights of the real architecture, for benchmarks)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    unet, vae = _build_unet(family, seed, full_size), _build_vae(family, seed, full_size)
    scheduler = _build_scheduler(family)
    if family in ("sd1", "sd2"):
        return StableDiffusionPipeline(
            vae=vae,
            text_encoder=_build_text_encoder(family, "text_encoder", seed, full_size),
            tokenizer=_load_tokenizer(family, "tokenizer"),
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    text_encoder_2 = _build_text_encoder(family, "text_encoder_2", seed, full_size)
    tokenizer_2 = _load_tokenizer(family, "tokenizer_2")
    if family == "sdxl-base":
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=_build_text_encoder(family, "text_encoder", seed, full_size),
            text_encoder_2=text_encoder_2,
            tokenizer=_load_tokenizer(family, "tokenizer"),
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=True,
            # The watermarker is an optional extra package; never let its presence change test images.
            add_watermarker=False,
        )
    # The refiner has no first text encoder at all (model_index lists it as [null, null]).
    return StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=text_encoder_2,
        tokenizer=None,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )


def build_tiny_model(family: str, dest: Path, *, seed: int = 0) -> Path:
    """Save a tiny random-weight diffusers pipeline of ``family`` into ``dest`` (safetensors) and return ``dest``.

    ``family`` is one of :data:`FAMILIES`. The folder loads with ``DiffusionPipeline.from_pretrained(dest)``.
    """
    pipeline = build_tiny_pipeline(family, seed=seed)
    dest = Path(dest)
    pipeline.save_pretrained(dest, safe_serialization=True)
    return dest


class TinyModelCache(Mapping[str, Path]):
    """family -> saved tiny model folder under ``root``, each built on first access only (then reused).

    A read-only Mapping, so tests index it like a dict (``tiny_models["sd1"]``) without paying for the families they
    never touch. Thread-safe: the hub mirror's handler threads may ask for a folder while a test does.
    """

    def __init__(self, root: Path, *, seed: int = 0) -> None:
        self._root = Path(root)
        self._seed = seed
        self._lock = threading.Lock()
        self._built: dict[str, Path] = {}
        #: Wall-clock seconds each family took to build and save, for reporting fixture cost.
        self.build_seconds: dict[str, float] = {}

    def __getitem__(self, family: str) -> Path:
        if family not in FAMILIES:
            raise KeyError(family)
        with self._lock:
            if family not in self._built:
                started = time.perf_counter()
                staging = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=self._root))
                build_tiny_model(family, staging, seed=self._seed)
                # Renamed into place whole, so a folder under its final name is always complete.
                os.replace(staging, self._root / family)
                self.build_seconds[family] = time.perf_counter() - started
                self._built[family] = self._root / family
            return self._built[family]

    def __iter__(self) -> Iterator[str]:
        return iter(FAMILIES)

    def __len__(self) -> int:
        return len(FAMILIES)

    def __contains__(self, family: object) -> bool:
        # Mapping's default would build the model just to answer membership.
        return family in FAMILIES
