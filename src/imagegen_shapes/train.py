"""Train the embedded demo model "imagegen-shapes" from scratch on the shapes world, in SDXL base + refiner format.

Stages, in order (each resumable from its last checkpoint; a finished stage is skipped on resume):

1. ``pool``: render a fixed pool of scenes (uint8 images, captions) once.
2. ``vae``: an ``AutoencoderKL`` with 4× downsampling (64×64×3 → 16×16×4), L1 + MSE (foreground pixels weighted
   up) + a tiny KL term; its ``scaling_factor`` is set from the latent std, then the whole pool is encoded once (the
   UNets never run the encoder).
3. ``base``: two CLIP text encoders + a ``text_time`` UNet trained jointly with caption dropout, v-prediction on a
   zero-terminal-SNR schedule (so the flat background colour is learnt at the pure-noise end), EMA of the weights.
4. ``refiner``: a UNet of the base's shape conditioned on the base's frozen ``text_encoder_2`` and an aesthetic score,
   started from the base's trained weights (:func:`init_refiner_from_base`: at step 0 it is the base without
   ``text_encoder``'s half of the keys and values) and fine-tuned only on the low-noise end of the schedule (what
   ``denoising_start=0.8`` hands over, a little wider). A refiner trained from scratch in the same minutes (run 2)
   made every category worse than the base alone.
5. ``decoder``: the VAE decoder fine-tuned alone (encoder frozen, so the UNets' latent space is unchanged): sharper
   reconstructions at the cost of a few minutes that need not come before the UNets.
6. ``export``: two diffusers folders (``imagegen-shapes``, ``imagegen-shapes-refiner``) with fp16 safetensors, the real
   CLIP tokenizers, the inference scheduler and an ``imagegen.json`` of defaults.

Run: ``python -m imagegen_shapes.train --run-dir /path/to/run`` (``--resume`` to go on after an interruption).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

import imagegen
from imagegen_shapes.analyse import aggregate, analyse, score
from imagegen_shapes.world import SceneDistribution, example, render_pool

CONFIGS_ROOT: Final[Path] = Path(imagegen.__file__).resolve().parent / "configs"
CLIP_TOKENIZER_DIR: Final[Path] = CONFIGS_ROOT / "clip-tokenizer"
BASE_NAME: Final[str] = "imagegen-shapes"
REFINER_NAME: Final[str] = "imagegen-shapes-refiner"
IMAGE_SIZE: Final[int] = 64
LATENT_SIZE: Final[int] = 16
#: What the SDXL pipeline feeds at 64×64: original size, crop top-left, target size.
BASE_TIME_IDS: Final[tuple[float, ...]] = (64.0, 64.0, 0.0, 0.0, 64.0, 64.0)
#: The refiner pipeline's defaults: aesthetic_score=6.0 for the prompt, negative_aesthetic_score=2.5 for the negative.
AESTHETIC_POSITIVE: Final[float] = 6.0
AESTHETIC_NEGATIVE: Final[float] = 2.5
NUM_TRAIN_TIMESTEPS: Final[int] = 1000
# The text encoders' size is mostly their 49,408-row vocabulary table (hidden × 49,408 fp16 values each, twice for
# text_encoder_2: the refiner folder carries its own copy), so these widths decide whether a base-sized refiner fits
# the 30 MB budget; a world of ~60 distinct words needs no more.
TEXT_1_HIDDEN: Final[int] = 24
# Must differ from TEXT_1_HIDDEN: diffusers' single-file loader tells SDXL's two encoders apart by their width.
TEXT_2_HIDDEN: Final[int] = 32
#: Token positions (SD uses 77): the longest shapes-world caption is 25 tokens with BOS/EOS, and every position costs
#: text-encoder and cross-attention time in each training step (measured: 77 → 32 is ~10 % of a base step).
MAX_TOKENS: Final[int] = 32
TEXT_PROJECTION: Final[int] = 48
TIME_EMBED_DIM: Final[int] = 32
#: Loss weight of VAE pixels that are not background.
FOREGROUND_WEIGHT: Final[float] = 10.0
#: A pixel is foreground for the UNet loss mask when a channel differs from the background by more than this (0-255).
LATENT_MASK_LEVELS: Final[int] = 12
#: The training scenes: more small shapes and threes of a kind than the world's defaults — run 3's evaluation misses
#: were mostly small shapes (3×3 latents) and threes (counting 0.60).
TRAIN_SCENES: Final[SceneDistribution] = SceneDistribution(
    count_weights=(0.42, 0.28, 0.30), size_weights=(0.32, 0.43, 0.25)
)
#: Weight of the VAE's KL term (per latent element): just enough to keep the latent space smooth for the UNet.
KL_WEIGHT: Final[float] = 1e-4
STAGES: Final[tuple[str, ...]] = ("pool", "vae", "base", "refiner", "decoder", "export")
_TEXT_CONFIG_KEYS_TO_DROP: Final[tuple[str, ...]] = (
    "_name_or_path",
    "architectures",
    "model_type",
    "torch_dtype",
    "transformers_version",
)


@dataclass(frozen=True, kw_only=True)
class StageBudget:
    """How long one stage trains: ``steps`` shape the learning-rate schedule; ``minutes`` (0 = none) stops it early."""

    steps: int
    batch_size: int
    lr: float
    minutes: float = 0.0
    warmup: int = 100


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that decides the trained weights (saved as ``config.json`` in the run folder)."""

    run_dir: Path
    seed: int = 0
    pool_size: int = 100_000
    distribution: SceneDistribution = TRAIN_SCENES
    caption_dropout: float = 0.1
    #: UNet loss weight of latents under a shape (any non-background pixel in their 4×4 block) vs background ones.
    #: A small shape is 3×3 of the 16×16 latents: unweighted, 96 % of the loss is background.
    latent_foreground_weight: float = 4.0
    # Step counts fit 2 free cores (measured in run 4, s/step: vae 0.75-0.78, base 0.45-0.61 with both text encoders,
    # refiner 0.42-0.50, decoder 0.56; whole run 112.8 min); the minute caps only stop a stage that runs slower than
    # that (other work on the machine), keeping the whole run under 2 hours.
    vae: StageBudget = StageBudget(steps=1300, batch_size=32, lr=1e-3, warmup=50, minutes=19.0)
    base: StageBudget = StageBudget(steps=8000, batch_size=64, lr=6e-4, warmup=200, minutes=71.0)
    #: Fine-tuning from the base's weights (lower peak rate than training from scratch).
    refiner: StageBudget = StageBudget(steps=1600, batch_size=64, lr=2e-4, warmup=50, minutes=16.0)
    decoder: StageBudget = StageBudget(steps=600, batch_size=32, lr=3e-4, warmup=20, minutes=6.5)
    #: Refiner timesteps are drawn from [0, refiner_max_timestep): denoising_start=0.8 hands over t < 200.
    refiner_max_timestep: int = 300
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    #: Held-out scenes whose VAE reconstructions are scored after the vae and decoder stages.
    vae_check_scenes: int = 256
    #: Free wordings of each pool scene besides its grammar caption (world.describe): "a single square that is green",
    #: other orders, connectors and position/background phrases. Run 4 and before: 0.
    phrasings: int = 3
    #: Share of training examples shown the grammar caption rather than a free wording.
    grammar_share: float = 0.4
    bf16: bool = False
    threads: int = 2
    guidance_scale: float = 3.0

    def __post_init__(self) -> None:
        if not self.latent_foreground_weight > 0:
            raise ValueError(f"latent_foreground_weight must be > 0, got {self.latent_foreground_weight!r}")
        if not 0.0 <= self.grammar_share <= 1.0:
            raise ValueError(f"grammar_share must be in [0, 1], got {self.grammar_share!r}")
        if self.phrasings < 0:
            raise ValueError(f"phrasings must be >= 0, got {self.phrasings!r}")


