"""Pydantic models of the A1111 ``/sdapi/v1`` requests and responses (stable-diffusion-webui 1.10 field names).

Every field A1111's ``StableDiffusionTxt2ImgProcessingAPI`` / ``...Img2ImgProcessingAPI`` accepts is declared, with
A1111's default, so clients that send all of them (the ``webuiapi`` package does) are accepted. Unknown keys are
ignored, as A1111 ignores them. Which fields imagegen honours, which it ignores only at their default (any other
value is a 422 naming the field), and which have no effect in A1111 either, is decided in
:mod:`imagegen.server.dialects.a1111.translate`.

Deliberate default changes, all toward "the model's own setting": ``steps``, ``cfg_scale``, ``width``, ``height``,
``sampler_name`` and ``sampler_index`` default to ``None`` (A1111: 50, 7, 512, 512, None, "Euler"), which means the
model's defaults (its native size, its own scheduler) instead of SD 1.5's. A ``null`` value means "not sent".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from imagegen.server.dialects.examples import (
    EXAMPLE_IMAGE_BASE64,
    EXAMPLE_MASK_BASE64,
    image_schema,
)


class A1111GenerationRequest(BaseModel):
    """Fields shared by txt2img and img2img."""

    # A1111 (pydantic) ignores keys it does not know; old clients send e.g. "controlnet_units".
    model_config = ConfigDict(extra="ignore")

    prompt: str | None = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    sampler_index: str | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    force_task_id: str | None = None
    infotext: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_means_unset(cls, data: Any) -> Any:
        """Clients send ``null`` for "not set" even where A1111 declares a non-null default (``hr_prompt``,
        ``seed``, ...): treat it as absent, so the default applies and a pasted infotext may fill the field."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class A1111Txt2ImgRequest(A1111GenerationRequest):
    """``POST /sdapi/v1/txt2img``."""

    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_additional_modules: list[str] | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_cfg: float | None = None


class A1111Img2ImgRequest(A1111GenerationRequest):
    """``POST /sdapi/v1/img2img``."""

    init_images: list[str] | None = Field(
        None,
        description="the input image(s): base64 or data: URIs",
        examples=[[EXAMPLE_IMAGE_BASE64]],
        json_schema_extra=image_schema,
    )
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = Field(
        None,
        description="inpainting mask: white repaints, black keeps (base64)",
        examples=[EXAMPLE_MASK_BASE64],
        json_schema_extra=image_schema,
    )
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


class A1111ImageResponse(BaseModel):
    """txt2img / img2img answer: base64 PNGs (infotext embedded), the request echoed, ``info`` as a JSON string."""

    images: list[str] | None = None
    parameters: dict[str, Any]
    info: str


class A1111ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class A1111ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: A1111ProgressState
    current_image: str | None = None
    textinfo: str | None = None
    current_task: str | None = None


class A1111PngInfoRequest(BaseModel):
    image: str = Field(
        "",
        description="a PNG, JPEG or WebP image: base64 or a data: URI",
        examples=[EXAMPLE_IMAGE_BASE64],
        json_schema_extra=image_schema,
    )


class A1111PngInfoResponse(BaseModel):
    info: str
    items: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)


class A1111Model(BaseModel):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


# --------------------------------------------------------------------------------------------------------------------
# Extras (upscaling), A1111's ``ExtrasBaseRequest`` family with its field constraints.


class A1111ExtrasRequest(BaseModel):
    """Fields shared by ``extra-single-image`` and ``extra-batch-images`` (A1111's ``ExtrasBaseRequest``)."""

    model_config = ConfigDict(extra="ignore")

    resize_mode: Literal[0, 1] = Field(
        0, description="0: upscale by upscaling_resize; 1: upscale to upscaling_resize_w x upscaling_resize_h"
    )
    show_extras_results: bool = Field(True, description="accepted for compatibility; results are always returned")
    gfpgan_visibility: float = Field(
        0.0, ge=0, le=1, allow_inf_nan=False, description="GFPGAN face restoration; must be 0 (not available)"
    )
    codeformer_visibility: float = Field(
        0.0, ge=0, le=1, allow_inf_nan=False, description="CodeFormer face restoration; must be 0 (not available)"
    )
    codeformer_weight: float = Field(
        0.0, ge=0, le=1, allow_inf_nan=False, description="CodeFormer weight; no effect without CodeFormer"
    )
    upscaling_resize: float = Field(
        2.0, ge=1, le=8, allow_inf_nan=False, description="upscale factor, used when resize_mode is 0"
    )
    upscaling_resize_w: int = Field(512, ge=1, description="target width, used when resize_mode is 1")
    upscaling_resize_h: int = Field(512, ge=1, description="target height, used when resize_mode is 1")
    upscaling_crop: bool = Field(
        True,
        description="resize_mode 1: cover the target size and crop the overflow from the centre; false: keep the "
        "aspect ratio (the result covers the target size and may be larger on one side)",
    )
    upscaler_1: str = Field("None", description="an upscaler's name from /sdapi/v1/upscalers")
    upscaler_2: str = Field("None", description="a second upscaler blended over the first")
    extras_upscaler_2_visibility: float = Field(
        0.0, ge=0, le=1, allow_inf_nan=False, description="upscaler_2's share of the result (0 = off)"
    )
    upscale_first: bool = Field(False, description="accepted for compatibility (there is no face restoration)")

    @model_validator(mode="before")
    @classmethod
    def _null_means_unset(cls, data: Any) -> Any:
        """``null`` means "not sent", as for txt2img: the default applies."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class A1111ExtrasSingleImageRequest(A1111ExtrasRequest):
    """``POST /sdapi/v1/extra-single-image``."""

    image: str = Field(
        "",
        description="the image: base64 or a data: URI (PNG, JPEG, WebP)",
        examples=[EXAMPLE_IMAGE_BASE64],
        json_schema_extra=image_schema,
    )


class A1111FileData(BaseModel):
    data: str = Field(
        description="the image: base64 or a data: URI (PNG, JPEG, WebP)",
        examples=[EXAMPLE_IMAGE_BASE64],
        json_schema_extra=image_schema,
    )
    name: str = Field(description="file name (accepted for compatibility; unused)", examples=["disc.png"])


class A1111ExtrasBatchImagesRequest(A1111ExtrasRequest):
    """``POST /sdapi/v1/extra-batch-images``: one upscale job per image, run in order."""

    imageList: list[A1111FileData] = Field(description="the images to upscale")  # A1111's name


class A1111ExtrasSingleImageResponse(BaseModel):
    html_info: str = Field(description="the result's infotext as HTML (<p>...</p>)")
    image: str = Field(description="the upscaled image: base64 PNG with its infotext")


class A1111ExtrasBatchImagesResponse(BaseModel):
    html_info: str = Field(description="the last result's infotext as HTML (<p>...</p>)")
    images: list[str] = Field(description="the upscaled images in the order sent: base64 PNGs with their infotext")


class A1111Upscaler(BaseModel):
    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class A1111RealesrganModel(BaseModel):
    name: str
    path: str | None = None
    scale: int | None = None


class A1111LatentUpscaleMode(BaseModel):
    name: str


class A1111FaceRestorer(BaseModel):
    name: str
    cmd_dir: str | None = None
