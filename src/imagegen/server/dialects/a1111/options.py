"""A1111's ``/sdapi/v1/options`` (and a request's ``override_settings``): every known key, what imagegen does with it.

Clients read the options before writing them back (some write back all of them), so ``GET`` lists every key of
:data:`OPTIONS` with its current value. Each key is one of:

- **honoured**: imagegen does what A1111 does with it (the default checkpoint, the response image format, the default
  eta of DDIM and of the ancestral samplers, ``img2img_fix_steps``, ``enable_pnginfo``);
- **stored**: a setting of A1111's UI or file saving that changes no image an API client gets (``send_seed``,
  ``outdir_samples``, ...): kept and read back, with no effect;
- **default only**: a setting that would change the image in a way imagegen cannot (yet): its default (or another
  value meaning the same) is accepted, any other value is a 422 naming the key and why.

An unknown key is a 422 naming it (A1111 answers it with a 500). The options persist in the data directory.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType

from imagegen.errors import InvalidRequest
from imagegen.server.jobs.model import MAX_PREVIEW_EVERY

__all__ = ["OPTIONS", "A1111Options", "Effect", "OptionSpec", "current_values", "effective_options"]

#: The key whose value names the default model (a served model's A1111 title).
CHECKPOINT = "sd_model_checkpoint"
#: Read-only: the current checkpoint's hash (A1111 reports it; it follows sd_model_checkpoint).
CHECKPOINT_HASH = "sd_checkpoint_hash"
_MAX_VALUE_CHARS = 8192
_SHOWN_CHARS = 80
#: The response image formats ``samples_format`` may name (A1111 saves "jpg" as JPEG).
IMAGE_FORMATS = ("png", "jpg", "jpeg", "webp")


class Effect(str, Enum):
    HONOURED = "honoured"
    STORED = "stored"
    DEFAULT_ONLY = "default_only"


@dataclass(frozen=True, kw_only=True)
class OptionSpec:
    """One A1111 option: its default (A1111 1.10's, or imagegen's actual value where it differs and says so), what
    imagegen does with it, and for a default-only option why, plus other values meaning the same as the default."""

    default: object
    effect: Effect
    why: str = ""
    same_as_default: tuple[object, ...] = ()


def _honoured(default: object) -> OptionSpec:
    return OptionSpec(default=default, effect=Effect.HONOURED)


def _stored(default: object) -> OptionSpec:
    return OptionSpec(default=default, effect=Effect.STORED)


def _only(default: object, why: str, *same: object) -> OptionSpec:
    return OptionSpec(default=default, effect=Effect.DEFAULT_ONLY, why=why, same_as_default=same)


_SAMPLER_PARAMETER = "the samplers' parameters follow the request's sampler and schedule type"
_PROMPT_LANGUAGE = "imagegen's prompt parser follows A1111's defaults for this"
_NO_UPSCALE = "the hires fix follows A1111's defaults for this; no face restoration weights are available"

OPTIONS: Mapping[str, OptionSpec] = MappingProxyType(
    {
        # Honoured.
        CHECKPOINT: _honoured(None),
        CHECKPOINT_HASH: _honoured(None),
        "samples_format": _honoured("png"),
        "jpeg_quality": _honoured(80),
        "webp_lossless": _honoured(False),
        "enable_pnginfo": _honoured(True),
        "eta_ddim": _honoured(0.0),
        "eta_ancestral": _honoured(1.0),
        "img2img_fix_steps": _honoured(False),
        "CLIP_stop_at_last_layers": _honoured(1),
        "emphasis": _honoured("Original"),
        # Would change the image in a way imagegen cannot (yet): the default only.
        "enable_emphasis": _only(True, _PROMPT_LANGUAGE),
        "comma_padding_backtrack": _only(20, _PROMPT_LANGUAGE),
        "enable_prompt_comments": _only(True, _PROMPT_LANGUAGE),
        "use_old_emphasis_implementation": _only(False, _PROMPT_LANGUAGE),
        "sd_lora": _only("None", "LoRAs are asked for per request: <lora:name:weight> in the prompt"),
        "sd_vae": _only("Automatic", "each model uses its own VAE", "None"),
        "sd_unet": _only("Automatic", "each model uses its own UNet", "None"),
        "sd_vae_encode_method": _only("Full", "the VAE always encodes in full"),
        "sd_vae_decode_method": _only("Full", "the VAE always decodes in full"),
        "eta_noise_seed_delta": _only(0, "the sampler noise is always drawn from the image's own seed"),
        "randn_source": _only("CPU", "imagegen always draws noise on the CPU, so a seed gives the same image anywhere"),
        "s_churn": _only(0.0, _SAMPLER_PARAMETER),
        "s_tmin": _only(0.0, _SAMPLER_PARAMETER),
        "s_tmax": _only(0.0, _SAMPLER_PARAMETER, math.inf),
        "s_noise": _only(1.0, _SAMPLER_PARAMETER),
        "s_min_uncond": _only(0.0, _SAMPLER_PARAMETER),
        "k_sched_type": _only("Automatic", "the schedule type is a request field (scheduler)"),
        "sigma_min": _only(0.0, _SAMPLER_PARAMETER),
        "sigma_max": _only(0.0, _SAMPLER_PARAMETER),
        "rho": _only(0.0, _SAMPLER_PARAMETER),
        "always_discard_next_to_last_sigma": _only(False, _SAMPLER_PARAMETER),
        "sgm_noise_multiplier": _only(False, _SAMPLER_PARAMETER),
        "ddim_discretize": _only("uniform", _SAMPLER_PARAMETER),
        "uni_pc_variant": _only("bh1", _SAMPLER_PARAMETER),
        "uni_pc_skip_type": _only("time_uniform", _SAMPLER_PARAMETER),
        "uni_pc_order": _only(3, _SAMPLER_PARAMETER),
        "uni_pc_lower_order_final": _only(True, _SAMPLER_PARAMETER),
        "sd_noise_schedule": _only("Default", "each model runs with its own noise schedule"),
        "use_old_karras_scheduler_sigmas": _only(False, _SAMPLER_PARAMETER),
        "no_dpmpp_sde_batch_determinism": _only(False, _SAMPLER_PARAMETER),
        "dont_fix_second_order_samplers_schedule": _only(False, _SAMPLER_PARAMETER),
        "use_old_scheduling": _only(False, _SAMPLER_PARAMETER),
        "use_downcasted_alpha_bar": _only(False, _SAMPLER_PARAMETER),
        "refiner_switch_by_sample_steps": _only(False, "the refiner switch is a fraction of the steps"),
        "tiling": _honoured(False),
        "initial_noise_multiplier": _honoured(1.0),
        "img2img_extra_noise": _only(0.0, "no extra noise is added in image-to-image"),
        "img2img_color_correction": _only(False, "image-to-image does no colour correction"),
        "img2img_background_color": _only("#ffffff", "transparent inputs are always composited on white"),
        "inpainting_mask_weight": _only(1.0, "inpainting checkpoints always see the whole mask"),
        "sdxl_crop_top": _only(0, "SDXL's crop conditioning is fixed at 0"),
        "sdxl_crop_left": _only(0, "SDXL's crop conditioning is fixed at 0"),
        "sdxl_refiner_low_aesthetic_score": _only(2.5, "the refiner's aesthetic scores are diffusers' defaults"),
        "sdxl_refiner_high_aesthetic_score": _only(6.0, "the refiner's aesthetic scores are diffusers' defaults"),
        "token_merging_ratio": _only(0.0, "token merging is not implemented"),
        "token_merging_ratio_img2img": _only(0.0, "token merging is not implemented"),
        "token_merging_ratio_hr": _only(0.0, "token merging is not implemented"),
        "pad_cond_uncond": _only(False, "prompts and negative prompts are never padded to the same length"),
        "pad_cond_uncond_v0": _only(False, "prompts and negative prompts are never padded to the same length"),
        "fp8_storage": _only("Disable", "weights are never stored in fp8"),
        "face_restoration": _only(False, _NO_UPSCALE),
        "hires_fix_use_firstpass_conds": _only(False, _NO_UPSCALE),
        "use_old_hires_fix_width_height": _only(False, _NO_UPSCALE),
        # Stored: UI, saving and memory settings that change no image an API client receives.
        "sd_checkpoints_limit": _stored(1),
        "sd_checkpoints_keep_in_cpu": _stored(True),
        "sd_checkpoint_cache": _stored(0),
        "sd_vae_checkpoint_cache": _stored(0),
        "sd_vae_overrides_per_model_preferences": _stored(True),
        "auto_vae_precision": _stored(True),
        "auto_vae_precision_bfloat16": _stored(False),
        "upcast_attn": _stored(False),
        "cache_fp16_weight": _stored(False),
        "persistent_cond_cache": _stored(True),
        "batch_cond_uncond": _stored(True),
        "cross_attention_optimization": _stored("Automatic"),
        "disable_mmap_load_safetensors": _stored(False),
        "hires_fix_refiner_pass": _stored("second pass"),
        "face_restoration_model": _stored("CodeFormer"),
        "code_former_weight": _stored(0.5),
        "face_restoration_unload": _stored(False),
        "upscaler_for_img2img": _stored(None),
        "ESRGAN_tile": _stored(192),
        "ESRGAN_tile_overlap": _stored(8),
        "extra_networks_default_multiplier": _stored(1.0),
        "lora_preferred_name": _stored("Alias from file"),
        "lora_add_hashes_to_infotext": _stored(True),
        "samples_save": _stored(True),
        "samples_filename_pattern": _stored(""),
        "save_images_add_number": _stored(True),
        "save_images_replace_action": _stored("Replace"),
        "grid_save": _stored(True),
        "grid_format": _stored("png"),
        "grid_extended_filename": _stored(False),
        "grid_only_if_multiple": _stored(True),
        "grid_prevent_empty_spots": _stored(False),
        "n_rows": _stored(-1),
        "save_txt": _stored(False),
        "save_images_before_face_restoration": _stored(False),
        "save_images_before_highres_fix": _stored(False),
        "save_images_before_color_correction": _stored(False),
        "save_mask": _stored(False),
        "save_mask_composite": _stored(False),
        "export_for_4chan": _stored(True),
        "img_downscale_threshold": _stored(4.0),
        "target_side_length": _stored(4000.0),
        "img_max_size_mp": _stored(200.0),
        "use_original_name_batch": _stored(True),
        "use_upscaler_name_as_suffix": _stored(False),
        "save_selected_only": _stored(True),
        "save_init_img": _stored(False),
        "temp_dir": _stored(""),
        "clean_temp_dir_at_start": _stored(False),
        "save_incomplete_images": _stored(False),
        "outdir_samples": _stored(""),
        "outdir_txt2img_samples": _stored("outputs/txt2img-images"),
        "outdir_img2img_samples": _stored("outputs/img2img-images"),
        "outdir_extras_samples": _stored("outputs/extras-images"),
        "outdir_grids": _stored(""),
        "outdir_txt2img_grids": _stored("outputs/txt2img-grids"),
        "outdir_img2img_grids": _stored("outputs/img2img-grids"),
        "outdir_save": _stored("log/images"),
        "outdir_init_images": _stored("outputs/init-images"),
        "save_to_dirs": _stored(True),
        "grid_save_to_dirs": _stored(True),
        "use_save_to_dirs_for_ui": _stored(False),
        "directories_filename_pattern": _stored("[date]"),
        "directories_max_prompt_words": _stored(8),
        "send_seed": _stored(True),
        "send_size": _stored(True),
        "return_grid": _stored(True),
        "return_mask": _stored(False),
        "return_mask_composite": _stored(False),
        "do_not_show_images": _stored(False),
        "js_modal_lightbox": _stored(True),
        "js_modal_lightbox_initially_zoomed": _stored(True),
        "show_progressbar": _stored(True),
        "live_previews_enable": _honoured(True),
        "live_previews_image_format": _stored("png"),
        "show_progress_grid": _stored(True),
        "show_progress_every_n_steps": _honoured(10),
        "show_progress_type": _stored("Approx NN"),
        "live_preview_content": _stored("Prompt"),
        "live_preview_refresh_period": _stored(1000.0),
        "live_preview_fast_interrupt": _stored(False),
        "hide_samplers": _stored([]),
        "infotext_styles": _stored("Apply if any"),
        "samples_log_stdout": _stored(False),
        "multiple_tqdm": _stored(True),
        "enable_upscale_progressbar": _stored(True),
        "list_hidden_files": _stored(True),
        "hide_ldm_prints": _stored(True),
        "api_enable_requests": _stored(True),
        "api_forbid_local_requests": _stored(True),
        "api_useragent": _stored(""),
        "auto_launch_browser": _stored("Local"),
        "enable_console_prompts": _stored(False),
        "show_warnings": _stored(False),
        "memmon_poll_rate": _stored(8),
        "localization": _stored("None"),
        "quicksettings_list": _stored(["sd_model_checkpoint"]),
        "ui_reorder_list": _stored([]),
        "gradio_theme": _stored("Default"),
        "show_progress_in_title": _stored(True),
        "notification_audio": _stored(True),
        "notification_volume": _stored(100),
        "interrogate_keep_models_in_memory": _stored(False),
        "interrogate_return_ranks": _stored(False),
    }
)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _kind(value: object) -> str:
    """The JSON kind of a value: what a stored option must keep (a number stays a number)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, (list, tuple)) else "object"