# --------------------------------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------------------------------


def _reference_json(family: str, relative: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((CONFIGS_ROOT / family / relative).read_text(encoding="utf-8"))
    # A recorded old diffusers version makes some pipelines "repair" a small sample_size up to 64 latents.
    config.pop("_diffusers_version", None)
    config.pop("_name_or_path", None)
    return config


def build_vae() -> Any:
    """A small ``AutoencoderKL``: three blocks, so two downsamples (64 px → 16 latents), 4 latent channels."""
    from diffusers import AutoencoderKL

    config = _reference_json("sdxl-base", "vae/config.json") | {
        # 32 channels at full resolution: with 16 (run 1) edges came out soft and only 75 % of reconstructions passed
        # the analyser; the 64×64 convolutions dominate the cost on CPU, so the inner blocks stay narrow.
        "block_out_channels": (32, 32, 64),
        "down_block_types": ("DownEncoderBlock2D",) * 3,
        "up_block_types": ("UpDecoderBlock2D",) * 3,
        "layers_per_block": 1,
        "norm_num_groups": 8,
        # Shapes are local: the 16×16 self-attention of the mid block costs more than it gives here.
        "mid_block_add_attention": False,
        "sample_size": IMAGE_SIZE,
        # Small and trained in fp32 weights, fp16-safe: no need to upcast when decoding.
        "force_upcast": False,
        "scaling_factor": 1.0,
    }
    return AutoencoderKL.from_config(config)


def build_text_encoder(component: str) -> Any:
    """``text_encoder`` (CLIPTextModel) or ``text_encoder_2`` (CLIPTextModelWithProjection), small, real vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    reference = _reference_json("sdxl-base", f"{component}/config.json")
    fields = {k: v for k, v in reference.items() if k not in _TEXT_CONFIG_KEYS_TO_DROP}
    hidden = TEXT_2_HIDDEN if component == "text_encoder_2" else TEXT_1_HIDDEN
    fields |= {
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        # SDXL reads the penultimate layer's hidden states, so the last layer only feeds text_encoder_2's pooled output.
        "num_hidden_layers": 3,
        "num_attention_heads": hidden // 8,
        "projection_dim": TEXT_PROJECTION,
        "max_position_embeddings": MAX_TOKENS,
        "vocab_size": 49408,  # the real CLIP tokenizer emits ids up to 49407
    }
    if component == "text_encoder_2":
        return CLIPTextModelWithProjection(CLIPTextConfig(**fields))
    return CLIPTextModel(CLIPTextConfig(**fields))


def build_unet(kind: str) -> Any:
    """The base (``kind="base"``) or refiner UNet: 16×16 latents, attention only at 8×8 and below (cheap on CPU).

    Both have the same blocks, so the refiner can start from the base's weights; they differ where SDXL's do: the
    refiner cross-attends to ``text_encoder_2`` alone and its ``time_ids`` end in an aesthetic score (5 numbers, not 6).
    """
    from diffusers import UNet2DConditionModel

    family = "sdxl-base" if kind == "base" else "sdxl-refiner"
    config = _reference_json(family, "unet/config.json")
    time_ids = len(BASE_TIME_IDS) if kind == "base" else len(BASE_TIME_IDS) - 1
    config |= {
        "block_out_channels": (32, 64, 128),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (2, 4, 8),
        "transformer_layers_per_block": 1,
        "cross_attention_dim": TEXT_1_HIDDEN + TEXT_2_HIDDEN if kind == "base" else TEXT_2_HIDDEN,
        "projection_class_embeddings_input_dim": time_ids * TIME_EMBED_DIM + TEXT_PROJECTION,
        "sample_size": LATENT_SIZE,
        "layers_per_block": 1,
        "addition_time_embed_dim": TIME_EMBED_DIM,
        "norm_num_groups": 32,
    }
    config.pop("_class_name", None)
    return UNet2DConditionModel.from_config(config)


def init_refiner_from_base(refiner: Any, base: Any) -> None:
    """Start the refiner UNet from the trained base UNet (same blocks; see :func:`build_unet`).

    Every weight is copied except where the two differ, and those are set so that the refiner starts out computing
    what the base would with ``text_encoder``'s half of the prompt embedding left out:

    - cross-attention keys and values read only ``text_encoder_2``'s states, the last ``TEXT_2_HIDDEN`` of the base's
      ``TEXT_1_HIDDEN + TEXT_2_HIDDEN`` input columns;
    - the added-conditioning projection takes the pooled embedding and 5 time ids instead of 6: the first four
      (original size, crop) keep their columns; the base only ever saw one target size, so the two target-size columns
      are folded into the bias, and the aesthetic score's columns start at zero.
    """
    import torch

    base_state = base.state_dict()
    state = refiner.state_dict()
    width = TIME_EMBED_DIM
    pooled = TEXT_PROJECTION
    with torch.no_grad():
        for name, tensor in state.items():
            source = base_state[name]
            if source.shape == tensor.shape:
                tensor.copy_(source)
            elif name.endswith(("attn2.to_k.weight", "attn2.to_v.weight")):
                tensor.copy_(source[:, TEXT_1_HIDDEN:])
            elif name == "add_embedding.linear_1.weight":
                kept = pooled + 4 * width
                tensor.zero_()
                tensor[:, :kept] = source[:, :kept]
            else:
                raise ValueError(f"refiner weight {name} {tuple(tensor.shape)} has no counterpart in the base")
        projection = base_state["add_embedding.linear_1.weight"]
        target_size = base.add_time_proj(torch.tensor(BASE_TIME_IDS[4:])).flatten().to(projection.dtype)
        state["add_embedding.linear_1.bias"] += projection[:, pooled + 4 * width :] @ target_size
    refiner.load_state_dict(state)


def load_tokenizer(component: str) -> Any:
    """The real CLIP BPE tokenizer with SDXL's settings for ``tokenizer`` or ``tokenizer_2`` (which pads with ``!``)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="imagegen-tokenizer-") as tmp:
        folder = Path(tmp)
        for source in (CONFIGS_ROOT / "sdxl-base" / component).iterdir():
            shutil.copyfile(source, folder / source.name)
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(CLIP_TOKENIZER_DIR / name, folder / name)
        return CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_TOKENS)


