"""The engine: holds loaded pipelines and turns a :class:`GenerationRequest` into images.

Data flows one way: request → engine → pipeline → latents → VAE decode → images + infotext. Nothing is shared
between requests except loaded weights: each request gets a fresh scheduler, a fresh pipeline object built with
:func:`derive_pipeline` (diffusers' ``from_pipe`` without its cast: it shares the weights, never copies them)
and one CPU ``torch.Generator`` per image, seeded
``seed + i`` so that image *i* of a batch can be regenerated alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import torch
from PIL import Image as PILImage

from imagegen import __version__
from imagegen.editing.inpaint import (
    Inputs,
    blank,
    center_crop,
    center_crop_latents,
    full_mask,
    inpaint_arguments,
    inpaint_inputs,
    inpainting_unet,
    resized,
)
from imagegen.editing.masks import (
    binary_mask,
    blur_mask,
    composite,
    crop_region,
    expand_to_aspect,
    fill_masked,
    paste_region,
)
from imagegen.editing.tiles import combine_tiles, split_tiles
from imagegen.editing.tiling import seamless
from imagegen.errors import Cancelled, GenerationFailed, ImagegenError, InvalidRequest, ResourceExhausted
from imagegen.fields import FIELDS
from imagegen.loading import (
    DEFAULT_MODEL,
    Family,
    ModelInfo,
    builtin_models,
    load_pipeline,
    pipeline_class,
    resolve,
    unet_parameters,
)
from imagegen.metadata import (
    FIELD_KEYS,
    HIRES_FIELDS,
    INPAINT_FIELDS,
    Infotext,
    extra_value,
    format_infotext,
    format_number,
    hires_infotext,
    inpaint_infotext,
    sd_upscale_infotext,
    upscale_infotext,
)
from imagegen.networks.embeddings import Embedding, load_embedding
from imagegen.networks.files import NetworkFile, list_files
from imagegen.networks.lora import ActiveLora, LoraAdapters, resolve_loras
from imagegen.options import EngineOptions, Offload
from imagegen.previews import LatentPreview
from imagegen.prompts.cache import CachedEncoder, ConditioningCache
from imagegen.prompts.conditioning import BatchPrompts, StagePrompts
from imagegen.prompts.encoding import Emphasis, PromptEncoder
from imagegen.prompts.styles import apply_styles, read_styles
from imagegen.prompts.syntax import extract_network_tags
from imagegen.requests import MAX_SEED, GenerationRequest, GenerationResult, Limits, UpscaleRequest, UpscaleResult
from imagegen.rules import (
    check_hires,
    check_models,
    check_sd_upscale,
    check_upscale,
    effective_eta,
    hires_size,
    sd_upscale_size,
)
from imagegen.samplers import (
    SamplerChoice,
    build_scheduler,
    diffusers_base,
    eta_rule,
    parse_sampler,
    resolve_eta,
    sampler_for_scheduler,
)
from imagegen.upscalers import Upscalers
from imagegen.upscalers.latent import is_latent_upscaler, upscale_latents

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from PIL.Image import Image

    from imagegen.editing.inpaint import Init

VERSION = f"imagegen {__version__}"
#: Each request field's default: a field at its default is not written into the infotext.
_REQUEST_DEFAULTS: Mapping[str, object] = MappingProxyType(
    {f.name: f.default for f in dataclasses.fields(GenerationRequest)}
)
_DTYPES = MappingProxyType(
    {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
)


@dataclass(frozen=True, kw_only=True)
class ProgressEvent:
    """One finished denoising step. ``step``/``total`` count over the whole job (base and refiner)."""

    step: int
    total: int
    stage: str  # "base" or "refiner"
    #: With ``previews=N``, every N-th step: an approximate picture of the current latents (see
    #: :mod:`imagegen.previews`); else None.
    preview: Image | None = None


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True, kw_only=True)
class LoadedModel:
    """A model in memory: what it is, and its pipeline (txt2img, or img2img for a refiner)."""

    info: ModelInfo
    pipeline: DiffusionPipeline
    #: The LoRA adapters worn by this pipeline (none for a refiner: LoRAs apply to the base model, as in A1111).
    adapters: LoraAdapters | None = None
    #: Live previews through this model's VAE (a refiner shares its base's).
    previewer: LatentPreview | None = None


def select_device(name: str | None = None) -> torch.device:
    """``auto``/None picks CUDA, then Apple MPS, then CPU; an explicit device must exist."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise InvalidRequest("device", f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidRequest("device", "CUDA was requested but no CUDA GPU is available; use auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidRequest("device", "MPS was requested but is not available on this machine; use auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidRequest("device", f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


#: UNets with fewer weights than this stay in float32 on a CPU even where bfloat16 is fast: their steps are per-op
#: overhead, which bfloat16's casts add to (the demo model's 4 M-weight UNet: a training step took 0.38 s under
#: bfloat16 autocast against 0.35 s in float32 on this project's CPU). Every Stable Diffusion UNet has 0.86 to 2.6
#: billion.
CPU_BF16_MIN_PARAMETERS: Final[int] = 100_000_000


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX), where bfloat16 weights run an SD UNet
    1.6-2.8x faster than float32 (bench/cpu_dtype.py); elsewhere bfloat16 is emulated and slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def select_dtype(name: str | None, device: torch.device) -> torch.dtype | None:
    """An explicit float32, float16 or bfloat16; ``None`` for ``auto``/None, which :func:`auto_dtype` settles per
    model."""
    if name in (None, "", "auto"):
        return None
    dtype = _DTYPES.get(name.lower())
    if dtype is None:
        raise InvalidRequest("dtype", f"unknown dtype {name!r}; use auto, float32, float16 or bfloat16")
    return dtype


def auto_dtype(device: torch.device, unet_parameters: int, *, fast_bf16: bool | None = None) -> torch.dtype:
    """``auto``: float16 on CUDA and MPS; on a CPU, bfloat16 for a full-size UNet where the CPU has bfloat16 in
    hardware (``fast_bf16``, probed when None), float32 otherwise."""
    if device.type in ("cuda", "mps"):
        return torch.float16
    if fast_bf16 is None:
        fast_bf16 = cpu_has_fast_bf16()
    return torch.bfloat16 if fast_bf16 and unet_parameters >= CPU_BF16_MIN_PARAMETERS else torch.float32