def check_option(key: str, value: object, *, field: str) -> object:
    """``value`` for option ``key`` once checked (``field`` names it in errors: ``key``, ``override_settings.key``).

    The checkpoint's name is checked against the served models by the caller."""
    spec = OPTIONS.get(key)
    if spec is None:
        raise InvalidRequest(field, "unknown option; GET /sdapi/v1/options lists every option this server knows")
    if len(json.dumps(value, default=str)) > _MAX_VALUE_CHARS:
        raise InvalidRequest(field, f"option values must be at most {_MAX_VALUE_CHARS} characters of JSON")
    if key == CHECKPOINT:
        if not isinstance(value, str):
            raise InvalidRequest(field, f"must be a model title (see GET /sdapi/v1/sd-models), got {_show(value)}")
        return value
    if spec.effect is Effect.DEFAULT_ONLY:
        if value != spec.default and value not in spec.same_as_default:
            raise InvalidRequest(
                field,
                f"{_show(value)} cannot be honoured: {spec.why}; send its default {spec.default!r} or leave it out",
            )
        return value
    if spec.effect is Effect.HONOURED:
        return _check_honoured(key, value, field=field)
    if spec.default is not None and value is not None and _kind(value) != _kind(spec.default):
        raise InvalidRequest(field, f"must be a {_kind(spec.default)} like its default {spec.default!r}")
    return value