def scheduler_config() -> dict[str, Any]:
    """The noise schedule trained and sampled with: SDXL's betas rescaled to zero terminal SNR, v-prediction."""
    return {
        "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        # With a zero-SNR last step, sampling must start exactly there: "trailing" spacing does.
        "timestep_spacing": "trailing",
        "steps_offset": 1,
    }


def build_inference_scheduler() -> Any:
    """The scheduler saved with the model (Euler, as SDXL ships), on the trained schedule."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**scheduler_config())


def count_parameters(module: Any) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------------------------------
# Training helpers
# --------------------------------------------------------------------------------------------------------------------


def lr_factor(step: int, budget: StageBudget) -> float:
    """Linear warmup then cosine decay to 10 % of the peak learning rate."""
    if step < budget.warmup:
        return (step + 1) / budget.warmup
    progress = min(1.0, (step - budget.warmup) / max(1, budget.steps - budget.warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


class Ema:
    """Exponential moving average of a set of parameters (with the usual warm-up of the decay)."""

    def __init__(self, parameters: Iterable[Any], decay: float) -> None:
        self.decay = decay
        self.shadow = [p.detach().clone() for p in parameters]

    def update(self, parameters: Iterable[Any], step: int) -> None:
        import torch

        decay = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for s, p in zip(self.shadow, parameters, strict=True):
                s.lerp_(p.detach(), 1.0 - decay)

    def copy_to(self, parameters: Iterable[Any]) -> None:
        import torch

        with torch.no_grad():
            for s, p in zip(self.shadow, parameters, strict=True):
                p.copy_(s)


def _step_generator(seed: int, stage: str, step: int) -> Any:
    import torch

    # Every step draws from its own seeded stream, so a resumed run sees exactly the batches of an uninterrupted one.
    offset = STAGES.index(stage) + 1
    return torch.Generator().manual_seed((seed * 1_000_003 + offset * 10_000_019 + step) % (2**63))


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # a checkpoint under its final name is always complete


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _progress(total: int, initial: int, desc: str) -> Any:
    from tqdm import tqdm

    # mininterval keeps a log file readable when stderr is redirected.
    return tqdm(total=total, initial=initial, desc=desc, mininterval=30.0, file=sys.stderr)


def _to_unit(images: np.ndarray) -> Any:
    """uint8 [N, H, W, 3] → float [N, 3, H, W] in [-1, 1]."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _to_uint8(tensor: Any) -> np.ndarray:
    return ((tensor.clamp(-1, 1) + 1) * 127.5 + 0.5).byte().permute(0, 2, 3, 1).numpy()


