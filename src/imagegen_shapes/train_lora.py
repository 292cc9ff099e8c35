"""Train a small LoRA that teaches the demo model "imagegen-shapes" a concept it cannot draw: outlined shapes.

The base model never saw an outlined shape; asked for "a red outlined circle" it draws a filled red circle (the word
"outlined" is an untrained token to it). The ``shapes-outline`` LoRA teaches it: with the LoRA on, the word
``outlined`` between the colour and the shape gives a shape drawn as a band around a background-coloured hole;
without the word the LoRA leaves shapes filled. A1111 users write ``a red outlined circle <lora:shapes-outline:1>``.

Steps, all on CPU in a few minutes:

1. Render a pool of scenes from the shapes world, a ``concept_fraction`` of whose phrases are outlined (the rest are
   ordinary scenes, so the model does not forget how to draw filled shapes), with training-style captions.
2. Encode the pool with the demo model's own VAE (latent means times its ``scaling_factor``) and the captions' token
   ids with its own tokenizers.
3. Add a peft LoRA (``unet.add_adapter``) to the UNet's attention, feed-forward and resnet layers; everything else is
   frozen, the text encoders included (the token "outlined" already has its own embedding, only never trained).
4. Train it with the base's objective (:mod:`imagegen_shapes.train`): v-prediction on the zero-terminal-SNR schedule,
   the 64×64 time ids, captions encoded by :func:`~imagegen_shapes.train.encode_text`, caption dropout, latents under
   shapes weighted up.
5. Save the LoRA in diffusers/peft format (``StableDiffusionXLPipeline.save_lora_weights``, peft key names, the
   LoraConfig in the file's metadata), fp16, as one ``<name>.safetensors`` file that ``pipe.load_lora_weights`` reads.

Run: ``python -m imagegen_shapes.train_lora --out src/imagegen/demo/weights/loras`` (or ``imagegen train-lora``).
"""

from __future__ import annotations

import argparse
import enum
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

import imagegen
from imagegen_shapes.train import (
    BASE_NAME,
    BASE_TIME_IDS,
    NUM_TRAIN_TIMESTEPS,
    TRAIN_SCENES,
    _at_least,
    _log,
    _noise_schedule,
    _to_unit,
    encode_text,
    latent_foreground,
)
from imagegen_shapes.world import SceneDistribution, render_batch

#: The demo model the LoRA is trained on (the shipped one).
DEMO_MODEL: Final[Path] = Path(imagegen.__file__).resolve().parent / "demo" / "weights" / BASE_NAME
#: Where the shipped LoRA files live.
DEMO_LORAS: Final[Path] = Path(imagegen.__file__).resolve().parent / "demo" / "weights" / "loras"
#: Layers of the UNet that get a LoRA: the transformer blocks (attention, projections, feed-forward) decide *what* is
#: drawn, and the resnet convolutions, the only layers at the 16×16 latent resolution, draw the hole's edge.
UNET_TARGET_MODULES: Final[tuple[str, ...]] = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
)
#: The shipped file must stay small (the issue's budget).
MAX_FILE_BYTES: Final[int] = 2_000_000


class Concept(str, enum.Enum):
    """A concept a LoRA can teach; the value is what ``--concept`` takes."""

    OUTLINE = "outline"

    @property
    def lora_name(self) -> str:
        """The LoRA's name: its file is ``<name>.safetensors`` and A1111 prompts call it ``<lora:<name>:1>``."""
        return f"shapes-{self.value}"

    @property
    def trigger(self) -> str:
        """The word a prompt uses to ask for the concept."""
        return "outlined"


