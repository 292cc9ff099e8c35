"""Resolve a model reference and load it. The only module that touches model files or the hub.

A reference is one of:

* a local diffusers folder (with ``model_index.json``),
* a single ``.safetensors`` checkpoint (A1111 / civitai style), loaded offline with the bundled reference configs,
* a name inside the models directory (folder name, file name, or file stem),
* a Hugging Face hub id (``owner/name``), downloaded through huggingface_hub. ``HF_ENDPOINT`` (a mirror) and
  ``HF_HUB_OFFLINE`` are read at call time, so they can change between calls.

The pipeline family (SD 1.x, SD 2.x, SDXL, SDXL refiner) is detected from the files, never asked for.
Pickle-based files (``.ckpt``, ``.bin``, ``.pt``, ``.pth``) can run code when loaded and are refused unless the
caller opts in with ``allow_pickle``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from imagegen.errors import ModelLoadError, ModelNotFound, UnsafeModelFile

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
SINGLE_FILE_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRUE = ("1", "true", "yes", "on")

#: Files a diffusers pipeline needs from a hub repo; root-level single-file checkpoints (often 7 GB) are skipped.
_HUB_CONFIG_PATTERNS = ("model_index.json", "imagegen.json", "*/*.json", "*/*.txt", "*/*.model")


class Family(str, Enum):
    """Pipeline families imagegen knows how to run."""

    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    SDXL_REFINER = "sdxl-refiner"

    @property
    def reference_config(self) -> str:
        """Name of the bundled full-size config folder used for single-file checkpoints of this family."""
        return {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl-base", "sdxl-refiner": "sdxl-refiner"}[self.value]


@dataclass(frozen=True, kw_only=True)
class ModelDefaults:
    """Settings a request inherits when it leaves them unset; a model folder may override them in ``imagegen.json``."""

    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """A resolved, identified model: where it is, what it is, how to name it in metadata."""

    ref: str
    """The reference that resolves to this model again (hub id, models-dir name, or absolute path)."""
    kind: str
    """``"builtin"``, ``"hub"``, ``"folder"`` or ``"single_file"``."""
    path: Path
    """Local folder or file (for hub ids, the snapshot folder)."""
    family: Family
    prediction_type: str
    defaults: ModelDefaults
    hash: str | None = None
    """A1111's "Model hash" (first 10 hex digits of the file's SHA-256) for single files, the commit for hub models."""
    scheduler_config: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """The model's own ``scheduler_config.json`` (its sampler when a request names none), read without diffusers."""

    @property
    def title(self) -> str:
        """A1111's checkpoint title: ``name [hash]``."""
        return f"{self.ref} [{self.hash}]" if self.hash else self.ref


@dataclass(frozen=True, kw_only=True)
class HubModel:
    """One row of a hub search."""

    id: str
    downloads: int
    likes: int
    pipeline_tag: str | None


#: The demo model shipped inside the package (trained by ``imagegen train-demo``), used when no model is given.
DEFAULT_MODEL = "imagegen-shapes"
BUILTIN_MODELS = ("imagegen-shapes", "imagegen-shapes-refiner")


def builtin_models() -> dict[str, Path]:
    """Name -> folder of the models shipped inside the package."""
    weights = Path(__file__).parent / "demo" / "weights"
    return {name: weights / name for name in BUILTIN_MODELS}


def imagegen_home() -> Path:
    """Where imagegen keeps its own caches (``IMAGEGEN_HOME``, default ``~/.cache/imagegen``)."""
    return Path(os.environ.get("IMAGEGEN_HOME") or Path.home() / ".cache" / "imagegen")