def _check_honoured(key: str, value: object, *, field: str) -> object:
    if key == "samples_format":
        if not isinstance(value, str) or value.lower() not in IMAGE_FORMATS:
            raise InvalidRequest(field, f"must be one of {', '.join(IMAGE_FORMATS)}, got {_show(value)}")
        return value.lower()
    if key == "jpeg_quality":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
            raise InvalidRequest(field, f"must be an integer between 1 and 100, got {_show(value)}")
        return value
    if key == "initial_noise_multiplier":
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
        if not 0.0 <= number <= 2.0:
            raise InvalidRequest(field, f"must be a number between 0 and 2, got {_show(value)}")
        return float(number)
    if key in ("eta_ddim", "eta_ancestral"):
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
        if not 0.0 <= number <= 1.0:
            raise InvalidRequest(field, f"must be a number between 0 and 1, got {_show(value)}")
        return float(number)
    if key == "CLIP_stop_at_last_layers":
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value != int(value)
            or not 1 <= value <= 12
        ):
            raise InvalidRequest(field, f"must be an integer between 1 and 12, got {_show(value)}")
        return int(value)
    if key == "emphasis":
        from imagegen.requests import EMPHASIS_MODES

        if value not in EMPHASIS_MODES:
            raise InvalidRequest(field, f"must be one of {', '.join(EMPHASIS_MODES)}, got {_show(value)}")
        return value
    if key == "show_progress_every_n_steps":
        # A1111's slider: -1 = a preview only once the batch is done (the result itself), 0 = none, else every n steps.
        if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= MAX_PREVIEW_EVERY:
            raise InvalidRequest(field, f"must be an integer between -1 and {MAX_PREVIEW_EVERY}, got {_show(value)}")
        return value
    if key == CHECKPOINT_HASH:
        return value  # read-only: the caller compares it with the current checkpoint's hash
    if not isinstance(value, bool):
        raise InvalidRequest(field, f"must be true or false, got {_show(value)}")
    return value