class Engine:
    """Runs generation requests on one device. Thread-safe: requests run one at a time on the device.

    >>> engine = Engine(default_model="stabilityai/stable-diffusion-xl-base-1.0")
    >>> result = engine.generate(GenerationRequest(prompt="a red circle", seed=1))
    """

    def __init__(
        self,
        *,
        default_model: str | None = None,
        models_dir: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        limits: Limits | None = None,
        max_loaded: int = 2,
        allow_pickle: bool = False,
        offload: Offload | str = Offload.NONE,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        threads: int | None = None,
        lora_dirs: tuple[str | Path, ...] = (),
        embeddings_dirs: tuple[str | Path, ...] = (),
        styles_file: str | Path | None = None,
        max_loras: int = 8,
        compile: bool = False,
    ) -> None:
        # EngineOptions checks them (offload, max_loaded): the same rules as the CLI's and the server's.
        self.options = EngineOptions(
            device=device,
            dtype=dtype,
            models_dir=Path(models_dir) if models_dir else None,
            allow_pickle=allow_pickle,
            offload=Offload.parse(offload),
            vae_slicing=vae_slicing,
            vae_tiling=vae_tiling,
            max_loaded=max_loaded,
            threads=threads,
            lora_dirs=tuple(Path(p) for p in lora_dirs),
            embeddings_dirs=tuple(Path(p) for p in embeddings_dirs),
            styles_file=Path(styles_file) if styles_file else None,
            max_loras=max_loras,
            compile=compile,
        )
        if threads is not None:
            # Process-wide in torch: one engine per process (the CLI, a server worker) owns the setting.
            torch.set_num_threads(threads)
        self.device = select_device(device)
        self.dtype = select_dtype(dtype, self.device)
        self.default_model = default_model
        self.models_dir = self.options.models_dir
        self.limits = limits or Limits()
        self.max_loaded = max_loaded
        self.allow_pickle = allow_pickle
        self.offload = self.options.offload.value
        self.vae_slicing = vae_slicing
        self.vae_tiling = vae_tiling
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        #: Embedding files read so far, by (path, size, mtime): the vectors, or why the file is not an embedding.
        self._embedding_files: dict[str, Embedding | str] = {}
        self._cache_lock = threading.RLock()
        self._device_lock = threading.Lock()
        #: Encoded prompts across requests (see :mod:`imagegen.prompts.cache`).
        self.conditionings = ConditioningCache(max_entries=64)
        #: Bumped whenever an embedding file appears, changes or goes: part of every cached prompt's key.
        self._embeddings_version = 0
        #: Image upscalers (A1111's names, Real-ESRGAN, ESRGAN files in the models directory).
        self.upscalers = Upscalers(folders=self.options.upscaler_folders(), allow_pickle=allow_pickle)

    # Models -----------------------------------------------------------------------------------------------------

    def resolve(self, ref: str | None) -> ModelInfo:
        """Resolve a model reference (``None`` = the default model) without loading weights."""
        ref = ref or self.default_model
        if not ref:
            if not (builtin_models()[DEFAULT_MODEL] / "model_index.json").is_file():
                raise InvalidRequest(
                    "model", "no model given and the built-in demo model is not installed; pass a model reference"
                )
            ref = DEFAULT_MODEL
        return resolve(ref, models_dir=self.models_dir, allow_pickle=self.allow_pickle)

    def load(self, ref: str | None = None, *, base: LoadedModel | None = None) -> LoadedModel:
        """Load a model (cached, least recently used evicted). A refiner loaded for ``base`` shares its
        ``text_encoder_2`` and VAE, as in the SDXL "ensemble of expert denoisers"."""
        info = self.resolve(ref)
        key = f"{info.kind}:{info.path}"
        if base is not None:
            key = f"{key}|base={base.info.kind}:{base.info.path}"
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            shared: dict[str, Any] = {}
            if base is not None:
                shared = {"text_encoder_2": base.pipeline.text_encoder_2, "vae": base.pipeline.vae}
            # A refiner takes its base's dtype: they share text_encoder_2 and the VAE.
            dtype = base.pipeline.unet.dtype if base is not None else self.dtype_for(info)
            pipeline = load_pipeline(info, dtype=dtype, shared=shared, allow_pickle=self.allow_pickle)
            # Weights read anew may differ from those the cached prompts were encoded with (a file replaced on disk).
            self.conditionings.clear()
            if not shared:
                self._place(pipeline, info)
            else:
                # The shared parts are already placed; move only the refiner's own modules.
                pipeline.unet.to(self.device)
                self._fast_path(pipeline)
            adapters = None
            if base is None and info.family is not Family.SDXL_REFINER:
                adapters = LoraAdapters(
                    pipeline,
                    context_dim=getattr(pipeline.unet.config, "cross_attention_dim", None),
                    family=info.family.value,
                    max_loaded=self.options.max_loras,
                )
            previewer = base.previewer if base is not None else LatentPreview(pipeline.vae)
            loaded = LoadedModel(info=info, pipeline=pipeline, adapters=adapters, previewer=previewer)
            self._cache[key] = loaded
            self._evict()
            return loaded

    def loaded(self) -> list[ModelInfo]:
        """Models currently in memory, least recently used first."""
        with self._cache_lock:
            return [entry.info for entry in self._cache.values()]

    def unload(self) -> None:
        """Drop every loaded model (and the prompts they encoded)."""
        with self._cache_lock:
            self._cache.clear()
            self.conditionings.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _place(self, pipeline: DiffusionPipeline, info: ModelInfo) -> None:
        # The SDXL VAE overflows in float16 (black or NaN images); diffusers' force_upcast does the same per call.
        sdxl = info.family in (Family.SDXL, Family.SDXL_REFINER)
        if sdxl and pipeline.unet.dtype == torch.float16 and getattr(pipeline.vae.config, "force_upcast", False):
            pipeline.vae.to(torch.float32)
        if self.vae_slicing:
            pipeline.vae.enable_slicing()
        if self.vae_tiling:
            pipeline.vae.enable_tiling()
        if self.offload == "model":
            pipeline.enable_model_cpu_offload(device=self.device)
        elif self.offload == "sequential":
            pipeline.enable_sequential_cpu_offload(device=self.device)
        else:
            pipeline.to(self.device)
        self._fast_path(pipeline)

    def _fast_path(self, pipeline: DiffusionPipeline) -> None:
        # Channels-last convolutions, the layout oneDNN and GPU kernels prefer: in bfloat16 on this CPU an SD 1.5 UNet
        # call at 512x512 takes 14 % less and a VAE decode 21 % less; float32 CPU runs keep diffusers' default.
        if self.device.type == "cuda" or pipeline.unet.dtype == torch.bfloat16:
            pipeline.unet.to(memory_format=torch.channels_last)
            pipeline.vae.to(memory_format=torch.channels_last)
        if self.options.compile:
            # In place (nn.Module.compile), so LoRA adapters, tiling and diffusers still see the same module; fixed
            # shapes, one compiled graph per size and batch, warmed up now at the model's native size.
            pipeline.unet.compile(dynamic=False)
            _warm_up(pipeline)

    def dtype_for(self, info: ModelInfo) -> torch.dtype:
        """The dtype ``info`` loads in: the engine's explicit one, else :func:`auto_dtype` for its UNet's size."""
        if self.dtype is not None:
            return self.dtype
        return auto_dtype(self.device, unet_parameters(info) if self.device.type == "cpu" else 0)

    def _evict(self) -> None:
        while len(self._cache) > self.max_loaded:
            oldest = next(iter(self._cache))
            del self._cache[oldest]
            # A refiner shares the base's modules, so it goes with its base.
            for key in [k for k in self._cache if k.endswith(f"|base={oldest}")]:
                del self._cache[key]

    # Extra networks and styles ----------------------------------------------------------------------------------

    def lora_folders(self) -> tuple[Path, ...]:
        """Where LoRA names resolve (see :meth:`EngineOptions.lora_folders`)."""
        return self.options.lora_folders()

    def embedding_folders(self) -> tuple[Path, ...]:
        return self.options.embedding_folders()

    def loras(self) -> list[NetworkFile]:
        """The LoRA files a request can name."""
        return list_files(self.lora_folders())

    def embeddings(self) -> list[tuple[NetworkFile, Embedding | str]]:
        """Every embedding file with its vectors, or why it could not be read."""
        found = []
        current: dict[str, Embedding | str] = {}
        for file in list_files(self.embedding_folders()):
            stat = file.path.stat()
            key = f"{file.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
            entry = self._embedding_files.get(key)
            if entry is None:
                try:
                    entry = load_embedding(file, allow_pickle=self.allow_pickle)
                except (ValueError, RuntimeError, OSError) as exc:
                    entry = str(exc)
            current[key] = entry
            found.append((file, entry))
        # Only the files there now: a changed or removed file's old vectors are dropped.
        if current.keys() != self._embedding_files.keys():
            self._embeddings_version += 1
        self._embedding_files = current
        return found

    def _with_styles(self, request: GenerationRequest) -> GenerationRequest:
        """Merge the named styles into the prompts: the effective request carries their text, not their names, so
        its infotext reproduces the image without the styles file."""
        if not request.styles:
            return request
        prompt, negative = apply_styles(
            request.prompt, request.negative_prompt, request.styles, read_styles(self.options.styles_path())
        )
        return dataclasses.replace(request, prompt=prompt, negative_prompt=negative, styles=())

    def resolve_loras(self, request: GenerationRequest) -> list[ActiveLora]:
        """The LoRAs ``request`` asks for, resolved to files (see :func:`imagegen.networks.lora.resolve_loras`)."""
        return resolve_loras(request, folders=self.lora_folders(), allow_pickle=self.allow_pickle)

    def _usable_embeddings(self, pipe: DiffusionPipeline, family: Family) -> list[Embedding]:
        """The embeddings that fit ``pipe``'s text encoders (an SD 1.x file on an SD 1.x model, SDXL's on SDXL)."""
        widths = {
            key: int(encoder.get_input_embeddings().weight.shape[1])
            for key, encoder in _embedding_encoders(pipe, family).items()
        }
        return [e for _, e in self.embeddings() if isinstance(e, Embedding) and e.fits(widths) is None]

    # Generation -------------------------------------------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        previews: int = 0,
    ) -> GenerationResult:
        """Run one request. Raises :class:`InvalidRequest` before any model work for bad input,
        :class:`Cancelled` within a step of ``cancel`` being set, :class:`ResourceExhausted` on out-of-memory.
        ``previews=N`` (N ≥ 1) puts a picture of the current latents in every N-th ``progress`` event."""
        if isinstance(previews, bool) or not isinstance(previews, int) or previews < 0:
            raise InvalidRequest(
                "previews", f"must be 0 (no previews) or a step interval of at least 1, got {previews!r}"
            )
        started = time.perf_counter()
        timings: dict[str, float] = {}
        warnings: list[str] = []

        # 1. Check the request against the operator's limits, merge its styles, find its LoRAs; then the models.
        self.limits.check(request)
        if request.enable_hr and not is_latent_upscaler(request.hr_upscaler):
            self.upscalers.check(request.hr_upscaler, field="hr_upscaler")
        if request.sd_upscale:
            self.upscalers.check(request.sd_upscale_upscaler, field="sd_upscale_upscaler")
        request = self._with_styles(request)
        loras = self.resolve_loras(request)
        with self._device_lock:
            base = self.load(request.model)
            refiner = self._load_refiner(request, base)
            timings["load"] = time.perf_counter() - started

            # 2. Fill in defaults from the model and check what only the model can tell.
            effective, inputs = self._effective(request, base, refiner)

            # 3. Put on the request's LoRAs (and only those), run the denoisers, then decode.
            try:
                hashes: list[str] = []
                if loras and base.adapters is None:
                    raise InvalidRequest(
                        "loras",
                        f"{base.info.ref} is an SDXL refiner: LoRAs apply to the base model; use it as --refiner",
                    )
                if base.adapters is not None:
                    t0 = time.perf_counter()
                    hashes = base.adapters.activate(loras)
                    if loras:
                        timings["lora"] = time.perf_counter() - t0
                images = self._run(effective, base, refiner, inputs, timings, progress, cancel, previews)
            except torch.OutOfMemoryError as exc:
                raise ResourceExhausted(f"out of memory on {self.device}: {exc}".splitlines()[0]) from None
            except MemoryError:
                raise ResourceExhausted(f"out of memory on {self.device}") from None

        # 4. Describe every image so it can be reproduced alone.
        timings["total"] = time.perf_counter() - started
        return self._result(effective, base, refiner, images, loras, hashes, timings, warnings)

    def _result(
        self,
        effective: GenerationRequest,
        base: LoadedModel,
        refiner: LoadedModel | None,
        images: Sequence[Image],
        loras: Sequence[ActiveLora],
        hashes: Sequence[str],
        timings: Mapping[str, float],
        warnings: Sequence[str] = (),
    ) -> GenerationResult:
        """The result of an effective request: its images, each with its seed and the infotext that reproduces it."""
        seeds = tuple(effective.seed + i for i in range(effective.num_images))
        pairs = [(lora.file.name, h) for lora, h in zip(loras, hashes, strict=True)]
        infotexts = tuple(
            format_infotext(self.infotext(effective, base.info, refiner, seed, loras=pairs)) for seed in seeds
        )
        return GenerationResult(
            images=tuple(images),
            seeds=seeds,
            infotexts=infotexts,
            effective=effective,
            model=base.info.ref,
            timings=MappingProxyType(dict(timings)),
            warnings=tuple(warnings),
        )

    # Batches ----------------------------------------------------------------------------------------------------

    def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        *,
        progress: Callable[[int, ProgressEvent], None] | None = None,
        cancels: Sequence[threading.Event] | None = None,
        previews: Sequence[int] | None = None,
    ) -> list[GenerationResult | ImagegenError]:
        """Run several requests, as one denoising batch where they can share it (text-to-image with the same model,
        size, steps, sampler, guidance, LoRAs, ...: everything but the prompts, seeds and image counts), else one
        after the other. Entry *k* is request *k*'s result or the error that ended it: a failing or cancelled
        request leaves the others running. ``progress(k, event)`` reports request *k*'s steps; ``cancels[k]``
        cancels request *k* (the batch stops only when every request in it is cancelled); ``previews[k]`` is request
        *k*'s ``previews`` (see :meth:`generate`), each member previewed from its own latents.

        Each image keeps its own generator (seed + *i* within its request), so a batched image is the image of the
        same request run alone up to the floating-point order of a larger batch (measured in README)."""
        events = list(cancels) if cancels is not None else [threading.Event() for _ in requests]
        every = list(previews) if previews is not None else [0] * len(requests)
        outcomes: list[GenerationResult | ImagegenError | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        prepared: dict[int, tuple[GenerationRequest, list[ActiveLora]]] = {}
        for k, request in enumerate(requests):
            try:
                self.limits.check(request)
                merged = self._with_styles(request)
                loras = self.resolve_loras(merged)
            except ImagegenError as exc:
                outcomes[k] = exc
                continue
            prepared[k] = (merged, loras)
            key = _batch_signature(merged, loras)
            groups.setdefault(key if key is not None else f"alone:{k}", []).append(k)
        for indices in groups.values():
            members = [prepared[k][0] for k in indices]
            results: Sequence[GenerationResult | ImagegenError] | None = None
            if len(indices) > 1:
                try:
                    results = self._generate_together(
                        members, prepared[indices[0]][1], indices, progress, events, every
                    )
                except Cancelled:
                    results = [Cancelled("cancelled before it finished") for _ in indices]
                except (ImagegenError, RuntimeError, ValueError):  # the batch failed: each runs alone, isolated
                    results = None
            if results is None:
                results = [self._generate_one(prepared[k][0], k, progress, events[k], every[k]) for k in indices]
            for k, result in zip(indices, results, strict=True):
                outcomes[k] = result
        return [outcome if outcome is not None else GenerationFailed("not run") for outcome in outcomes]

    def _generate_one(
        self,
        request: GenerationRequest,
        index: int,
        progress: Callable[[int, ProgressEvent], None] | None,
        cancel: threading.Event,
        previews: int = 0,
    ) -> GenerationResult | ImagegenError:
        report = None if progress is None else (lambda event: progress(index, event))
        try:
            return self.generate(request, progress=report, cancel=cancel, previews=previews)
        except ImagegenError as exc:
            return exc

    def _generate_together(
        self,
        members: Sequence[GenerationRequest],
        loras: Sequence[ActiveLora],
        indices: Sequence[int],
        progress: Callable[[int, ProgressEvent], None] | None,
        events: Sequence[threading.Event],
        previews: Sequence[int],
    ) -> list[GenerationResult | ImagegenError] | None:
        """One denoising loop for ``members`` (compatible: see :func:`_batch_signature`); ``None`` when the model
        turns out not to allow it (an inpainting checkpoint), for the caller to run them one by one."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        mine = [events[k] for k in indices]
        with self._device_lock:
            base = self.load(members[0].model)
            refiner = self._load_refiner(members[0], base)
            timings["load"] = time.perf_counter() - started
            if inpainting_unet(base.pipeline) or (loras and base.adapters is None):
                return None
            effective = [self._effective(member, base, refiner)[0] for member in members]
            hashes = base.adapters.activate(loras) if base.adapters is not None else []
            if loras:
                timings["lora"] = time.perf_counter() - started - timings["load"]

            # Member p's first image is latent row rows[p]: the members' images follow one another in the batch.
            rows = [sum(member.num_images for member in effective[:p]) for p in range(len(effective))]

            def report(event: ProgressEvent) -> None:
                for position, k in enumerate(indices):
                    if progress is not None and not mine[position].is_set():
                        own = counter.last_previews.get(rows[position])
                        progress(k, dataclasses.replace(event, preview=own))

            shared = effective[0]
            steps = int(shared.num_inference_steps or 0)
            wanted = {rows[p]: previews[k] for p, k in enumerate(indices)}
            counter = _StepCounter(
                total=max(steps, 1), progress=report, cancel=_AllSet(mine), previews=_previews(base, wanted)
            )
            modules = [base.pipeline.unet, base.pipeline.vae, *([refiner.pipeline.unet] if refiner else [])]
            try:
                with seamless(*modules) if shared.tiling else contextlib.nullcontext():
                    latents, pipe = self._denoise(shared, base, refiner, None, None, counter, timings, batch=effective)
                    t0 = time.perf_counter()
                    images = decode_latents(pipe, latents)
                    timings["decode"] = time.perf_counter() - t0
            except torch.OutOfMemoryError as exc:
                raise ResourceExhausted(f"out of memory on {self.device}: {exc}".splitlines()[0]) from None
        timings["total"] = time.perf_counter() - started
        timings["batch_images"] = float(len(images))
        results: list[GenerationResult | ImagegenError] = []
        offset = 0
        for position, request in enumerate(effective):
            own = images[offset : offset + request.num_images]
            offset += request.num_images
            if mine[position].is_set():
                results.append(Cancelled("cancelled while its batch ran; no image was kept"))
                continue
            results.append(self._result(request, base, refiner, own, loras, hashes, timings))
        return results

    # Upscaling --------------------------------------------------------------------------------------------------------

    def upscale(
        self,
        request: UpscaleRequest,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> UpscaleResult:
        """Upscale one image (A1111's Extras): checked against the limits before any work, tile by tile with progress
        (stage ``upscale``) and cancellation between tiles."""
        started = time.perf_counter()
        # 1. Check: the input and output sizes, the upscalers' names.
        width, height, factor = request.target_size()
        in_w, in_h = request.image.size
        check_upscale(request, self.limits)  # the same check the queue makes before it accepts the job
        self.upscalers.check(request.upscaler, field="upscaler")
        second = request.upscaler_2 if request.upscaler_2_visibility > 0 and request.upscaler_2 != "None" else None
        if second is not None:
            self.upscalers.check(second, field="upscaler_2")
        # 2. Upscale (to cover the box when cropping), blend the second upscaler over it, crop.
        cover = (max(width, round(in_w * factor)), max(height, round(in_h * factor)))
        passes = [(request.upscaler, "upscaler"), *([(second, "upscaler_2")] if second else [])]
        results = []
        with self._device_lock:
            for index, (name, field) in enumerate(passes):
                results.append(
                    self.upscalers.upscale(
                        request.image,
                        name,
                        width=cover[0],
                        height=cover[1],
                        field=field,
                        progress=_tile_progress(progress, index, len(passes)),
                        cancel=cancel,
                    )
                )
        image = results[0]
        if second is not None:
            image = PILImage.blend(image, results[1], request.upscaler_2_visibility)
        image = center_crop(image, width, height)
        # 3. Describe it as A1111's Extras do.
        info = upscale_infotext(request, second=second)
        return UpscaleResult(
            images=(image,),
            infotexts=(info,),
            effective=request,
            model=request.upscaler,
            timings=MappingProxyType(
                {"upscale": time.perf_counter() - started, "total": time.perf_counter() - started}
            ),
        )

    def _load_refiner(self, request: GenerationRequest, base: LoadedModel) -> LoadedModel | None:
        if request.refiner is None:
            check_models(request, base.info, None)
            return None
        # Checked before the refiner is loaded: a wrong pairing costs no load.
        check_models(request, base.info, self.resolve(request.refiner))
        return self.load(request.refiner, base=base)

    def _effective(
        self, request: GenerationRequest, base: LoadedModel, refiner: LoadedModel | None
    ) -> tuple[GenerationRequest, Inputs]:
        defaults = base.info.defaults
        inputs = Inputs(image=request.init_image)
        width, height = request.width, request.height
        if request.inpainting:
            # Inpainting keeps the image at its own size (the canvas, when outpainting) for the final composite.
            inputs = inpaint_inputs(request)
            self.limits.check_size("outpaint", *inputs.size)
            if not request.inpaint_full_res:
                width = width or max(8, inputs.size[0] // 8 * 8)
                height = height or max(8, inputs.size[1] // 8 * 8)
        elif request.sd_upscale:
            # SD upscale: the tiles are the request's size (default: the model's native size); the input is upscaled.
            width, height = width or defaults.width, height or defaults.height
            check_sd_upscale(dataclasses.replace(request, width=width, height=height), self.limits)
            inputs = Inputs(image=inputs.image.convert("RGB") if inputs.image is not None else None)
        elif inputs.image is not None:
            # Image-to-image keeps the input's size unless a size is asked for (then the input is resized to it).
            in_w, in_h = inputs.image.size
            width = width or max(8, in_w // 8 * 8)
            height = height or max(8, in_h // 8 * 8)
            inputs = Inputs(image=resized(inputs.image, width, height))
        effective = dataclasses.replace(
            request,
            model=base.info.ref,
            refiner=refiner.info.ref if refiner else None,
            width=width or defaults.width,
            height=height or defaults.height,
            num_inference_steps=request.num_inference_steps or defaults.num_inference_steps,
            guidance_scale=defaults.guidance_scale if request.guidance_scale is None else request.guidance_scale,
            seed=request.seed if request.seed != -1 else secrets.randbelow(MAX_SEED - request.num_images + 2),
            init_image=inputs.image if not request.inpainting else request.init_image,
            eta=effective_eta(request, base.info, refiner.info if refiner else None),
        )
        self.limits.check(effective)
        if effective.enable_hr:
            check_hires(effective, self.limits)
        # Record the sampler actually used, so the infotext can reproduce the image with any default changed later.
        scheduler = build_scheduler(
            parse_sampler(request.sampler, request.schedule_type), base.pipeline.scheduler.config
        )
        name, schedule = sampler_for_scheduler(diffusers_base(type(scheduler)).__name__, scheduler.config)
        effective = dataclasses.replace(effective, sampler=name, schedule_type=schedule.value)
        return effective, inputs

    def _run(
        self,
        request: GenerationRequest,
        base: LoadedModel,
        refiner: LoadedModel | None,
        inputs: Inputs,
        timings: dict[str, float],
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        previews: int = 0,
    ) -> list[Image]:
        """Denoise (and for the hires fix, upscale and denoise again), decode, and composite an inpainting."""
        steps = int(request.num_inference_steps or 0)  # filled in by _effective
        first = int(steps * request.strength) if inputs.image is not None else steps
        hires = int((request.hr_second_pass_steps or steps) * request.strength) if request.enable_hr else 0
        counter = _StepCounter(
            total=max(first + hires, 1), progress=progress, cancel=cancel, previews=_previews(base, previews)
        )
        modules = [base.pipeline.unet, base.pipeline.vae, *([refiner.pipeline.unet] if refiner else [])]
        with seamless(*modules) if request.tiling else contextlib.nullcontext():
            if request.inpainting:
                return self._inpaint(request, base, refiner, inputs, counter, timings)
            if request.sd_upscale and inputs.image is not None:
                return self._sd_upscale(request, base, refiner, inputs.image, timings, progress, cancel, previews)
            init: Init = inputs.image
            mask = None
            if inpainting_unet(base.pipeline) and init is None:
                # An inpainting checkpoint makes text-to-image from a blank image with everything masked (A1111).
                init = blank(request.width or 8, request.height or 8)
                request = dataclasses.replace(request, strength=1.0)
            if inpainting_unet(base.pipeline):
                mask = full_mask(request.width or 8, request.height or 8)
            latents, pipe = self._denoise(request, base, refiner, init, mask, counter, timings, later_steps=hires)
            if request.enable_hr:
                latents, pipe = self._hires(request, base, refiner, latents, pipe, counter, timings)
            t0 = time.perf_counter()
            images = decode_latents(pipe, latents)
            timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t0
        return images

    def _denoise(
        self,
        request: GenerationRequest,
        base: LoadedModel,
        refiner: LoadedModel | None,
        init: Init,
        mask: Image | None,
        counter: _StepCounter,
        timings: dict[str, float],
        *,
        later_steps: int = 0,
        stage: str = "base",
        batch: Sequence[GenerationRequest] = (),
    ) -> tuple[torch.Tensor, DiffusionPipeline]:
        """One denoising run: the base from noise (or from ``init``, an image, images or latents), then the refiner
        from ``denoising_end`` on the same latents; with ``mask``, inpainting. Returns the latents and the pipeline
        whose VAE decodes them. ``batch`` (text-to-image only) runs several compatible requests' images together,
        each with its own prompt and seeds; ``request`` then gives the shared settings."""
        steps = int(request.num_inference_steps or 0)
        choice = parse_sampler(request.sampler, request.schedule_type)
        inpaint = mask is not None
        members = list(batch) or [request]
        # One generator (and DPM++ SDE noise seed) per image, seeded seed + i within its request.
        noise_seed = [member.seed + i for member in members for i in range(member.num_images)]
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in noise_seed]
        prefix = "" if stage == "base" else f"{stage}_"

        # 1. Base (or the only) denoiser.
        cls = pipeline_class(base.info.family, img2img=init is not None, inpaint=inpaint)
        scheduler = build_scheduler(choice, base.pipeline.scheduler.config, noise_seed=noise_seed, eta=request.eta)
        if init is not None and request.initial_noise_multiplier != 1.0:
            _scale_added_noise(scheduler, request.initial_noise_multiplier)
        pipe = derive_pipeline(cls, base.pipeline, scheduler=scheduler)
        t0 = time.perf_counter()
        prompts = self._prompts(members, base, pipe, steps)
        pooled = base.info.family in (Family.SDXL, Family.SDXL_REFINER)
        timings[f"{prefix}encode"] = timings.get(f"{prefix}encode", 0.0) + time.perf_counter() - t0
        refiner_steps = max(1, round(steps * (1 - request.denoising_end))) if refiner else 0
        kwargs: dict[str, Any] = {
            **prompts.pipeline_arguments(0, pooled=pooled),
            "num_inference_steps": steps,
            "guidance_scale": request.guidance_scale,
            "num_images_per_prompt": members[0].num_images if len(members) == 1 else 1,
            "generator": generators,
            "output_type": "latent",
            # With a refiner, the base's share of the steps is followed by (roughly) the rest.
            "callback_on_step_end": counter.callback(
                stage, later_steps=refiner_steps + later_steps, then=prompts.updater(0, pooled=pooled)
            ),
            "callback_on_step_end_tensor_inputs": prompts.tensor_inputs(pooled=pooled),
        }
        if mask is not None:
            kwargs.update(inpaint_arguments(pipe, request, init, mask))
        elif init is not None:
            kwargs.update(image=init, strength=request.strength)
        else:
            kwargs.update(width=request.width, height=request.height)
        if refiner is not None:
            kwargs["denoising_end"] = request.denoising_end
        kwargs.update(_eta_argument(choice, base, request.eta))
        t0 = time.perf_counter()
        latents = pipe(**kwargs).images
        timings[f"{prefix}denoise"] = timings.get(f"{prefix}denoise", 0.0) + time.perf_counter() - t0

        # 2. Refiner: continues from denoising_start on the same latents (ensemble of expert denoisers).
        if refiner is not None:
            t0 = time.perf_counter()
            refiner_eta = resolve_eta(request.eta, choice, refiner.pipeline.scheduler.config, sampler="")
            refine = derive_pipeline(
                pipeline_class(Family.SDXL_REFINER, inpaint=inpaint),
                refiner.pipeline,
                scheduler=build_scheduler(
                    choice, refiner.pipeline.scheduler.config, noise_seed=noise_seed, eta=refiner_eta
                ),
            )
            first = counter.step  # the refiner goes on with the prompt schedule where the base stopped
            refiner_prompts = self._prompts(members, refiner, refine, steps)
            extra: dict[str, Any] = {}
            if inpaint:
                extra = {"mask_image": mask, "width": request.width, "height": request.height}
                extra["masked_image_latents"] = kwargs["masked_image_latents"]
            latents = refine(
                **refiner_prompts.pipeline_arguments(first, pooled=True),
                num_inference_steps=steps,
                guidance_scale=request.guidance_scale,
                denoising_start=request.denoising_end,
                image=latents,
                num_images_per_prompt=members[0].num_images if len(members) == 1 else 1,  # a latent per image
                generator=generators,
                output_type="latent",
                callback_on_step_end=counter.callback(
                    "refiner", later_steps=later_steps, then=refiner_prompts.updater(first, pooled=True)
                ),
                callback_on_step_end_tensor_inputs=refiner_prompts.tensor_inputs(pooled=True),
                **extra,
                **_eta_argument(choice, refiner, refiner_eta),
            ).images
            timings[f"{prefix}refine"] = timings.get(f"{prefix}refine", 0.0) + time.perf_counter() - t0
        return latents, pipe

    def _hires(
        self,
        request: GenerationRequest,
        base: LoadedModel,
        refiner: LoadedModel | None,
        latents: torch.Tensor,
        pipe: DiffusionPipeline,
        counter: _StepCounter,
        timings: dict[str, float],
    ) -> tuple[torch.Tensor, DiffusionPipeline]:
        """A1111's hires fix: upscale the first pass (its latents, or its decoded images with an image upscaler),
        then denoise ``strength`` of the second pass's steps at the large size, with the same seeds."""
        width, height, cover_w, cover_h = hires_size(request)
        t0 = time.perf_counter()
        init: Init
        if is_latent_upscaler(request.hr_upscaler):
            factor = int(pipe.vae_scale_factor)  # 8 for SD and SDXL, 4 for the demo model's VAE
            large = upscale_latents(latents, request.hr_upscaler, width=cover_w // factor, height=cover_h // factor)
            init = center_crop_latents(large, width // factor, height // factor)
        else:
            t1 = time.perf_counter()
            images = decode_latents(pipe, latents)
            timings["decode"] = time.perf_counter() - t1
            init = [
                center_crop(
                    self.upscalers.upscale(
                        image, request.hr_upscaler, width=cover_w, height=cover_h, field="hr_upscaler"
                    ),
                    width,
                    height,
                )
                for image in images
            ]
        timings["upscale"] = time.perf_counter() - t0
        second = dataclasses.replace(
            request,
            width=width,
            height=height,
            num_inference_steps=request.hr_second_pass_steps or request.num_inference_steps,
            sampler=request.hr_sampler or request.sampler,
            schedule_type=request.hr_schedule_type or request.schedule_type,
            prompt=request.hr_prompt or request.prompt,
            negative_prompt=request.hr_negative_prompt or request.negative_prompt,
            guidance_scale=request.guidance_scale if request.hr_cfg is None else request.hr_cfg,
            eta=request.eta if request.hr_sampler is None else None,
            enable_hr=False,
        )
        return self._denoise(second, base, refiner, init, None, counter, timings, stage="hires")

    def _sd_upscale(
        self,
        request: GenerationRequest,
        base: LoadedModel,
        refiner: LoadedModel | None,
        image: Image,
        timings: dict[str, float],
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        previews: int = 0,
    ) -> list[Image]:
        """A1111's "SD upscale" script: upscale the init image, re-run ``strength`` of the steps on each tile of the
        request's size (every tile of image *n* with seed + *n*), and blend the tiles back together."""
        t0 = time.perf_counter()
        large_w, large_h = sd_upscale_size(request, image.size)
        large = self.upscalers.upscale(
            image, request.sd_upscale_upscaler, width=large_w, height=large_h, field="sd_upscale_upscaler"
        )
        timings["upscale"] = time.perf_counter() - t0
        grid = split_tiles(large, int(request.width or 8), int(request.height or 8), request.sd_upscale_overlap)
        per_tile = max(1, int(int(request.num_inference_steps or 1) * request.strength))
        runs = len(grid.tiles) * request.num_images
        counter = _StepCounter(
            total=runs * per_tile, progress=progress, cancel=cancel, previews=_previews(base, previews)
        )
        mask = full_mask(grid.tile_w, grid.tile_h) if inpainting_unet(base.pipeline) else None
        results = []
        for n in range(request.num_images):
            one = dataclasses.replace(request, seed=request.seed + n, num_images=1)
            tiles = []
            for k, tile in enumerate(grid.tiles):
                later = (runs - n * len(grid.tiles) - k - 1) * per_tile
                latents, pipe = self._denoise(
                    one, base, refiner, tile.image, mask, counter, timings, later_steps=later, stage="tile"
                )
                t1 = time.perf_counter()
                tiles.extend(decode_latents(pipe, latents))
                timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t1
            results.append(combine_tiles(grid, tiles))
        return results

    def _inpaint(
        self,
        request: GenerationRequest,
        base: LoadedModel,
        refiner: LoadedModel | None,
        inputs: Inputs,
        counter: _StepCounter,
        timings: dict[str, float],
    ) -> list[Image]:
        """A1111's order: blur the mask; crop around it ("only masked") or resize to the request's size; fill the
        masked area; denoise with the mask; decode; composite onto the original through the blurred mask."""
        if inputs.image is None or inputs.mask is None:
            raise TypeError("inpainting needs the canvas and the mask of inpaint_inputs")
        width, height = int(request.width or 8), int(request.height or 8)
        blurred = blur_mask(inputs.mask, request.mask_blur, request.mask_blur)
        box: tuple[int, int, int, int] | None = None
        if request.inpaint_full_res:
            box = crop_region(blurred, request.inpaint_full_res_padding)
            box = expand_to_aspect(box, width, height, *inputs.image.size)
            original = inputs.image.crop(box)
            work_mask = blurred.crop(box)
        else:
            original, work_mask = inputs.image, blurred
        original = resized(original, width, height)
        work_mask = work_mask.resize((width, height), PILImage.Resampling.LANCZOS)
        work_image = original
        if request.inpainting_fill == "fill":
            work_image = fill_masked(original, binary_mask(work_mask))
        latents, pipe = self._denoise(request, base, refiner, work_image, work_mask, counter, timings)
        t0 = time.perf_counter()
        images = decode_latents(pipe, latents)
        if box is not None:
            images = [paste_region(inputs.image, image, box, blurred) for image in images]
        else:
            images = [composite(original, image, work_mask) for image in images]
        timings["decode"] = time.perf_counter() - t0
        return images

    def _prompts(
        self, members: Sequence[GenerationRequest], model: LoadedModel, pipe: DiffusionPipeline, steps: int
    ) -> StagePrompts | BatchPrompts:
        """One request's prompt schedule, or a batch's (one row of embeddings per image)."""
        # The embedding folders are listed once per stage, not once per request of a batch.
        embeddings = self._usable_embeddings(pipe, model.info.family)
        if len(members) == 1:
            return self._stage_prompts(members[0], model, pipe, steps, embeddings)
        stages = [self._stage_prompts(member, model, pipe, steps, embeddings) for member in members]
        return BatchPrompts(stages, [member.num_images for member in members])

    def _stage_prompts(
        self,
        request: GenerationRequest,
        model: LoadedModel,
        pipe: DiffusionPipeline,
        steps: int,
        embeddings: Sequence[Embedding],
    ) -> StagePrompts:
        """The prompt schedule of one stage, encoded by ``model``'s text encoders (LoRA tags removed)."""
        encoder = PromptEncoder.for_pipeline(
            pipe,
            model.info.family.value,
            clip_skip=request.clip_skip,
            emphasis=Emphasis(request.emphasis),
            embeddings=embeddings,
        )
        # Everything the conditioning depends on besides the text: the cache may answer for the same state only.
        state = (
            f"{model.info.kind}:{model.info.path}:{model.info.family.value}",
            model.adapters.text_encoder_state if model.adapters is not None else (),
            tuple((e.name, str(e.path), e.vectors) for e in embeddings),
            self._embeddings_version,
            request.clip_skip,
            request.emphasis,
        )
        prompt, _ = extract_network_tags(request.prompt)  # a negative prompt's tags are text, as in A1111
        return StagePrompts(
            CachedEncoder(encoder, self.conditionings, state),
            prompt,
            request.negative_prompt,
            steps=steps,
            zero_empty_negative=bool(pipe.config.get("force_zeros_for_empty_prompt", False)),
        )

    def infotext(
        self,
        request: GenerationRequest,
        model: ModelInfo,
        refiner: LoadedModel | None,
        seed: int,
        *,
        loras: Sequence[tuple[str, str]] = (),
    ) -> Infotext:
        """The A1111 infotext of one image of an effective request: the keys :class:`Infotext` knows, then every other
        field of :data:`imagegen.fields.FIELDS` that has an infotext key and a value other than its default."""
        extra: dict[str, str] = {}
        for spec in FIELDS:
            if spec.infotext is None or spec.infotext in FIELD_KEYS or spec.field == "eta":
                continue
            if spec.field in INPAINT_FIELDS or spec.field in HIRES_FIELDS or spec.field.startswith("sd_upscale"):
                continue  # written below, as groups, only when inpainting / with the hires fix / SD upscale
            value = extra_value(getattr(request, spec.field), _REQUEST_DEFAULTS[spec.field])
            if value is not None:
                extra[spec.infotext] = value
        rule = eta_rule(parse_sampler(request.sampler, request.schedule_type), model.scheduler_config)
        if rule is not None and request.eta is not None and request.eta != rule.default:
            # As A1111: "Eta DDIM" / "Eta", only when not the sampler's default.
            extra[rule.infotext_key] = format_number(float(request.eta))
        extra.update(inpaint_infotext(request))
        extra.update(hires_infotext(request))
        extra.update(sd_upscale_infotext(request))
        prompt = request.prompt
        if request.loras:
            # LoRAs asked for by field are written as the tags that ask for the same, so that any A1111 reader
            # (and --from) brings them back.
            prompt = " ".join([prompt, *(lora.tag() for lora in request.loras)]).strip()
        if loras:
            # (name, A1111 short hash) of each LoRA applied.
            hashes = ", ".join(f"{name}: {short}" for name, short in loras)
            extra["Lora hashes"] = hashes  # quoted by format_infotext, as A1111 writes it
        return Infotext(
            prompt=prompt,
            negative_prompt=request.negative_prompt,
            steps=request.num_inference_steps,
            sampler=request.sampler,
            schedule_type=request.schedule_type,
            cfg_scale=request.guidance_scale,
            seed=seed,
            width=request.width,
            height=request.height,
            model_hash=model.hash,
            model=model.ref,
            denoising_strength=request.strength if request.init_image is not None or request.enable_hr else None,
            refiner=refiner.info.title if refiner else None,
            refiner_switch_at=request.denoising_end if refiner else None,
            version=VERSION,
            extra=extra,
        )


def _batch_signature(request: GenerationRequest, loras: Sequence[ActiveLora]) -> str | None:
    """What requests must share to be denoised as one batch: every field but the prompts, the seed and the image count,
    and the same LoRA files at the same weights (tags in a prompt included). ``None``: this request runs alone (an
    init image, a mask, the hires fix and the SD upscale script have per-request inputs or passes)."""
    if request.init_image is not None or request.inpainting or request.enable_hr or request.sd_upscale:
        return None
    shared = {
        f.name: getattr(request, f.name)
        for f in dataclasses.fields(request)
        if f.name not in ("prompt", "negative_prompt", "seed", "num_images", "styles")
    }
    shared["loras"] = [(str(lora.file.path), lora.te_weight, lora.unet_weight) for lora in loras]
    return repr(sorted(shared.items()))


@dataclass(frozen=True)
class _AllSet:
    """Looks like an event to the step counter: set once every one of ``events`` is set."""

    events: Sequence[threading.Event]

    def is_set(self) -> bool:
        return all(event.is_set() for event in self.events)


def _scale_added_noise(scheduler: Any, multiplier: float) -> None:
    """A1111's ``initial_noise_multiplier``: the noise image-to-image adds to the input's latents (the pipeline's
    ``scheduler.add_noise``, also its inpainting blend) scaled by ``multiplier``, on this request's own scheduler."""
    add_noise = scheduler.add_noise

    def scaled(original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = add_noise(original, noise * multiplier, timesteps)
        return result

    scheduler.add_noise = scaled


def _eta_argument(choice: SamplerChoice | None, model: LoadedModel, eta: float | None) -> dict[str, float]:
    """``{"eta": eta}`` for a pipeline whose sampler takes eta as a call argument (DDIM), else nothing."""
    rule = eta_rule(choice, model.pipeline.scheduler.config)
    return {"eta": eta} if rule is not None and rule.pipeline_argument and eta is not None else {}


@dataclass(kw_only=True)
class _StepCounter:
    """Counts finished steps across base and refiner, reports progress and honours cancellation.

    The true step count of a stage is only known once its pipeline has set its timesteps (PLMS adds a step,
    ``denoising_end`` removes some), so the total is refined from ``pipe.num_timesteps`` at every step."""

    total: int
    progress: ProgressCallback | None
    cancel: threading.Event | _AllSet | None
    step: int = 0
    #: (step, latents) → the previews due at that step, by latent row (see :func:`_previews`); None: no previews.
    previews: Callable[[int, torch.Tensor], dict[int, Image]] | None = None
    #: The previews of the last step, by latent row: a batch hands each member its own.
    last_previews: dict[int, Image] = dataclasses.field(default_factory=dict)

    def callback(
        self,
        stage: str,
        *,
        later_steps: int = 0,
        then: Callable[[Any, int, dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Callable[..., dict[str, Any]]:
        start = self.step

        def on_step_end(pipe: Any, i: int, t: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            self.step = start + i + 1
            self.total = max(self.step, start + int(getattr(pipe, "num_timesteps", 0) or 0) + later_steps)
            if self.previews is not None:
                self.last_previews = self.previews(self.step, callback_kwargs["latents"])
            if self.progress is not None:
                preview = self.last_previews.get(0)
                self.progress(ProgressEvent(step=self.step, total=self.total, stage=stage, preview=preview))
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled(f"cancelled after step {self.step} of {self.total}")
            return then(pipe, i, callback_kwargs) if then is not None else callback_kwargs

        return on_step_end


def _previews(
    model: LoadedModel, every: int | Mapping[int, int]
) -> Callable[[int, torch.Tensor], dict[int, Image]] | None:
    """The previews due at a step: of latent row 0 every ``every``-th step, or for a batch ``{row: every}`` (each
    member's first image, each member its own rhythm). None when no row wants any: nothing is computed."""
    wanted = {0: every} if isinstance(every, int) else dict(every)
    wanted = {row: n for row, n in wanted.items() if n > 0}
    previewer = model.previewer
    if not wanted or previewer is None:
        return None

    def due(step: int, latents: torch.Tensor) -> dict[int, Image]:
        return {row: previewer.image(latents[row : row + 1]) for row, n in wanted.items() if step % n == 0}

    return due


def _tile_progress(progress: ProgressCallback | None, index: int, passes: int) -> Callable[[int, int], None] | None:
    """The upscaler's (done, total) tiles of pass ``index`` of ``passes`` as progress events over all passes."""
    if progress is None:
        return None

    def on_tile(done: int, total: int) -> None:
        progress(ProgressEvent(step=index * total + done, total=passes * total, stage="upscale"))

    return on_tile


def derive_pipeline(cls: type[DiffusionPipeline], source: DiffusionPipeline, **overrides: Any) -> DiffusionPipeline:
    """A new ``cls`` pipeline on the same module objects as ``source`` (no copy, no cast), plus ``overrides``.

    This is what diffusers' ``from_pipe`` does, minus its final ``.to(dtype)``, which would cast the shared weights in
    place (float16 weights to float32 unless told otherwise, and an upcast SDXL VAE back to float16)."""
    parameters = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    for name, parameter in parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in overrides:
            kwargs[name] = overrides[name]
        elif name in source.components:
            kwargs[name] = source.components[name]
        elif name in source.config:
            kwargs[name] = source.config[name]
        elif parameter.default is parameter.empty:
            kwargs[name] = None  # an optional component the source does not have (safety checker, image encoder)
    if "requires_safety_checker" in parameters:
        kwargs["requires_safety_checker"] = False
    pipeline = cls(**kwargs)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def decode_latents(pipe: DiffusionPipeline, latents: torch.Tensor) -> list[Image]:
    """VAE-decode latents to PIL images. A NaN result in half precision is retried in float32 (the SDXL VAE
    overflows in fp16); a NaN in float32 raises :class:`GenerationFailed` instead of returning a black image."""
    vae = pipe.vae
    config = vae.config
    mean = getattr(config, "latents_mean", None)
    std = getattr(config, "latents_std", None)

    def run(dtype: torch.dtype) -> torch.Tensor:
        module = vae if vae.dtype == dtype else vae.to(dtype)
        x = latents.to(device=module.device, dtype=dtype)
        if mean is not None and std is not None:
            m = torch.tensor(mean, device=x.device, dtype=dtype).view(1, -1, 1, 1)
            s = torch.tensor(std, device=x.device, dtype=dtype).view(1, -1, 1, 1)
            x = x * s / config.scaling_factor + m
        else:
            x = x / config.scaling_factor
        with torch.no_grad():
            decoded: torch.Tensor = module.decode(x, return_dict=False)[0]
        return decoded

    image = run(vae.dtype)
    if not torch.isfinite(image).all():
        if vae.dtype == torch.float32:
            raise GenerationFailed("the VAE produced NaN values even in float32; the model or latents are broken")
        # Keep the VAE in float32 from now on (like A1111's --no-half-vae after its NaN check).
        image = run(torch.float32)
        if not torch.isfinite(image).all():
            raise GenerationFailed("the VAE produced NaN values in float16 and float32")
    images: list[Image] = pipe.image_processor.postprocess(image.float().cpu(), output_type="pil")
    return images


def _embedding_encoders(pipe: DiffusionPipeline, family: Family) -> dict[str, Any]:
    """The text encoders an embedding file's vectors go to, by the file's key (``""``: SD 1.x/2.x's only one)."""
    if family in (Family.SD1, Family.SD2):
        return {"": pipe.text_encoder}
    encoders = {"clip_g": pipe.text_encoder_2}
    if family is Family.SDXL:
        encoders["clip_l"] = pipe.text_encoder
    return encoders


def _warm_up(pipeline: DiffusionPipeline) -> None:
    """One denoising step at the model's native size with its own scheduler and a classifier-free-guidance batch of
    2, the shapes and dtypes of a plain request: what ``torch.compile`` compiles on first use, paid at load instead
    of by the first request. A refiner or an inpainting UNet (which need images) compiles on its first request."""
    unet = pipeline.unet
    if unet.config.in_channels != 4 or getattr(pipeline, "text_encoder", None) is None:
        return
    size = int(unet.config.sample_size) * int(pipeline.vae_scale_factor)
    # Not under inference_mode: requests run under no_grad, and dynamo guards on the tensors' dispatch keys.
    pipeline(prompt="", num_inference_steps=1, width=size, height=size, output_type="latent", guidance_scale=2.0)