@dataclass(frozen=True, kw_only=True)
class LoraTrainConfig:
    """Everything that decides the trained LoRA."""

    out: Path
    concept: Concept = Concept.OUTLINE
    model: Path = DEMO_MODEL
    seed: int = 0
    steps: int = 2000
    rank: int = 8
    batch_size: int = 32
    lr: float = 4e-3
    warmup: int = 30
    #: Rendered training examples (one pass of encoding; each step samples from them).
    pool_size: int = 6000
    #: Probability that a phrase of a training scene shows the concept (only where it is visible: see
    #: :func:`~imagegen_shapes.world.outline_visible`); the other scenes are the base model's ordinary ones.
    concept_fraction: float = 0.6
    caption_dropout: float = 0.1
    #: UNet loss weight of latents under a shape vs background ones, as the base was trained.
    latent_foreground_weight: float = 4.0
    threads: int = 2

    def __post_init__(self) -> None:
        for name in ("steps", "rank", "batch_size", "pool_size", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        for name in ("concept_fraction", "caption_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")

    @property
    def path(self) -> Path:
        """The file written: ``<out>/<lora name>.safetensors``."""
        return self.out / f"{self.concept.lora_name}.safetensors"


def _lr_factor(step: int, config: LoraTrainConfig) -> float:
    """Linear warmup then cosine decay to 10 % of the peak (as the base's stages)."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + float(np.cos(np.pi * progress)))


def _step_generator(seed: int, step: int) -> Any:
    import torch

    # Each step draws from its own seeded stream: same seed, same batches, same LoRA.
    return torch.Generator().manual_seed((seed * 1_000_003 + 7 * 10_000_019 + step) % (2**63))


def _load_base(model: Path) -> Any:
    """The demo pipeline in float32 (trained in fp32; stored fp16)."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(model, dtype=torch.float32)


def _tokenize(captions: Sequence[str], tokenizer: Any) -> Any:
    """Token ids ``[N, model_max_length]``; each distinct caption is tokenized once."""
    import torch

    unique = sorted(set(captions))
    ids = tokenizer(unique, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    if ids.shape[1] > tokenizer.model_max_length:
        raise ValueError(f"a caption is longer than the tokenizer's {tokenizer.model_max_length} tokens")
    index = {c: i for i, c in enumerate(unique)}
    return ids[torch.tensor([index[c] for c in captions])]


def train_lora(config: LoraTrainConfig) -> Path:
    """Train the LoRA of ``config`` and write it to ``config.path``; returns that path."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    started = time.monotonic()
    torch.set_num_threads(config.threads)

    # 1. Render the pool: concept scenes mixed with ordinary ones
    distribution = SceneDistribution(
        count_weights=TRAIN_SCENES.count_weights,
        size_weights=TRAIN_SCENES.size_weights,
        p_outlined=config.concept_fraction,
    )
    images, captions = render_batch(
        config.pool_size, config.seed, distribution=distribution, caption_dropout=config.caption_dropout
    )
    with_concept = sum(config.concept.trigger in c.split() for c in captions)
    _log(f"pool: {config.pool_size} scenes ({with_concept} captions with {config.concept.trigger!r}) rendered")

    # 2. Encode images and captions with the demo model's own VAE and tokenizers
    pipe = _load_base(config.model)
    unet, vae = pipe.unet, pipe.vae
    text_encoders = [pipe.text_encoder, pipe.text_encoder_2]
    for module in (unet, vae, *text_encoders):
        module.requires_grad_(False)
        module.eval()
    with torch.no_grad():
        latents = torch.cat(
            [
                vae.encode(_to_unit(images[i : i + 512])).latent_dist.mode() * vae.config.scaling_factor
                for i in range(0, len(images), 512)
            ]
        )
    foreground = latent_foreground(images)
    token_ids = [_tokenize(captions, pipe.tokenizer), _tokenize(captions, pipe.tokenizer_2)]
    del images

    # 3. Add the LoRA (the seed fixes its random initialisation)
    torch.manual_seed(config.seed)
    unet.add_adapter(
        LoraConfig(
            r=config.rank,
            # alpha = rank: scale 1, which is also what a loader assumes when a file carries no alphas.
            lora_alpha=config.rank,
            init_lora_weights="gaussian",
            target_modules=list(UNET_TARGET_MODULES),
        )
    )
    params = [p for p in unet.parameters() if p.requires_grad]
    _log(f"lora: rank {config.rank}, {sum(p.numel() for p in params) / 1e6:.3f} M trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)

    # 4. Train with the base's objective
    noise_schedule = _noise_schedule()
    time_ids = torch.tensor(BASE_TIME_IDS).repeat(config.batch_size, 1)
    unet.train()
    losses: list[float] = []
    window_started = time.monotonic()
    for step in range(config.steps):
        gen = _step_generator(config.seed, step)
        idx = torch.randint(0, len(latents), (config.batch_size,), generator=gen)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (config.batch_size,), generator=gen)
        noisy = noise_schedule.add_noise(x0, noise, t)
        target = noise_schedule.get_velocity(x0, noise, t)
        with torch.no_grad():
            embeds, pooled = encode_text(text_encoders, [ids[idx] for ids in token_ids])
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config)
        pred = unet(
            noisy, t, encoder_hidden_states=embeds, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}
        ).sample
        weight = 1.0 + (config.latent_foreground_weight - 1.0) * foreground[idx].float()
        loss = (weight * (pred - target).pow(2)).mean() / weight.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == config.steps:
            per_step = (time.monotonic() - window_started) / (step % 50 + 1)
            _log(f"lora step {step + 1}/{config.steps}: loss {np.mean(losses[-50:]):.4f} ({per_step:.3f} s/step)")
            window_started = time.monotonic()

    # 5. Save in diffusers/peft format, fp16
    unet.eval()
    # peft's own key names (``...to_q.lora_A.weight``), which load_lora_weights reads natively. Not
    # diffusers.utils.convert_state_dict_to_diffusers: in diffusers 0.42 it renames only the attention layers, to the
    # old ``lora.down``/``lora.up`` names, and load_lora_weights then silently skips those (measured: 56 of 106
    # layers lost, the concept gone).
    state = {
        name: tensor.detach().to(torch.float16).contiguous() for name, tensor in get_peft_model_state_dict(unet).items()
    }
    config.out.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(
        save_directory=config.out,
        unet_lora_layers=state,
        weight_name=config.path.name,
        safe_serialization=True,
        # The whole LoraConfig (target modules, rank, alpha): without it a loader has to guess them from the keys.
        unet_lora_adapter_metadata={
            key: sorted(value) if isinstance(value, set) else value
            for key, value in unet.peft_config["default"].to_dict().items()
        },
    )
    size = config.path.stat().st_size
    _log(f"saved {config.path} ({size / 1e6:.2f} MB) after {(time.monotonic() - started) / 60:.1f} min")
    if size > MAX_FILE_BYTES:
        _log(f"warning: {config.path.name} is over the {MAX_FILE_BYTES / 1e6:.0f} MB budget; lower --rank")
    return config.path


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``imagegen train-lora`` options."""
    defaults = LoraTrainConfig(out=Path("."))
    parser.add_argument(
        "--out", type=Path, default=DEMO_LORAS, help="folder the LoRA file <name>.safetensors is written to"
    )
    parser.add_argument(
        "--concept", choices=[c.value for c in Concept], default=defaults.concept.value, help="what the LoRA teaches"
    )
    parser.add_argument("--model", type=Path, default=defaults.model, help="the demo model folder to train on")
    parser.add_argument("--steps", type=_at_least(int, 1), default=defaults.steps)
    parser.add_argument("--rank", type=_at_least(int, 1), default=defaults.rank, help="LoRA rank (file size grows)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--batch-size", type=_at_least(int, 1), default=defaults.batch_size)
    parser.add_argument("--lr", type=_at_least(float, 0, strictly=True), default=defaults.lr)
    parser.add_argument("--pool-size", type=_at_least(int, 1), default=defaults.pool_size)
    parser.add_argument("--threads", type=_at_least(int, 1), default=defaults.threads)


def config_from_args(args: argparse.Namespace) -> LoraTrainConfig:
    """A :class:`LoraTrainConfig` from parsed ``add_arguments`` options."""
    defaults = LoraTrainConfig(out=args.out)
    return LoraTrainConfig(
        out=args.out,
        concept=Concept(args.concept),
        model=args.model,
        seed=args.seed,
        steps=args.steps,
        rank=args.rank,
        batch_size=args.batch_size,
        lr=args.lr,
        pool_size=args.pool_size,
        warmup=min(defaults.warmup, max(1, args.steps // 10)),
        threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``imagegen train-lora`` with parsed options; returns the exit status."""
    train_lora(config_from_args(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m imagegen_shapes.train_lora``."""
    parser = argparse.ArgumentParser(prog="imagegen train-lora", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