class A1111Options:
    """The ``/options`` values set through the API (the rest are :data:`OPTIONS`' defaults), persisted as JSON in
    ``path`` so that they survive a restart as A1111's ``config.json`` does. Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._values: dict[str, object] = {}
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = {}
        if isinstance(loaded, dict):
            # A key this version no longer knows, or a value it no longer accepts, is dropped rather than fatal.
            for key, value in loaded.items():
                try:
                    self._values[key] = check_option(key, value, field=key)
                except InvalidRequest:
                    continue

    def values(self) -> dict[str, object]:
        """The options set so far (not the defaults)."""
        with self._lock:
            return dict(self._values)

    def update(self, changes: Mapping[str, object]) -> None:
        """Store checked values (all or nothing: the caller checks every one first) and persist them."""
        with self._lock:
            self._values.update(changes)
            self._values.pop(CHECKPOINT_HASH, None)  # derived, never stored
            snapshot = dict(self._values)
        self._save(snapshot)

    def _save(self, values: Mapping[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(json.dumps(values, indent=1, default=str), encoding="utf-8")
        os.replace(partial, self.path)


def current_values(stored: Mapping[str, object]) -> dict[str, object]:
    """Every option's value: the stored ones over the defaults."""
    return {**{key: spec.default for key, spec in OPTIONS.items()}, **stored}


def effective_options(stored: Mapping[str, object], overrides: Mapping[str, object]) -> dict[str, object]:
    """The options one request runs with: its ``override_settings`` over the stored ones over the defaults."""
    return {**current_values(stored), **overrides}