def _marker(run_dir: Path, stage: str) -> Path:
    return run_dir / f"{stage}.done"


class _Stopwatch:
    def __init__(self, minutes: float) -> None:
        self.started = time.monotonic()
        self.limit = minutes * 60.0 if minutes > 0 else math.inf

    def expired(self) -> bool:
        return time.monotonic() - self.started > self.limit


# --------------------------------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------------------------------


def stage_pool(config: TrainConfig) -> None:
    """Render ``pool_size`` examples of stream ``seed`` once: images uint8 and, per image, its grammar caption and
    ``phrasings`` free wordings of the same scene."""
    path = config.run_dir / "pool.npz"
    started = time.monotonic()
    images, captions = render_pool(
        config.pool_size, config.seed, distribution=config.distribution, phrasings=config.phrasings
    )
    np.savez(path, images=images, captions=np.array(captions))
    _log(f"pool: {config.pool_size} examples rendered in {time.monotonic() - started:.0f} s")


def _load_pool(config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The pool's images and its captions ``[N, 1 + phrasings]`` (a pool of an older run: ``[N]``, made ``[N, 1]``)."""
    data = np.load(config.run_dir / "pool.npz")
    captions = data["captions"].astype(str)
    return data["images"], captions.reshape(len(captions), -1)


def _vae_reconstruction_scores(vae: Any, config: TrainConfig) -> dict[str, float]:
    """Analyser scores of VAE reconstructions of held-out scenes (stream ``seed + 1``) against their captions."""
    import torch

    examples = [example(config.seed + 1, i) for i in range(config.vae_check_scenes)]
    images = np.stack([ex.image for ex in examples])
    with torch.no_grad():
        recon = vae.decode(vae.encode(_to_unit(images)).latent_dist.mode()).sample
    results = [score(ex.scene, analyse(img)) for ex, img in zip(examples, _to_uint8(recon), strict=True)]
    summary = aggregate(results)
    summary["all"] = float(np.mean([all(r.values()) for r in results]))
    summary["mae"] = float(np.abs(images.astype(np.float32) - _to_uint8(recon).astype(np.float32)).mean())
    return summary


def _reconstruction_loss(recon: Any, x: Any) -> Any:
    """L1 + MSE, with pixels away from the background colour weighted ``FOREGROUND_WEIGHT`` times more.

    Shapes cover a few percent of the canvas: unweighted, the loss is all background and object colours never come out
    right (measured: 3 % of reconstructions with the right colour after 1,000 steps). The background colour is read at
    the corner pixel, which shapes never touch.
    """
    foreground = (x - x[:, :, :1, :1]).abs().amax(1, keepdim=True) > 0.05
    weight = 1.0 + (FOREGROUND_WEIGHT - 1.0) * foreground.float()
    return (weight * ((recon - x).abs() + (recon - x).pow(2))).mean() / weight.mean()


def _train_vae(vae: Any, images: np.ndarray, config: TrainConfig, stage: str) -> int:
    """The step loop of the ``vae`` stage (whole VAE) and the ``decoder`` stage (decoder only); returns the last step.

    In the ``decoder`` stage the encoder is frozen (and runs without gradients), so the latent space the UNets learnt
    stays exactly the same; only what the decoder makes of it changes.
    """
    import torch

    budget: StageBudget = getattr(config, stage)
    train_encoder = stage == "vae"
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=budget.lr, weight_decay=0.0)
    ckpt_path = config.run_dir / f"{stage}.ckpt"
    step = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, weights_only=False)
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        _log(f"{stage}: resumed at step {step}")
    clock = _Stopwatch(budget.minutes)
    bar = _progress(budget.steps, step, stage)
    vae.train()
    while step < budget.steps and not clock.expired():
        gen = _step_generator(config.seed, stage, step)
        idx = torch.randint(0, len(images), (budget.batch_size,), generator=gen).numpy()
        x = _to_unit(images[idx])
        for group in optimizer.param_groups:
            group["lr"] = budget.lr * lr_factor(step, budget)
        with torch.set_grad_enabled(train_encoder):
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            recon = vae.decode(z).sample.float()
        rec = _reconstruction_loss(recon, x)
        kl = posterior.kl().mean() / z[0].numel()
        loss = rec + KL_WEIGHT * kl if train_encoder else rec
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        bar.update(1)
        if step % 50 == 0:
            _log(f"{stage} step {step}: rec {rec.item():.4f} kl {kl.item():.3f}")
        if step % config.checkpoint_every == 0:
            _save_checkpoint(ckpt_path, {"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step})
    bar.close()
    vae.eval()
    return step


def stage_vae(config: TrainConfig) -> None:
    """Train the VAE on the pool, measure its reconstructions, set ``scaling_factor``, encode the pool."""
    import torch

    images, _ = _load_pool(config)
    torch.manual_seed(config.seed)
    vae = build_vae()
    _log(f"vae: {count_parameters(vae) / 1e6:.2f} M parameters")
    step = _train_vae(vae, images, config, "vae")
    vae.eval()
    # Latent std over a sample of the pool decides the scaling factor (unit-variance latents for the UNet).
    with torch.no_grad():
        sample = vae.encode(_to_unit(images[:2048])).latent_dist.mode()
    scaling = float(1.0 / sample.std())
    vae.register_to_config(scaling_factor=scaling)
    report = _vae_reconstruction_scores(vae, config)
    report |= {"steps": step, "scaling_factor": scaling, "latent_mean": float(sample.mean())}
    _log(f"vae: {step} steps, scaling_factor {scaling:.4f}, reconstruction scores {report}")
    (config.run_dir / "vae_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    vae.save_pretrained(config.run_dir / "vae")
    # Encode the whole pool once: latent means, already scaled.
    latents = torch.empty((len(images), 4, LATENT_SIZE, LATENT_SIZE), dtype=torch.float16)
    with torch.no_grad():
        for start in range(0, len(images), 512):
            chunk = _to_unit(images[start : start + 512])
            latents[start : start + 512] = (vae.encode(chunk).latent_dist.mode() * scaling).half()
    torch.save(latents, config.run_dir / "latents.pt")
    _log("vae: pool encoded")


def _tokenize_pool(captions: np.ndarray, tokenizers: Sequence[Any]) -> list[Any]:
    """Token ids ``[N, wordings, MAX_TOKENS]`` per tokenizer for captions ``[N, wordings]``; each distinct caption is
    tokenized once (none may be cut short)."""
    import torch

    flat = [str(c) for c in captions.reshape(-1)]
    unique = sorted(set(flat) | {""})
    index = {c: i for i, c in enumerate(unique)}
    rows = torch.tensor([index[c] for c in flat])
    out = []
    for tokenizer in tokenizers:
        longest = max(len(tokens) for tokens in tokenizer(unique).input_ids)
        if longest > MAX_TOKENS:
            raise ValueError(f"a caption has {longest} tokens, more than the text encoders' {MAX_TOKENS} positions")
        ids = tokenizer(unique, padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
        out.append(ids[rows].view(*captions.shape, MAX_TOKENS))
    return out


def caption_columns(batch: int, wordings: int, grammar_share: float, generator: Any) -> Any:
    """Which wording each example of a step is shown: the grammar caption (column 0) with probability
    ``grammar_share``, else one of the free wordings, uniformly."""
    import torch

    if wordings == 1:
        return torch.zeros(batch, dtype=torch.long)
    free = torch.randint(1, wordings, (batch,), generator=generator)
    return torch.where(torch.rand(batch, generator=generator) < grammar_share, 0, free)


def _empty_ids(tokenizer: Any) -> Any:
    return tokenizer([""], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids


def encode_text(text_encoders: Sequence[Any], token_ids: Sequence[Any]) -> tuple[Any, Any]:
    """What the SDXL pipelines compute: penultimate hidden states concatenated, pooled output of the last encoder."""
    import torch

    embeds = []
    pooled = None
    for encoder, ids in zip(text_encoders, token_ids, strict=True):
        out = encoder(ids, output_hidden_states=True)
        pooled = out[0]
        embeds.append(out.hidden_states[-2])
    return torch.cat(embeds, dim=-1), pooled


def _noise_schedule() -> Any:
    from diffusers import DDPMScheduler

    config = scheduler_config()
    return DDPMScheduler(**{k: v for k, v in config.items() if k not in ("timestep_spacing", "steps_offset")})


def latent_foreground(images: np.ndarray, chunk: int = 4096) -> Any:
    """``[n, 1, 16, 16]`` bool: which latents of each uint8 image ``[n, 64, 64, 3]`` cover a non-background pixel.

    The background colour is read at the corner pixel (shapes never touch it); a latent is foreground when any pixel
    of its 4×4 block differs from it by more than ``LATENT_MASK_LEVELS`` in some channel (antialiased edges included).
    """
    import torch

    scale = IMAGE_SIZE // LATENT_SIZE
    masks = torch.empty((len(images), 1, LATENT_SIZE, LATENT_SIZE), dtype=torch.bool)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].astype(np.int16)
        differs = (np.abs(block - block[:, :1, :1]) > LATENT_MASK_LEVELS).any(axis=-1)
        cells = differs.reshape(len(block), LATENT_SIZE, scale, LATENT_SIZE, scale).any(axis=(2, 4))
        masks[start : start + len(block), 0] = torch.from_numpy(cells)
    return masks


def _train_unet_stage(config: TrainConfig, stage: str) -> None:
    """The base (UNet + both text encoders) or the refiner (UNet; frozen text_encoder_2 of the base)."""
    import torch

    budget = config.base if stage == "base" else config.refiner
    images, captions = _load_pool(config)
    foreground = latent_foreground(images)
    del images
    latents = torch.load(config.run_dir / "latents.pt")
    tokenizers = [load_tokenizer("tokenizer"), load_tokenizer("tokenizer_2")]
    all_ids = _tokenize_pool(captions, tokenizers)
    empty_ids = [_empty_ids(t) for t in tokenizers]
    torch.manual_seed(config.seed + (0 if stage == "base" else 1))
    unet = build_unet(stage)
    if stage == "refiner":
        from diffusers import UNet2DConditionModel

        init_refiner_from_base(unet, UNet2DConditionModel.from_pretrained(config.run_dir / "base" / "unet"))
    if stage == "base":
        text_encoders = [build_text_encoder("text_encoder"), build_text_encoder("text_encoder_2")]
        trainable = [unet, *text_encoders]
    else:
        from transformers import CLIPTextModelWithProjection

        text_encoders = [CLIPTextModelWithProjection.from_pretrained(config.run_dir / "base" / "text_encoder_2")]
        text_encoders[0].requires_grad_(False)
        text_encoders[0].eval()
        all_ids, empty_ids = all_ids[1:], empty_ids[1:]
        trainable = [unet]
    params = [p for module in trainable for p in module.parameters()]
    optimizer = torch.optim.AdamW(params, lr=budget.lr, weight_decay=0.01)
    ema = Ema(params, config.ema_decay)
    ckpt_path = config.run_dir / f"{stage}.ckpt"
    step = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, weights_only=False)
        for module, module_state in zip(trainable, state["models"], strict=True):
            module.load_state_dict(module_state)
        optimizer.load_state_dict(state["optimizer"])
        ema.shadow = state["ema"]
        step = state["step"]
        _log(f"{stage}: resumed at step {step}")
    trainable_millions = sum(p.numel() for p in params) / 1e6
    _log(f"{stage}: UNet {count_parameters(unet) / 1e6:.2f} M parameters, {trainable_millions:.2f} M trainable")
    noise_schedule = _noise_schedule()
    max_t = NUM_TRAIN_TIMESTEPS if stage == "base" else config.refiner_max_timestep
    clock = _Stopwatch(budget.minutes)
    bar = _progress(budget.steps, step, stage)
    for module in trainable:
        module.train()
    losses: list[float] = []
    step_started = time.monotonic()
    while step < budget.steps and not clock.expired():
        gen = _step_generator(config.seed, stage, step)
        batch = budget.batch_size
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        x0 = latents[idx].float()
        dropped = torch.rand(batch, generator=gen) < config.caption_dropout
        column = caption_columns(batch, all_ids[0].shape[1], config.grammar_share, gen)
        ids = [
            torch.where(dropped[:, None], empty, all_i[idx, column])
            for empty, all_i in zip(empty_ids, all_ids, strict=True)
        ]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, max_t, (batch,), generator=gen)
        noisy = noise_schedule.add_noise(x0, noise, t)
        target = noise_schedule.get_velocity(x0, noise, t)
        if stage == "base":
            time_ids = torch.tensor(BASE_TIME_IDS).repeat(batch, 1)
        else:
            # The refiner pipeline gives the negative (here: dropped) prompt the negative aesthetic score.
            score_col = torch.where(dropped, AESTHETIC_NEGATIVE, AESTHETIC_POSITIVE)[:, None]
            time_ids = torch.cat([torch.tensor(BASE_TIME_IDS[:4]).repeat(batch, 1), score_col], dim=1)
        for group in optimizer.param_groups:
            group["lr"] = budget.lr * lr_factor(step, budget)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            if stage == "base":
                embeds, pooled = encode_text(text_encoders, ids)
            else:
                with torch.no_grad():
                    embeds, pooled = encode_text(text_encoders, ids)
            pred = unet(
                noisy, t, encoder_hidden_states=embeds, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}
            ).sample.float()
        weight = 1.0 + (config.latent_foreground_weight - 1.0) * foreground[idx].float()
        loss = (weight * (pred - target).pow(2)).mean() / weight.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.update(params, step)
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % 50 == 0:
            elapsed = time.monotonic() - step_started
            _log(f"{stage} step {step}: loss {np.mean(losses[-50:]):.4f} ({elapsed / 50:.3f} s/step)")
            step_started = time.monotonic()
        if step % config.checkpoint_every == 0:
            _save_checkpoint(
                ckpt_path,
                {
                    "models": [m.state_dict() for m in trainable],
                    "optimizer": optimizer.state_dict(),
                    "ema": ema.shadow,
                    "step": step,
                },
            )
    bar.close()
    _log(f"{stage}: stopped at step {step} after {(time.monotonic() - clock.started) / 60:.1f} min")
    ema.copy_to(params)
    out = config.run_dir / stage
    unet.save_pretrained(out / "unet")
    if stage == "base":
        text_encoders[0].save_pretrained(out / "text_encoder")
        text_encoders[1].save_pretrained(out / "text_encoder_2")
    (out / "train_report.json").write_text(
        json.dumps({"steps": step, "final_loss": float(np.mean(losses[-200:])) if losses else None}), encoding="utf-8"
    )


def stage_base(config: TrainConfig) -> None:
    """Train the base UNet and both text encoders jointly."""
    _train_unet_stage(config, "base")


def stage_refiner(config: TrainConfig) -> None:
    """Train the refiner UNet on the low-noise end, conditioned on the base's frozen text_encoder_2."""
    _train_unet_stage(config, "refiner")


def stage_decoder(config: TrainConfig) -> None:
    """Fine-tune the VAE decoder alone (encoder frozen, so the latent space the UNets learnt stays the same)."""
    from diffusers import AutoencoderKL

    images, _ = _load_pool(config)
    vae_dir = config.run_dir / "vae"
    first = config.run_dir / "vae-before-decoder"
    if not first.is_dir():
        shutil.copytree(vae_dir, first)
    vae = AutoencoderKL.from_pretrained(first)
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    if vae.post_quant_conv is not None:
        vae.post_quant_conv.requires_grad_(True)
    step = _train_vae(vae, images, config, "decoder")
    report = _vae_reconstruction_scores(vae, config) | {"steps": step}
    _log(f"decoder: {step} steps, reconstruction scores {report}")
    (config.run_dir / "decoder_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    vae.save_pretrained(vae_dir)


def build_pipelines(run_dir: Path) -> tuple[Any, Any]:
    """The trained base and refiner pipelines from a run folder's stage outputs (fp32)."""
    from diffusers import (
        AutoencoderKL,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    vae = AutoencoderKL.from_pretrained(run_dir / "vae")
    text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(run_dir / "base" / "text_encoder_2")
    tokenizer_2 = load_tokenizer("tokenizer_2")
    base = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel.from_pretrained(run_dir / "base" / "text_encoder"),
        text_encoder_2=text_encoder_2,
        tokenizer=load_tokenizer("tokenizer"),
        tokenizer_2=tokenizer_2,
        unet=UNet2DConditionModel.from_pretrained(run_dir / "base" / "unet"),
        scheduler=build_inference_scheduler(),
        # Trained with "" as the dropped caption, so the negative branch must encode "" too (not zeros).
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=text_encoder_2,
        tokenizer=None,
        tokenizer_2=tokenizer_2,
        unet=UNet2DConditionModel.from_pretrained(run_dir / "refiner" / "unet"),
        scheduler=build_inference_scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    return base, refiner


def folder_size(folder: Path, *, exclude_tokenizers: bool = True) -> int:
    """Bytes on disk of a model folder (tokenizer files left out by default: they are the same 2 MB vocabulary)."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file() and not (exclude_tokenizers and path.parent.name.startswith("tokenizer")):
            total += path.stat().st_size
    return total


def export_pipelines(base: Any, refiner: Any, dest: Path, *, guidance_scale: float, fp16: bool = True) -> None:
    """Save both pipelines as diffusers folders under ``dest`` (fp16 safetensors by default) with imagegen.json."""
    import torch

    defaults = {"width": IMAGE_SIZE, "height": IMAGE_SIZE, "num_inference_steps": 20, "guidance_scale": guidance_scale}
    for pipeline, name in ((base, BASE_NAME), (refiner, REFINER_NAME)):
        folder = dest / name
        if folder.exists():
            shutil.rmtree(folder)
        if fp16:
            pipeline.to(torch.float16)
        pipeline.save_pretrained(folder, safe_serialization=True)
        if fp16:
            pipeline.to(torch.float32)
        (folder / "imagegen.json").write_text(json.dumps({"defaults": defaults}, indent=2) + "\n", encoding="utf-8")


def stage_export(config: TrainConfig) -> None:
    """Write ``export/imagegen-shapes`` and ``export/imagegen-shapes-refiner`` (fp16)."""
    base, refiner = build_pipelines(config.run_dir)
    dest = config.run_dir / "export"
    export_pipelines(base, refiner, dest, guidance_scale=config.guidance_scale)
    sizes = {name: folder_size(dest / name) for name in (BASE_NAME, REFINER_NAME)}
    _log(f"export: {dest} sizes (bytes, tokenizers excluded) {sizes}, total {sum(sizes.values()) / 1e6:.1f} MB")


_STAGE_FUNCTIONS: Final = {
    "pool": stage_pool,
    "vae": stage_vae,
    "base": stage_base,
    "refiner": stage_refiner,
    "decoder": stage_decoder,
    "export": stage_export,
}


def train(config: TrainConfig, *, resume: bool = False, stages: Sequence[str] = STAGES) -> None:
    """Run ``stages`` in order; with ``resume`` finished stages are skipped and a started one continues."""
    import torch

    torch.set_num_threads(config.threads)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for stage in STAGES:
            _marker(config.run_dir, stage).unlink(missing_ok=True)
            (config.run_dir / f"{stage}.ckpt").unlink(missing_ok=True)
    saved = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    (config.run_dir / "config.json").write_text(json.dumps(saved, indent=2), encoding="utf-8")
    for stage in stages:
        if resume and _marker(config.run_dir, stage).is_file():
            _log(f"{stage}: already done, skipped")
            continue
        started = time.monotonic()
        _log(f"{stage}: start")
        _STAGE_FUNCTIONS[stage](config)
        minutes = (time.monotonic() - started) / 60
        _marker(config.run_dir, stage).write_text(f"{minutes:.2f}\n", encoding="utf-8")
        # A stage run again (e.g. the decoder) makes every later stage stale: a resume must redo them.
        for later in STAGES[STAGES.index(stage) + 1 :]:
            _marker(config.run_dir, later).unlink(missing_ok=True)
        _log(f"{stage}: done in {minutes:.1f} min")


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def _at_least(convert: type[int] | type[float], low: float, *, strictly: bool = False) -> Callable[[str], Any]:
    """An argparse type: a whole number (``int``) or a number (``float``) ≥ ``low`` (> ``low`` when ``strictly``)."""
    bound = f"{'a whole number' if convert is int else 'a number'} {'>' if strictly else '≥'} {low:g}"

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}") from None
        if not (value > low if strictly else value >= low):  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def _fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``imagegen train-demo`` options."""
    defaults = TrainConfig(run_dir=Path("."))
    parser.add_argument("--run-dir", type=Path, required=True, help="folder for checkpoints, logs and the export")
    parser.add_argument("--resume", action="store_true", help="skip finished stages, continue a started one")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run, in order")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--pool-size", type=_at_least(int, 1), default=defaults.pool_size, help="rendered training examples"
    )
    for stage in ("vae", "base", "refiner", "decoder"):
        budget: StageBudget = getattr(defaults, stage)
        parser.add_argument(f"--{stage}-steps", type=_at_least(int, 1), default=budget.steps)
        parser.add_argument(f"--{stage}-batch-size", type=_at_least(int, 1), default=budget.batch_size)
        parser.add_argument(f"--{stage}-lr", type=_at_least(float, 0, strictly=True), default=budget.lr)
        parser.add_argument(
            f"--{stage}-minutes",
            type=_at_least(float, 0),
            default=budget.minutes,
            help="stop the stage early (0 = no limit)",
        )
    parser.add_argument(
        "--latent-foreground-weight",
        type=_at_least(float, 0, strictly=True),
        default=defaults.latent_foreground_weight,
        help="UNet loss weight of latents under a shape (1 = unweighted)",
    )
    parser.add_argument(
        "--phrasings",
        type=_at_least(int, 0),
        default=defaults.phrasings,
        help="free wordings per pool scene besides its grammar caption (0 = grammar only, as run 4)",
    )
    parser.add_argument(
        "--grammar-share",
        type=_fraction,
        default=defaults.grammar_share,
        help="share of examples shown the grammar caption rather than a free wording (0 to 1)",
    )
    parser.add_argument("--checkpoint-every", type=_at_least(int, 1), default=defaults.checkpoint_every)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (measure first: not faster for small convs)")
    parser.add_argument("--threads", type=_at_least(int, 1), default=defaults.threads)
    parser.add_argument(
        "--guidance-scale", type=_at_least(float, 0), default=defaults.guidance_scale, help="default saved"
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed ``add_arguments`` options."""
    defaults = TrainConfig(run_dir=args.run_dir)

    def budget(stage: str) -> StageBudget:
        base: StageBudget = getattr(defaults, stage)
        return StageBudget(
            steps=getattr(args, f"{stage}_steps"),
            batch_size=getattr(args, f"{stage}_batch_size"),
            lr=getattr(args, f"{stage}_lr"),
            minutes=getattr(args, f"{stage}_minutes"),
            warmup=min(base.warmup, max(1, getattr(args, f"{stage}_steps") // 10)),
        )

    return TrainConfig(
        run_dir=args.run_dir,
        seed=args.seed,
        pool_size=args.pool_size,
        vae=budget("vae"),
        base=budget("base"),
        refiner=budget("refiner"),
        decoder=budget("decoder"),
        latent_foreground_weight=args.latent_foreground_weight,
        phrasings=args.phrasings,
        grammar_share=args.grammar_share,
        checkpoint_every=args.checkpoint_every,
        bf16=args.bf16,
        threads=args.threads,
        guidance_scale=args.guidance_scale,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``imagegen train-demo`` with parsed options; returns the exit status."""
    train(config_from_args(args), resume=args.resume, stages=args.stages)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m imagegen_shapes.train``."""
    parser = argparse.ArgumentParser(prog="imagegen train-demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