def default_models_dir() -> Path:
    """The models directory (``IMAGEGEN_MODELS_DIR``, default ``<IMAGEGEN_HOME>/models``)."""
    return Path(os.environ.get("IMAGEGEN_MODELS_DIR") or imagegen_home() / "models")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it, but at call time."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_cache_dir() -> Path | None:
    """The hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``) read at call time; ``None``: huggingface_hub's own."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return None


def hub_endpoint() -> str | None:
    """``HF_ENDPOINT`` (a hub mirror such as the seed's), read at call time; ``None`` means huggingface.co."""
    return os.environ.get("HF_ENDPOINT") or None


# 1. Resolve ---------------------------------------------------------------------------------------------------------


def resolve(ref: str, *, models_dir: Path | None = None, allow_pickle: bool = False) -> ModelInfo:
    """Turn a model reference into a :class:`ModelInfo`, downloading hub models when allowed.

    Raises :class:`ModelNotFound` (with what was tried and how to fix it), :class:`UnsafeModelFile` for pickle files
    without ``allow_pickle``, and :class:`ModelLoadError` for files that are not a model imagegen can run.
    """
    ref = ref.strip()
    if not ref:
        raise ModelNotFound("no model given: pass a hub id, a local folder, or a .safetensors file")
    builtin = builtin_models().get(ref)
    if builtin is not None:
        if not (builtin / "model_index.json").is_file():
            raise ModelNotFound(f"the built-in model {ref!r} is missing from this installation ({builtin})")
        return _identify_folder(builtin, ref=ref, kind="builtin")
    models_dir = models_dir or default_models_dir()
    candidates: list[tuple[Path, str]] = []
    direct = Path(ref).expanduser()
    if direct.is_absolute() or ref.startswith((".", "~")) or direct.exists():
        candidates.append((direct, str(direct.resolve())))
    if not direct.is_absolute() and ".." not in Path(ref).parts:
        for name in (ref, *(ref + suffix for suffix in SINGLE_FILE_SUFFIXES)):
            candidates.append((models_dir / name, name))
    for path, name in candidates:
        if path.is_dir() and (path / "model_index.json").is_file():
            return _identify_folder(path, ref=name, kind="folder")
        if path.is_file():
            return _identify_single_file(path, ref=name, allow_pickle=allow_pickle)
    if _HUB_ID.match(ref) and not direct.exists():
        return _identify_folder(download(ref, allow_pickle=allow_pickle), ref=ref, kind="hub")
    raise ModelNotFound(
        f"model {ref!r} not found: it is not a folder with model_index.json, not a .safetensors file, "
        f"not a name in the models directory {models_dir}, and not a hub id (owner/name). "
        "Run `imagegen models` to see what is available."
    )


def download(repo_id: str, *, allow_pickle: bool = False, cache_dir: Path | None = None) -> Path:
    """Download (or find in the cache) the diffusers files of a hub repo; return the snapshot folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline()
    patterns = [*_HUB_CONFIG_PATTERNS, "*/*.safetensors"]
    if allow_pickle:
        patterns.append("*/*.bin")
    try:
        folder = snapshot_download(
            repo_id,
            endpoint=hub_endpoint(),
            local_files_only=offline,
            allow_patterns=patterns,
            # fp16 "variant" files duplicate the weights; we load the full-precision files and cast.
            ignore_patterns=["*.fp16.*", "*.non_ema.*", "*.ema.*"],
            cache_dir=cache_dir or hub_cache_dir(),
        )
    except LocalEntryNotFoundError:
        if offline:
            raise ModelNotFound(
                f"hub model {repo_id!r} is not in the local Hugging Face cache "
                "and HF_HUB_OFFLINE=1 forbids downloading it. "
                "Download it once with network access (unset HF_HUB_OFFLINE; set HF_ENDPOINT to use a mirror), "
                "or pass a local folder or .safetensors file instead."
            ) from None
        raise ModelNotFound(
            f"hub model {repo_id!r} could not be downloaded from {hub_endpoint() or 'https://huggingface.co'} "
            "and is not cached: check the network or HF_ENDPOINT, or pass a local folder/.safetensors file."
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as exc:
        raise ModelNotFound(f"hub model {repo_id!r} not found or not accessible: {type(exc).__name__}") from None
    except HfHubHTTPError as exc:
        raise ModelNotFound(f"hub model {repo_id!r} could not be downloaded: {exc}") from None
    path = Path(folder)
    if not (path / "model_index.json").is_file():
        raise ModelLoadError(f"hub repo {repo_id!r} is not a diffusers pipeline (no model_index.json)")
    return path


# 2. Identify ----------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return data


def _family_of_folder(folder: Path, index: Mapping[str, Any]) -> Family:
    unet = _read_json(folder / "unet" / "config.json") if (folder / "unet" / "config.json").is_file() else {}
    class_name = str(index.get("_class_name", ""))
    has_encoder_1 = isinstance(index.get("text_encoder"), list) and index["text_encoder"][0] is not None
    if unet.get("addition_embed_type") == "text_time" or "XL" in class_name:
        return Family.SDXL if has_encoder_1 else Family.SDXL_REFINER
    if class_name.startswith("StableDiffusion"):
        # SD 2.x: OpenCLIP text encoder (1024-d) and linear projections in the transformer blocks.
        return (
            Family.SD2 if unet.get("cross_attention_dim") == 1024 or unet.get("use_linear_projection") else Family.SD1
        )
    raise ModelLoadError(
        f"{folder} holds a {class_name or 'unknown'} pipeline; imagegen runs Stable Diffusion 1.x, 2.x and SDXL"
    )


def _defaults_for(family: Family, folder: Path) -> ModelDefaults:
    unet = folder / "unet" / "config.json"
    vae = folder / "vae" / "config.json"
    size = {Family.SD1: 512, Family.SD2: 768, Family.SDXL: 1024, Family.SDXL_REFINER: 1024}[family]
    if unet.is_file() and vae.is_file():
        scale = 2 ** (len(_read_json(vae).get("block_out_channels", [0, 0, 0, 0])) - 1)
        sample = _read_json(unet).get("sample_size")
        if isinstance(sample, int):
            size = sample * scale
    values: dict[str, Any] = {
        "width": size,
        "height": size,
        "num_inference_steps": 30,
        "guidance_scale": 5.0 if family in (Family.SDXL, Family.SDXL_REFINER) else 7.0,
    }
    overrides = folder / "imagegen.json"
    if overrides.is_file():
        values.update({k: v for k, v in _read_json(overrides).get("defaults", {}).items() if k in values})
    return ModelDefaults(**values)


def _identify_folder(folder: Path, *, ref: str, kind: str) -> ModelInfo:
    index = _read_json(folder / "model_index.json")
    family = _family_of_folder(folder, index)
    scheduler = _scheduler_config(folder)
    commit = folder.name if kind == "hub" and re.fullmatch(r"[0-9a-f]{40}", folder.name) else None
    return ModelInfo(
        ref=ref,
        kind=kind,
        path=folder,
        family=family,
        prediction_type=str(scheduler.get("prediction_type", "epsilon")),
        defaults=_defaults_for(family, folder),
        hash=commit[:10] if commit else None,
        scheduler_config=MappingProxyType(scheduler),
    )


def _scheduler_config(folder: Path) -> dict[str, Any]:
    path = folder / "scheduler" / "scheduler_config.json"
    return _read_json(path) if path.is_file() else {}


def _single_file_keys(path: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:  # header only; no torch import
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own untyped errors for corrupt headers
        raise ModelLoadError(f"{path} is not a readable .safetensors file: {exc}") from None


#: The key prefix of the UNet's weights in an original-format (LDM) checkpoint.
_LDM_UNET_PREFIX = "model.diffusion_model."
#: Bytes per weight assumed for pickled files, whose header cannot be read without unpickling (float16 as saved).
_PICKLE_BYTES_PER_WEIGHT = 2


def unet_parameters(info: ModelInfo) -> int:
    """How many weights the UNet of ``info`` has, from the files' headers (no tensors are read): what decides whether
    bfloat16 pays on a CPU (:func:`imagegen.engine.auto_dtype`). Pickled files count as float16 bytes."""
    if info.kind == "single_file":
        if info.path.suffix.lower() != ".safetensors":
            return info.path.stat().st_size // _PICKLE_BYTES_PER_WEIGHT
        shapes = _single_file_keys(info.path)
        return sum(math.prod(shape) for key, shape in shapes.items() if key.startswith(_LDM_UNET_PREFIX))
    folder = info.path / "unet"
    # One set of files: a folder may hold the weights twice (``…safetensors`` and the ``….fp16.safetensors`` variant).
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    variants = {file: ".".join(file.name.split(".")[1:-1]) for file in files}
    chosen = [file for file in files if variants[file] == variants[files[0]]]
    if chosen and chosen[0].suffix == ".bin":
        return sum(file.stat().st_size for file in chosen) // _PICKLE_BYTES_PER_WEIGHT
    return sum(math.prod(shape) for file in chosen for shape in _single_file_keys(file).values())


def family_of_checkpoint(keys: Mapping[str, list[int]]) -> Family:
    """Detect the family of an original-format (LDM) checkpoint from its key names and shapes."""
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return Family.SDXL
    if any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        return Family.SDXL_REFINER
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return Family.SD2
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return Family.SD1
    context = keys.get("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")
    if context:
        return {768: Family.SD1, 1024: Family.SD2, 2048: Family.SDXL, 1280: Family.SDXL_REFINER}.get(
            context[-1], Family.SD1
        )
    raise ModelLoadError("unrecognised checkpoint: no Stable Diffusion UNet keys (model.diffusion_model.*) found")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, cached beside imagegen's home by (path, size, mtime): hashing 7 GB takes a while."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    cache = imagegen_home() / "hashes" / key
    if cache.is_file():
        return cache.read_text().strip()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(value)
    except OSError:
        pass  # a read-only home only costs re-hashing next time
    return value


def _sidecar_config(path: Path) -> Path | None:
    """A diffusers config folder beside a checkpoint (``model.safetensors`` + ``model.config/model_index.json``),
    for fine-tunes whose architecture differs from the bundled reference configs."""
    folder = path.with_suffix(".config")
    return folder if (folder / "model_index.json").is_file() else None


def _bundled_config(family: Family) -> Path:
    return Path(__file__).parent / "configs" / family.reference_config


def _identify_single_file(path: Path, *, ref: str, allow_pickle: bool) -> ModelInfo:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise UnsafeModelFile(
            f"{path.name} is a pickle checkpoint, which can run arbitrary code when loaded; convert it to "
            ".safetensors, or opt in explicitly (--allow-pickle / Engine(allow_pickle=True)) if you trust its source"
        )
    if suffix not in SINGLE_FILE_SUFFIXES:
        raise ModelLoadError(f"{path} is not a model file: expected .safetensors (or a folder with model_index.json)")
    # A pickle's keys can't be read without unpickling it; it is assumed SD 1.x and diffusers re-detects on load.
    family = family_of_checkpoint(_single_file_keys(path)) if suffix == ".safetensors" else Family.SD1
    config = _sidecar_config(path) or _bundled_config(family)
    scheduler = _scheduler_config(config)
    return ModelInfo(
        ref=ref,
        kind="single_file",
        path=path,
        family=family,
        prediction_type=str(scheduler.get("prediction_type", "epsilon")),
        defaults=_defaults_for(family, config),
        hash=file_sha256(path)[:10],
        scheduler_config=MappingProxyType(scheduler),
    )


# 3. Load -------------------------------------------------------------------------------------------------------------


def pipeline_class(family: Family, *, img2img: bool = False, inpaint: bool = False) -> type[DiffusionPipeline]:
    """The diffusers pipeline class for a family (never a remote/custom class: no code from model repos runs).

    ``inpaint`` picks the inpainting pipeline, which serves both ordinary checkpoints (latent blending) and inpainting
    checkpoints (a 9-channel UNet); an SDXL refiner continues an SDXL inpainting base with it too."""
    import diffusers

    cls: type[DiffusionPipeline]
    if inpaint:
        sdxl = family in (Family.SDXL, Family.SDXL_REFINER)
        cls = diffusers.StableDiffusionXLInpaintPipeline if sdxl else diffusers.StableDiffusionInpaintPipeline
    elif family is Family.SDXL_REFINER:
        cls = diffusers.StableDiffusionXLImg2ImgPipeline
    elif family is Family.SDXL:
        cls = diffusers.StableDiffusionXLImg2ImgPipeline if img2img else diffusers.StableDiffusionXLPipeline
    else:
        cls = diffusers.StableDiffusionImg2ImgPipeline if img2img else diffusers.StableDiffusionPipeline
    return cls


def reference_config_dir(family: Family) -> Path:
    """A complete bundled config folder (configs + CLIP tokenizer files) for single-file loading."""
    from imagegen import __version__
    from imagegen.reference_configs import materialize_reference_config

    # Per version: a later release may ship corrected configs, and the folder is reused once made.
    return materialize_reference_config(family.reference_config, imagegen_home() / "configs" / __version__)


def load_pipeline(
    info: ModelInfo,
    *,
    dtype: torch.dtype,
    shared: Mapping[str, Any] | None = None,
    allow_pickle: bool = False,
) -> DiffusionPipeline:
    """Load ``info`` as its family's pipeline on the CPU in ``dtype``; ``shared`` passes components to reuse
    (the refiner takes the base's ``text_encoder_2`` and ``vae``)."""
    cls = pipeline_class(info.family)
    kwargs: dict[str, Any] = {_dtype_keyword(): dtype, **(shared or {})}
    if info.family in (Family.SD1, Family.SD2):
        # A1111/ComfyUI do not run the safety checker either; loading it would cost 1.2 GB.
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        if info.kind == "single_file":
            config = _sidecar_config(info.path) or _single_file_config(info)
            return cls.from_single_file(str(info.path), config=str(config), local_files_only=True, **kwargs)
        return cls.from_pretrained(
            str(info.path), local_files_only=True, use_safetensors=not allow_pickle or None, **kwargs
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"cannot load {info.ref} as {info.family.value}: {exc}") from None


#: The first convolution of an original-format UNet: its input channels tell an inpainting checkpoint (9) apart.
_UNET_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


def _single_file_config(info: ModelInfo) -> Path:
    """The reference config of ``info``'s family, or for an inpainting checkpoint (a UNet taking 9 channels: latents,
    mask, masked image) a copy of it with that UNet input, kept under imagegen's home."""
    reference = reference_config_dir(info.family)
    if info.path.suffix.lower() != ".safetensors":
        return reference
    shape = _single_file_keys(info.path).get(_UNET_CONV_IN) or []
    channels = shape[1] if len(shape) > 1 else 4
    if channels == 4:
        return reference
    folder = reference.with_name(f"{reference.name}-in{channels}")
    if not (folder / "unet" / "config.json").is_file():
        import shutil

        partial = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(reference, partial)
        unet_config = json.loads((partial / "unet" / "config.json").read_text(encoding="utf-8"))
        unet_config["in_channels"] = channels
        (partial / "unet" / "config.json").write_text(json.dumps(unet_config, indent=2), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder


def _dtype_keyword() -> str:
    """``dtype`` for diffusers ≥ 0.42, which warns on every load that ``torch_dtype`` is deprecated; older releases
    only know ``torch_dtype``."""
    from importlib.metadata import version

    major, minor = (int(part) for part in re.findall(r"\d+", version("diffusers"))[:2])
    return "dtype" if (major, minor) >= (0, 42) else "torch_dtype"


# 4. List -------------------------------------------------------------------------------------------------------------


def iter_local_models(models_dir: Path | None = None) -> Iterator[ModelInfo]:
    """Models in the models directory (folders and single files) and diffusers pipelines in the hub cache."""
    for name, folder in builtin_models().items():
        if (folder / "model_index.json").is_file():
            yield _identify_folder(folder, ref=name, kind="builtin")
    models_dir = models_dir or default_models_dir()
    if models_dir.is_dir():
        for entry in sorted(models_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir() and entry.suffix != ".config" and (entry / "model_index.json").is_file():
                    yield _identify_folder(entry, ref=entry.name, kind="folder")
                elif entry.is_file() and entry.suffix.lower() == ".safetensors":
                    yield _identify_single_file(entry, ref=entry.name, allow_pickle=False)
            except (ModelLoadError, OSError):
                continue  # not a model we can run; `models` lists only what loads
    yield from _iter_hub_cache()


def _iter_hub_cache() -> Iterator[ModelInfo]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(hub_cache_dir())
    except CacheNotFound:
        return
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            if (revision.snapshot_path / "model_index.json").is_file():
                with contextlib.suppress(ModelLoadError):  # not a pipeline family imagegen runs
                    yield _identify_folder(revision.snapshot_path, ref=repo.repo_id, kind="hub")
                break


def search_hub(query: str | None = None, *, limit: int = 20) -> list[HubModel]:
    """Text-to-image models on the hub (or ``HF_ENDPOINT``'s mirror), most downloaded first."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if hub_offline():
        raise ModelNotFound("cannot search the hub: HF_HUB_OFFLINE=1 is set (unset it, or set HF_ENDPOINT to a mirror)")
    api = HfApi(endpoint=hub_endpoint())
    try:
        models = api.list_models(search=query or None, pipeline_tag="text-to-image", sort="downloads", limit=limit)
        return [
            HubModel(id=m.id, downloads=m.downloads or 0, likes=m.likes or 0, pipeline_tag=m.pipeline_tag)
            for m in models
        ]
    except (HfHubHTTPError, OSError) as exc:
        raise ModelNotFound(f"hub search failed at {hub_endpoint() or 'https://huggingface.co'}: {exc}") from None
