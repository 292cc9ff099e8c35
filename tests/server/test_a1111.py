"""The A1111 dialect: request conversion (pure), then the /sdapi/v1 routes on a running app with the fake engine."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import shutil
import threading
from pathlib import Path

import pytest
from dialect_app import (
    API_KEY,
    BASIC,
    MAX_BODY_BYTES,
    dialect_client,
    fill_queue,
    poll_progress,
    record_submit_threads,
)
from PIL import Image

from imagegen.errors import InvalidRequest
from imagegen.loading import Family, ModelInfo
from imagegen.metadata import Infotext, format_infotext, read_infotext
from imagegen.requests import GenerationRequest
from imagegen.server.dialects.a1111.routes import render_a1111_error
from imagegen.server.dialects.a1111.schemas import A1111Img2ImgRequest, A1111Txt2ImgRequest
from imagegen.server.dialects.a1111.translate import (
    apply_infotext,
    check_supported,
    infotext_parameters,
    png_info,
    resolve_sampler,
    translate,
)
from imagegen.server.dialects.core import job_exception, renamed_fields
from imagegen.server.errors import ErrorInfo, error_info
from imagegen.server.jobs.model import Job, JobStatus
from support.malformed_png import declaring, ztxt_bomb
from support.model_info import model_info
from support.server_harness import wait_job

# What the `webuiapi` package sends for txt2img with all its defaults (a very common A1111 client).
WEBUIAPI_TXT2IMG = {
    "enable_hr": False,
    "denoising_strength": 0.7,
    "firstphase_width": 0,
    "firstphase_height": 0,
    "hr_scale": 2,
    "hr_upscaler": "Latent",
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "hr_checkpoint_name": None,
    "hr_sampler_name": None,
    "hr_prompt": "",
    "hr_negative_prompt": "",
    "prompt": "a red circle",
    "styles": [],
    "seed": 1234,
    "subseed": -1,
    "subseed_strength": 0.0,
    "seed_resize_from_h": 0,
    "seed_resize_from_w": 0,
    "sampler_name": "Euler a",
    "scheduler": None,
    "batch_size": 1,
    "n_iter": 1,
    "steps": 4,
    "cfg_scale": 7.0,
    "width": 64,
    "height": 64,
    "restore_faces": False,
    "tiling": False,
    "do_not_save_samples": False,
    "do_not_save_grid": False,
    "negative_prompt": "",
    "eta": 1.0,
    "s_churn": 0,
    "s_tmax": 0,
    "s_tmin": 0,
    "s_noise": 1,
    "override_settings": {},
    "override_settings_restore_afterwards": True,
    "script_args": [],
    "script_name": None,
    "send_images": True,
    "save_images": False,
    "alwayson_scripts": {},
}


def _png(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------------------------------------------------
# Pure conversion.


class FakeCatalog:
    """The served models as translate() sees them: "m" (the default, SD 1), "ddim-model" and the refiner "r"."""

    def __init__(self) -> None:
        self.served = {
            "m": model_info("m"),
            "ddim-model": model_info("ddim-model", scheduler="DDIMScheduler"),
            "r": model_info("r", Family.SDXL_REFINER),
        }

    def default(self) -> ModelInfo:
        return self.served["m"]

    def find(self, text: str, *, field: str) -> ModelInfo:
        if text not in self.served:
            raise InvalidRequest(field, f"unknown model {text!r}")
        return self.served[text]


def to_generation_request(body, *, image: Image.Image | None = None, options: dict | None = None) -> GenerationRequest:
    """What the dialect core would build from ``body`` (errors named as the core names them)."""
    img2img = isinstance(body, A1111Img2ImgRequest)
    translation = translate(body, catalog=FakeCatalog(), stored_options=options or {}, img2img=img2img)
    submission = translation.submission
    with renamed_fields(submission.names, prefix=submission.prefixes):
        return GenerationRequest(**submission.fields, **({"init_image": image} if image is not None else {}))


def test_batch_size_times_n_iter_images_and_field_mapping() -> None:
    body = A1111Txt2ImgRequest(
        prompt="p", negative_prompt="n", seed=7, steps=12, cfg_scale=5.5, width=64, height=128, batch_size=2, n_iter=3
    )
    request = to_generation_request(body)
    assert request.num_images == 6
    assert (request.seed, request.num_inference_steps, request.guidance_scale) == (7, 12, 5.5)
    assert (request.width, request.height, request.model, request.prompt, request.negative_prompt) == (
        64,
        128,
        "m",
        "p",
        "n",
    )
    assert request.init_image is None


def test_unset_fields_mean_model_defaults_not_sd15s() -> None:
    request = to_generation_request(A1111Txt2ImgRequest(prompt="x"))
    assert (request.width, request.height, request.num_inference_steps, request.guidance_scale) == (
        None,
        None,
        None,
        None,
    )
    assert request.sampler is None
    assert request.schedule_type is None


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        ("DPM++ 2M", None, ("DPM++ 2M", "Karras")),  # A1111 >= 1.9: Automatic -> Karras for DPM++ 2M
        ("DPM++ 2M", "Automatic", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M SDE", None, ("DPM++ 2M SDE", "Exponential")),
        ("DPM++ 2M", "Uniform", ("DPM++ 2M", "Uniform")),  # explicit schedule wins
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),  # legacy combined name
        ("k_dpmpp_3m_sde_exp", None, ("DPM++ 3M SDE", "Exponential")),
        ("k_dpmpp_2m_ka", "Karras", ("DPM++ 2M", "Karras")),
        ("Euler a", None, ("Euler a", "Automatic")),
        (None, "Karras", (None, "Karras")),
        (None, None, (None, None)),
    ],
)
def test_sampler_names_and_a1111_automatic_schedule(
    sampler: str | None, scheduler: str | None, expected: tuple[str | None, str | None]
) -> None:
    assert resolve_sampler(sampler, scheduler) == expected


def test_sampler_index_is_used_when_sampler_name_is_empty() -> None:
    request = to_generation_request(A1111Txt2ImgRequest(sampler_name="", sampler_index="DPM2"))
    assert (request.sampler, request.schedule_type) == ("DPM2", "Karras")


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"sampler_name": "Warp drive"}, "sampler_name"),
        ({"sampler_name": "Euler a", "scheduler": "Karras"}, "scheduler"),
        ({"steps": 0}, "steps"),
        ({"cfg_scale": float("nan")}, "cfg_scale"),
        ({"width": 100}, "width"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_iter": 10_000, "batch_size": 10_000}, "batch_size"),
        ({"seed": -5}, "seed"),
    ],
)
def test_invalid_values_name_the_a1111_field(fields: dict, name: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_generation_request(A1111Txt2ImgRequest(**fields))
    assert info.value.field == name


def test_img2img_strength_default_and_refiner_switch() -> None:
    image = Image.new("RGB", (64, 64))
    body = A1111Img2ImgRequest(init_images=["x"], refiner_checkpoint="r", refiner_switch_at=0.7)
    request = to_generation_request(body, image=image)
    assert request.strength == 0.75
    assert request.init_image is image
    assert (request.refiner, request.denoising_end) == ("r", 0.7)
    with pytest.raises(InvalidRequest) as info:
        to_generation_request(A1111Img2ImgRequest(init_images=["x"], denoising_strength=0), image=image)
    assert info.value.field == "denoising_strength"
    with pytest.raises(InvalidRequest) as info:
        to_generation_request(A1111Img2ImgRequest())
    assert info.value.field == "init_images"


def test_img2img_fix_steps_runs_the_requested_steps_on_the_image() -> None:
    image = Image.new("RGB", (64, 64))
    body = A1111Img2ImgRequest(init_images=["x"], steps=10, denoising_strength=0.5)
    assert to_generation_request(body, image=image).num_inference_steps == 10
    fixed = to_generation_request(body, image=image, options={"img2img_fix_steps": True})
    assert fixed.num_inference_steps == 20  # diffusers then runs 20 * 0.5 = 10 steps on the image
    unset = A1111Img2ImgRequest(
        init_images=["x"], denoising_strength=0.25, override_settings={"img2img_fix_steps": True}
    )
    assert to_generation_request(unset, image=image).num_inference_steps == 80  # the model's 20 steps / 0.25
    with pytest.raises(InvalidRequest) as info:
        to_generation_request(
            A1111Img2ImgRequest(init_images=["x"], steps=800, denoising_strength=0.5),
            options={"img2img_fix_steps": True},
        )
    assert info.value.field == "steps"
    assert "img2img_fix_steps" in info.value.message


def test_null_means_not_sent() -> None:
    body = A1111Txt2ImgRequest(seed=None, hr_prompt=None, batch_size=None, send_images=None, steps=None)
    assert (body.seed, body.hr_prompt, body.batch_size, body.send_images) == (-1, "", 1, True)
    assert "steps" not in body.model_fields_set  # so a pasted infotext may fill it
    filled, _ = apply_infotext(A1111Txt2ImgRequest(steps=None, infotext="p\nSteps: 9, Seed: 1, CFG scale: 5"))
    assert filled.steps == 9


def test_error_renderer_shape_and_headers() -> None:
    response = render_a1111_error(
        None, ErrorInfo(status=429, code="queue_full", message="full", headers={"Retry-After": "3"})
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert json.loads(response.body) == {"error": "HTTPException", "detail": "full", "body": "", "errors": "full"}
    invalid = render_a1111_error(
        None, ErrorInfo(status=400, code="invalid_request", message="width: bad", field="width")
    )
    assert invalid.status_code == 422  # A1111 / FastAPI answer validation errors with 422
    assert render_a1111_error(None, ErrorInfo(status=503, code="unavailable", message="m")).status_code == 503


@pytest.mark.parametrize(
    ("status", "code", "message", "http", "field"),
    [
        (JobStatus.CANCELLED, None, None, 409, None),
        (JobStatus.FAILED, "invalid_request", "width: must be at most 64, got 128", 400, "width"),
        (JobStatus.FAILED, "out_of_memory", "CUDA out of memory", 503, None),
        (JobStatus.FAILED, "worker_lost", "the worker died twice", 500, None),
        (JobStatus.FAILED, None, None, 500, None),
    ],
)
def test_job_failures_map_to_the_status_of_their_error(status, code, message, http, field) -> None:
    job = Job(id="j", status=status, dialect="a1111", model=None, request={}, created_at=0.0)
    job = dataclasses.replace(job, error_code=code, error_message=message)
    info = error_info(job_exception(job))
    assert (info.status, info.field) == (http, field)
    if code is not None:
        assert info.code == code


def test_webuiapi_defaults_are_accepted() -> None:
    body = A1111Txt2ImgRequest(**WEBUIAPI_TXT2IMG)
    check_supported(body)
    request = to_generation_request(body)
    assert (request.sampler, request.seed, request.eta) == ("Euler a", 1234, 1.0)


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"enable_hr": True, "hr_checkpoint_name": "other.safetensors"}, "hr_checkpoint_name"),
        ({"restore_faces": True}, "restore_faces"),
        ({"subseed_strength": 0.3}, "subseed_strength"),
        ({"seed_resize_from_w": 512}, "seed_resize_from_w"),
        ({"alwayson_scripts": {"ADetailer": {"args": []}}}, "alwayson_scripts"),
        ({"script_name": "x/y/z plot"}, "script_name"),
        ({"s_churn": 0.5}, "s_churn"),
        ({"s_noise": 1.003}, "s_noise"),
    ],
)
def test_unsupported_non_default_values_are_refused_by_name(fields: dict, name: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_supported(A1111Txt2ImgRequest(**fields))
    assert info.value.field == name
    assert "not supported" in info.value.message


def test_img2img_only_fields() -> None:
    check_supported(A1111Img2ImgRequest(mask="abc", mask_blur=8, inpainting_fill=1, image_cfg_scale=1.5))
    for fields, name in (
        ({"mask": "abc", "mask_round": False}, "mask_round"),
        ({"latent_mask": "abc"}, "latent_mask"),
        ({"resize_mode": 1}, "resize_mode"),
        ({"init_images": ["a", "b"]}, "init_images"),
    ):
        with pytest.raises(InvalidRequest) as info:
            check_supported(A1111Img2ImgRequest(**fields))
        assert info.value.field == name
    with pytest.raises(InvalidRequest, match="soft inpainting"):
        check_supported(A1111Img2ImgRequest(mask="abc", mask_round=False))


@pytest.mark.parametrize(
    ("overrides", "name", "fragment"),
    [
        ({"CLIP_stop_at_last_layers": 13}, "override_settings.CLIP_stop_at_last_layers", "between 1 and 12"),
        ({"emphasis": "Loud"}, "override_settings.emphasis", "Original, No norm, Ignore, None"),
        ({"eta_noise_seed_delta": 31337}, "override_settings.eta_noise_seed_delta", "seed"),
        ({"sd_vae": "vae-ft-mse.safetensors"}, "override_settings.sd_vae", "own VAE"),
        ({"no_such_option": 1}, "override_settings.no_such_option", "unknown option"),
        ({"samples_format": "gif"}, "override_settings.samples_format", "png, jpg, jpeg, webp"),
        ({"eta_ddim": 2}, "override_settings.eta_ddim", "between 0 and 1"),
        ({"send_seed": "yes"}, "override_settings.send_seed", "boolean"),
    ],
)
def test_override_settings_that_cannot_be_honoured_are_refused_by_name(overrides, name, fragment) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_generation_request(A1111Txt2ImgRequest(override_settings=overrides))
    assert info.value.field == name
    assert fragment in info.value.message


def test_override_settings_at_neutral_values_or_without_image_effect_pass() -> None:
    body = A1111Txt2ImgRequest(
        override_settings={
            "sd_vae": "Automatic",
            "CLIP_stop_at_last_layers": 1,
            "eta_noise_seed_delta": 0,
            "send_seed": False,
            "outdir_samples": "/somewhere",
            "sd_model_checkpoint": "ddim-model",
        }
    )
    assert to_generation_request(body).model == "ddim-model"


def test_eta_is_a1111s_for_every_sampler_with_noise_and_ignored_without() -> None:
    assert to_generation_request(A1111Txt2ImgRequest(sampler_name="Euler a", eta=1.0)).eta == 1.0
    # The A1111 API tests' payload: Euler a with eta 0, i.e. without ancestral noise.
    assert to_generation_request(A1111Txt2ImgRequest(sampler_name="Euler a", eta=0)).eta == 0.0
    assert to_generation_request(A1111Txt2ImgRequest(sampler_name="Euler", eta=0.4)).eta is None  # A1111 ignores it
    assert to_generation_request(A1111Txt2ImgRequest(sampler_name="UniPC", eta=0)).eta is None
    # DDIM takes any eta in [0, 1]: webuiapi's default 1.0 (A1111 applies it to DDIM too) and fractions alike.
    assert to_generation_request(A1111Txt2ImgRequest(**{**WEBUIAPI_TXT2IMG, "sampler_name": "DDIM"})).eta == 1.0
    assert to_generation_request(A1111Txt2ImgRequest(sampler_name="DDIM", eta=0.3)).eta == 0.3
    # Unset: the option A1111 reads for the sampler (eta_ddim 0, eta_ancestral 1 by default).
    assert to_generation_request(A1111Txt2ImgRequest(sampler_name="DDIM")).eta == 0.0
    assert to_generation_request(A1111Txt2ImgRequest(sampler_name="Euler a")).eta == 1.0
    assert to_generation_request(A1111Txt2ImgRequest(sampler_name="Euler a"), options={"eta_ancestral": 0.5}).eta == 0.5
    # No sampler named: the model's own (the default model's Euler has no eta; ddim-model's DDIM has).
    assert to_generation_request(A1111Txt2ImgRequest(eta=0.7)).eta is None
    ddim = A1111Txt2ImgRequest(eta=0.7, override_settings={"sd_model_checkpoint": "ddim-model"})
    assert to_generation_request(ddim).eta == 0.7
    for sampler, eta in (("DPM++ SDE", 0.5), ("DPM2 a", 0.5), ("DDIM", 1.5), ("DDIM", -0.1)):
        with pytest.raises(InvalidRequest) as info:
            to_generation_request(A1111Txt2ImgRequest(sampler_name=sampler, eta=eta))
        assert info.value.field == "eta"
    # An option's eta that the sampler cannot take names the option.
    with pytest.raises(InvalidRequest) as info:
        to_generation_request(A1111Txt2ImgRequest(sampler_name="DPM++ SDE"), options={"eta_ancestral": 0.5})
    assert info.value.field == "eta_ancestral"


@pytest.mark.parametrize("prompt", ["a cat <lora:detail:0.8>", "<lyco:style:1>, a (dog:1.2)", "[a|b] BREAK c"])
def test_prompt_language_and_lora_tags_reach_the_engine_unchanged(prompt: str) -> None:
    # The engine parses them (and keeps the tags in the infotext, as A1111 does).
    assert to_generation_request(A1111Txt2ImgRequest(prompt=prompt)).prompt == prompt


def test_extra_network_tags_are_removed_as_a1111_does() -> None:
    # disable_extra_networks: A1111 still removes the tags from the prompt, it only applies none of them.
    disabled = A1111Txt2ImgRequest(prompt="a cat <lora:detail:0.8>, <hypernet:x:1>", disable_extra_networks=True)
    assert to_generation_request(disabled).prompt == "a cat , "
    # Not a tag: no colon, or a space before the colon.
    plain = A1111Txt2ImgRequest(prompt="<b> <a b:c> (cat:1.2)", disable_extra_networks=True)
    assert to_generation_request(plain).prompt == "<b> <a b:c> (cat:1.2)"


def test_infotext_fills_only_unset_fields() -> None:
    infotext = format_infotext(
        Infotext(
            prompt="from infotext",
            negative_prompt="blurry",
            steps=9,
            sampler="DPM++ 2M",
            schedule_type="Exponential",
            cfg_scale=4.5,
            seed=99,
            width=96,
            height=64,
            model="fake-sdxl",
            model_hash="abcdef0123",
            denoising_strength=0.4,
        )
    )
    body, models = apply_infotext(A1111Img2ImgRequest(infotext=infotext, steps=3, prompt="mine"))
    assert (body.prompt, body.steps) == ("mine", 3)  # sent: kept
    assert (body.negative_prompt, body.seed, body.cfg_scale, body.width, body.height) == ("blurry", 99, 4.5, 96, 64)
    assert (body.sampler_name, body.scheduler, body.denoising_strength) == ("DPM++ 2M", "Exponential", 0.4)
    assert (models.model, models.model_hash) == ("fake-sdxl", "abcdef0123")
    # txt2img: "Denoising strength" is a hires-fix setting there, not applied.
    txt, _ = apply_infotext(A1111Txt2ImgRequest(infotext=infotext))
    assert txt.denoising_strength is None


def test_infotext_eta_ddim_fills_eta_for_ddim_only() -> None:
    infotext = format_infotext(
        Infotext(
            prompt="p", steps=5, sampler="DDIM", cfg_scale=7.0, seed=1, width=64, height=64, extra={"Eta DDIM": "0.4"}
        )
    )
    body, _ = apply_infotext(A1111Txt2ImgRequest(infotext=infotext))
    assert (body.sampler_name, body.eta) == ("DDIM", 0.4)
    assert to_generation_request(body).eta == 0.4
    # A sent eta wins; another sampler takes no DDIM eta (A1111 keeps it in its eta_ddim option).
    assert apply_infotext(A1111Txt2ImgRequest(infotext=infotext, eta=0.1))[0].eta == 0.1
    other, _ = apply_infotext(A1111Txt2ImgRequest(infotext=infotext, sampler_name="Euler a"))
    assert other.eta is None
    assert to_generation_request(other).eta == 1.0  # Euler a's own default, not DDIM's 0.4


def test_png_info_and_parameters() -> None:
    buffer = io.BytesIO()
    from imagegen.metadata import write_image

    text = format_infotext(Infotext(prompt="cat", steps=20, sampler="Euler", cfg_scale=7, seed=5, width=64, height=32))
    write_image(Image.new("RGB", (64, 32)), text, buffer)
    answer = png_info(_b64(buffer.getvalue()), max_bytes=10**6)
    assert answer["info"] == text
    assert answer["parameters"]["Prompt"] == "cat"
    assert (answer["parameters"]["Steps"], answer["parameters"]["Size-1"], answer["parameters"]["Size-2"]) == (
        20,
        64,
        32,
    )
    assert png_info("", max_bytes=10**6) == {"info": "", "items": {}, "parameters": {}}
    assert infotext_parameters("just a prompt") == {"Prompt": "just a prompt", "Negative prompt": ""}


@pytest.mark.parametrize(
    "data",
    [
        "not base64!!",
        _b64(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
        _b64(b"x" * 2000),
    ],
)
def test_png_info_refuses_non_images(data: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        png_info(data, max_bytes=1000)
    assert info.value.field == "image"


def test_png_info_refuses_a_bomb_without_decoding() -> None:
    with pytest.raises(InvalidRequest, match="too many pixels"):
        png_info(_b64(declaring(50_000, 50_000)), max_bytes=10**6)
    # A large but plausible declaration is read for its text chunks only (its pixels are never decoded).
    assert png_info(_b64(declaring(8000, 8000)), max_bytes=10**6)["info"] == ""


# --------------------------------------------------------------------------------------------------------------------
# Routes on a running app (real JobService + worker process, fake engine).

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{BASIC[0]}:{BASIC[1]}".encode()).decode()}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    with dialect_client(tmp_path_factory.mktemp("a1111")) as test_client:
        test_client.headers.update(AUTH)
        yield test_client


def _assert_a1111_error(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "body", "errors"}
    if field is not None:
        assert body["detail"].startswith(f"{field}:"), body
    return body


def test_txt2img_happy_path(client) -> None:
    payload = {**WEBUIAPI_TXT2IMG, "batch_size": 2, "n_iter": 2, "seed": 1000, "sampler_name": "DPM++ 2M"}
    response = client.post("/sdapi/v1/txt2img", json=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["images"]) == 4
    info = json.loads(body["info"])
    assert info["all_seeds"] == [1000, 1001, 1002, 1003]
    assert info["seed"] == 1000
    assert len(info["infotexts"]) == 4
    assert (info["width"], info["height"], info["steps"]) == (64, 64, 4)
    assert info["sampler_name"] == "DPM++ 2M"
    assert info["sd_model_name"] == "fake-sd15"
    assert body["parameters"]["prompt"] == "a red circle"
    assert body["parameters"]["batch_size"] == 2
    for index, encoded in enumerate(body["images"]):
        raw = base64.b64decode(encoded, validate=True)  # plain base64, no data: prefix
        with Image.open(io.BytesIO(raw)) as image:
            assert image.format == "PNG"
            assert image.size == (64, 64)
            assert read_infotext(image) == info["infotexts"][index]
            assert f"Seed: {1000 + index}" in info["infotexts"][index]


def test_webuiapi_ddim_with_its_default_eta_runs_with_that_eta(client) -> None:
    # webuiapi always sends eta=1.0; A1111 applies it to DDIM, and so does imagegen (it used to be a 422).
    response = client.post("/sdapi/v1/txt2img", json={**WEBUIAPI_TXT2IMG, "sampler_name": "DDIM"})
    assert response.status_code == 200, response.text
    job_id = json.loads(response.json()["info"])["job_id"]
    job = client.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert (job["request"]["sampler"], job["request"]["eta"]) == ("DDIM", 1.0)


#: The body of stable-diffusion-webui's own API tests (test/test_txt2img.py): every field explicit, at its no-op value.
A1111_TEST_TXT2IMG = {
    "batch_size": 1,
    "cfg_scale": 7,
    "denoising_strength": 0,
    "enable_hr": False,
    "eta": 0,
    "firstphase_height": 0,
    "firstphase_width": 0,
    "height": 64,
    "n_iter": 1,
    "negative_prompt": "",
    "prompt": "example prompt",
    "restore_faces": False,
    "s_churn": 0,
    "s_noise": 1,
    "s_tmax": 0,
    "s_tmin": 0,
    "sampler_index": "Euler a",
    "seed": -1,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "steps": 3,
    "styles": [],
    "subseed": -1,
    "subseed_strength": 0,
    "tiling": False,
    "width": 64,
}


@pytest.mark.parametrize("sampler", ["Euler a", "Euler", "DPM++ 2M", "DPM++ 2M SDE", "PLMS", "DDIM", "UniPC", "LCM"])
def test_the_webuis_own_api_test_payloads_are_accepted(client, sampler: str) -> None:
    response = client.post("/sdapi/v1/txt2img", json={**A1111_TEST_TXT2IMG, "sampler_index": sampler})
    assert response.status_code == 200, response.text
    job_id = json.loads(response.json()["info"])["job_id"]
    job = client.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    # eta 0 is honoured where the sampler has noise (no ancestral noise; DDIM's default), dropped where it has none.
    expected_eta = 0.0 if sampler in ("Euler a", "DPM++ 2M SDE", "DDIM") else None
    assert (job["request"]["sampler"], job["request"]["eta"]) == (sampler, expected_eta)
    img2img = {
        **A1111_TEST_TXT2IMG,
        "sampler_index": sampler,
        "denoising_strength": 0.75,
        "include_init_images": False,
        "init_images": [_b64(_png((64, 64)))],
        "inpaint_full_res": False,
        "inpaint_full_res_padding": 0,
        "inpainting_fill": 0,
        "inpainting_mask_invert": False,
        "mask": None,
        "mask_blur": 4,
        "override_settings": {},
        "resize_mode": 0,
    }
    response = client.post("/sdapi/v1/img2img", json=img2img)
    assert response.status_code == 200, response.text


def test_options_list_known_keys_refuse_unknown_ones_and_write_all_or_nothing(client) -> None:
    options = client.get("/sdapi/v1/options").json()
    # Keys A1111 clients read before writing, at A1111's defaults.
    assert (options["send_seed"], options["jpeg_quality"], options["img2img_fix_steps"]) == (True, 80, False)
    assert (options["CLIP_stop_at_last_layers"], options["eta_noise_seed_delta"]) == (1, 0)
    # The webui's own test_options_write: flip send_seed, read it back.
    assert client.post("/sdapi/v1/options", json={"send_seed": False}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["send_seed"] is False
    try:
        _assert_a1111_error(client.post("/sdapi/v1/options", json={"send_seed": True, "foo_bar": 3}), 422, "foo_bar")
        assert client.get("/sdapi/v1/options").json()["send_seed"] is False  # nothing of a refused write is kept
        _assert_a1111_error(
            client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 0}), 422, "CLIP_stop_at_last_layers"
        )
        _assert_a1111_error(client.post("/sdapi/v1/options", json={"jpeg_quality": 0}), 422, "jpeg_quality")
        _assert_a1111_error(client.post("/sdapi/v1/options", json={"sd_checkpoint_hash": "f00"}), 422)
        # Writing back everything that was read is accepted (some clients do exactly that).
        everything = client.get("/sdapi/v1/options").json()
        assert client.post("/sdapi/v1/options", json=everything).status_code == 200
        assert "foo_bar" not in client.get("/sdapi/v1/options").json()
    finally:
        client.post("/sdapi/v1/options", json={"send_seed": True})


def test_response_image_options_are_honoured(client) -> None:
    try:
        assert client.post("/sdapi/v1/options", json={"samples_format": "jpg", "jpeg_quality": 90}).status_code == 200
        body = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 5}).json()
        with Image.open(io.BytesIO(base64.b64decode(body["images"][0]))) as image:
            assert image.format == "JPEG"
            assert read_infotext(image) == json.loads(body["info"])["infotexts"][0]
        # One request's override, without keeping it.
        webp = {"prompt": "x", "override_settings": {"samples_format": "webp"}}
        with Image.open(
            io.BytesIO(base64.b64decode(client.post("/sdapi/v1/txt2img", json=webp).json()["images"][0]))
        ) as image:
            assert image.format == "WEBP"
        assert (
            client.post("/sdapi/v1/options", json={"samples_format": "png", "enable_pnginfo": False}).status_code == 200
        )
        body = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 5}).json()
        with Image.open(io.BytesIO(base64.b64decode(body["images"][0]))) as image:
            assert image.format == "PNG"
            assert read_infotext(image) is None
    finally:
        client.post("/sdapi/v1/options", json={"samples_format": "png", "jpeg_quality": 80, "enable_pnginfo": True})


def test_options_survive_a_restart(tmp_path: Path) -> None:
    with dialect_client(tmp_path) as first:
        first.headers.update(AUTH)
        assert first.post("/sdapi/v1/options", json={"send_size": False, "eta_ancestral": 0.5}).status_code == 200
    shutil.rmtree(tmp_path / "models")  # dialect_client writes the models again; the data directory stays
    with dialect_client(tmp_path) as second:
        second.headers.update(AUTH)
        options = second.get("/sdapi/v1/options").json()
        assert (options["send_size"], options["eta_ancestral"]) == (False, 0.5)


def test_txt2img_send_images_false(client) -> None:
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "send_images": False, "seed": 3})
    assert response.status_code == 200
    assert response.json()["images"] == []
    assert json.loads(response.json()["info"])["all_seeds"] == [3]


def test_img2img_happy_path_keeps_input_size(client) -> None:
    payload = {"prompt": "x", "init_images": ["data:image/png;base64," + _b64(_png((96, 48)))], "seed": 5}
    response = client.post("/sdapi/v1/img2img", json=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["parameters"]["init_images"] is None  # not echoed without include_init_images
    with Image.open(io.BytesIO(base64.b64decode(body["images"][0]))) as image:
        assert image.size == (96, 48)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"width": 7, "height": 64}, "width"),
        ({"width": 100000, "height": 64}, "width"),
        ({"steps": 1_000_000}, "steps"),
        ({"steps": -1}, "steps"),
        ({"batch_size": 10_000}, "batch_size"),
        ({"enable_hr": True, "hr_scale": 100}, "hr_scale"),
        ({"enable_hr": True, "hr_upscaler": "Nope"}, "hr_upscaler"),
        ({"enable_hr": True, "hr_sampler_name": "Nope"}, "hr_sampler_name"),
        ({"sampler_name": "Nope"}, "sampler_name"),
        ({"override_settings": {"sd_model_checkpoint": "../../etc/passwd"}}, "override_settings.sd_model_checkpoint"),
        ({"refiner_checkpoint": "/abs/path.safetensors"}, "refiner_checkpoint"),
        ({"steps": "many"}, "steps"),
        ({"prompt": "a cat <lora:add_detail:0.8>"}, "prompt"),  # no such LoRA: refused before queueing
        ({"prompt": "a cat <hypernet:anime:0.5>"}, "prompt"),
        ({"styles": ["no-such-style"]}, "styles[0]"),
    ],
)
def test_txt2img_client_errors_in_a1111_shape(client, payload: dict, field: str) -> None:
    _assert_a1111_error(client.post("/sdapi/v1/txt2img", json={"prompt": "x", **payload}), 422, field)


def test_an_unknown_checkpoint_is_refused_with_the_served_models(client) -> None:
    payload = {"prompt": "x", "override_settings": {"sd_model_checkpoint": "../../etc/passwd"}}
    body = _assert_a1111_error(client.post("/sdapi/v1/txt2img", json=payload), 422)
    detail = body["detail"]
    assert detail.startswith("override_settings.sd_model_checkpoint: unknown model '../../etc/passwd'"), detail
    assert "this server serves: fake-sd15" in detail  # says what to send instead


def test_unicode_prompt_round_trips_and_nul_is_refused(client) -> None:
    prompt = "猫 🐈 مرحبا (((x)))"
    body = client.post("/sdapi/v1/txt2img", json={"prompt": prompt, "negative_prompt": "ぼやけ"}).json()
    info = client.post("/sdapi/v1/png-info", json={"image": body["images"][0]}).json()
    assert (info["parameters"]["Prompt"], info["parameters"]["Negative prompt"]) == (prompt, "ぼやけ")
    _assert_a1111_error(client.post("/sdapi/v1/txt2img", json={"prompt": "a\u0000b"}), 422, "prompt")


def test_nan_cfg_scale_is_refused(client) -> None:
    # JSON has no NaN, but Python clients (json.dumps) send the literal and Starlette parses it.
    content = b'{"prompt": "x", "cfg_scale": NaN}'
    response = client.post("/sdapi/v1/txt2img", content=content, headers={"Content-Type": "application/json"})
    _assert_a1111_error(response, 422, "cfg_scale")


def test_body_too_large_is_an_a1111_413(client) -> None:
    _assert_a1111_error(client.post("/sdapi/v1/img2img", json={"init_images": ["A" * (MAX_BODY_BYTES + 1)]}), 413)


def test_invalid_json_is_an_a1111_422(client) -> None:
    response = client.post("/sdapi/v1/txt2img", content=b"{not json", headers={"Content-Type": "application/json"})
    _assert_a1111_error(response, 422, "body")


@pytest.mark.parametrize("path", ["/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/options", "/sdapi/v1/png-info"])
@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"prompt": "x"}', {}),  # requests.post(url, data=json.dumps(payload)): no Content-Type
        (b'{"prompt": "x"}', {"Content-Type": "text/plain"}),
        (b'[{"prompt": "x"}]', {"Content-Type": "application/json"}),
    ],
    ids=["no-content-type", "text-plain", "array"],
)
def test_a_body_that_is_not_a_json_object_says_what_to_send(client, path: str, content: bytes, headers: dict) -> None:
    body = _assert_a1111_error(client.post(path, content=content, headers=headers), 422, "body")
    assert "JSON object" in body["detail"]
    assert "Content-Type: application/json" in body["detail"]


@pytest.mark.parametrize(
    "image",
    [
        "%%%not-base64%%%",
        _b64(_png()[:40]),  # truncated
        _b64(b"%PDF-1.7\n1 0 obj <<>> endobj\n"),
        _b64(declaring(50_000, 50_000)),
        _b64(ztxt_bomb()),
    ],
)
def test_img2img_bad_images_in_a1111_shape(client, image: str) -> None:
    response = client.post("/sdapi/v1/img2img", json={"prompt": "x", "init_images": [image]})
    _assert_a1111_error(response, 422, "init_images")


def test_img2img_cheap_checks_come_before_decoding(client) -> None:
    # The field errors win over the (bad) image: no image work is done for a request that cannot run.
    for payload, field in (({"sampler_name": "Nope"}, "sampler_name"), ({"steps": 10_000}, "steps")):
        response = client.post("/sdapi/v1/img2img", json={"init_images": [_b64(declaring(50_000, 50_000))], **payload})
        _assert_a1111_error(response, 422, field)


def test_img2img_without_image_or_with_mask(client) -> None:
    _assert_a1111_error(client.post("/sdapi/v1/img2img", json={"prompt": "x"}), 422, "init_images")
    small = _b64(_png((32, 32)))
    body = _assert_a1111_error(
        client.post("/sdapi/v1/img2img", json={"init_images": [_b64(_png())], "mask": small}), 422, "mask"
    )
    assert "same size" in body["detail"]
    different = {"init_images": [_b64(_png())], "mask": _b64(_png()), "mask_blur_x": 4, "mask_blur_y": 8}
    _assert_a1111_error(client.post("/sdapi/v1/img2img", json=different), 422, "mask_blur_y")
    bad_fill = {"init_images": [_b64(_png())], "mask": _b64(_png()), "inpainting_fill": 7}
    _assert_a1111_error(client.post("/sdapi/v1/img2img", json=bad_fill), 422, "inpainting_fill")


def test_auth_basic_required(client) -> None:
    for method, path in (("get", "/sdapi/v1/options"), ("post", "/sdapi/v1/txt2img"), ("get", "/sdapi/v1/progress")):
        response = client.request(method, path, headers={"Authorization": "Basic " + _b64(b"alice:wrong")})
        body = _assert_a1111_error(response, 401)
        assert "wrong" not in json.dumps(body)
    ok = client.get("/sdapi/v1/samplers", headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200


def test_models_options_and_switching(client) -> None:
    models = client.get("/sdapi/v1/sd-models").json()
    titles = {m["model_name"]: m["title"] for m in models}
    # The built-in demo model is served too when its weights are installed.
    assert set(titles) - {"imagegen-shapes", "imagegen-shapes-refiner"} == {"fake-sd15", "fake-sdxl"}
    assert set(models[0]) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == titles["fake-sd15"]
    _assert_a1111_error(client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "missing"}), 422)
    try:
        response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "fake-sdxl", "samples_format": "png"})
        assert response.status_code == 200, response.text
        options = client.get("/sdapi/v1/options").json()
        assert options["sd_model_checkpoint"] == titles["fake-sdxl"]
        info = json.loads(
            client.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64}).json()["info"]
        )
        assert info["sd_model_name"] == "fake-sdxl"
        # A per-request override wins and is not kept.
        override = {"prompt": "x", "override_settings": {"sd_model_checkpoint": titles["fake-sd15"]}}
        info = json.loads(client.post("/sdapi/v1/txt2img", json=override).json()["info"])
        assert info["sd_model_name"] == "fake-sd15"
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == titles["fake-sdxl"]
        # ... unless override_settings_restore_afterwards is false: then it becomes the default, as in A1111.
        keep = {**override, "override_settings_restore_afterwards": False}
        assert client.post("/sdapi/v1/txt2img", json=keep).status_code == 200
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == titles["fake-sd15"]
    finally:
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "fake-sd15"})


def test_infotext_request(client) -> None:
    infotext = "a pasted prompt\nSteps: 3, Sampler: Euler, CFG scale: 6, Seed: 4242, Size: 72x64, Model: not-served"
    response = client.post("/sdapi/v1/txt2img", json={"infotext": infotext})
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert (info["prompt"], info["all_seeds"], info["steps"], info["width"]) == ("a pasted prompt", [4242], 3, 72)
    assert info["sd_model_name"] == "fake-sd15"  # a model we do not serve is ignored, as A1111 does


def test_lists(client) -> None:
    samplers = client.get("/sdapi/v1/samplers").json()
    assert {"name", "aliases", "options"} <= set(samplers[0])
    assert "DPM++ 2M" in {s["name"] for s in samplers}
    schedulers = client.get("/sdapi/v1/schedulers").json()
    assert "Karras" in {s["label"] for s in schedulers}
    assert client.get("/sdapi/v1/sd-vae").json() == []
    # Upscalers are listed (in detail in test_upscale_api.py).
    assert [u["name"] for u in client.get("/sdapi/v1/upscalers").json()][:3] == ["None", "Lanczos", "Nearest"]
    # The demo model's LoRA and embedding ship with imagegen: listed for every model, usable with the demo's only.
    assert "shapes-outline" in {lora["name"] for lora in client.get("/sdapi/v1/loras").json()}
    embeddings = client.get("/sdapi/v1/embeddings").json()
    assert set(embeddings) == {"loaded", "skipped"}
    assert "crimson" in {**embeddings["loaded"], **embeddings["skipped"]}
    memory = client.get("/sdapi/v1/memory").json()
    assert memory["ram"]["total"] > 0
    assert "error" in memory["cuda"]
    flags = client.get("/sdapi/v1/cmd-flags").json()
    assert API_KEY not in json.dumps(flags)
    assert BASIC[1] not in json.dumps(flags)
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200


def test_png_info_route(client) -> None:
    image = client.post("/sdapi/v1/txt2img", json={"prompt": "for png-info", "seed": 77}).json()["images"][0]
    answer = client.post("/sdapi/v1/png-info", json={"image": image}).json()
    assert answer["parameters"]["Prompt"] == "for png-info"
    assert answer["parameters"]["Seed"] == 77
    _assert_a1111_error(client.post("/sdapi/v1/png-info", json={"image": "@@@"}), 422, "image")


def test_progress_idle_and_interrupt_of_a_running_job(client) -> None:
    assert client.post("/sdapi/v1/skip").status_code == 200  # nothing running: a no-op
    idle = client.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0
    assert idle["state"]["job_count"] == 0
    result: dict = {}

    def blocking_call() -> None:
        result["response"] = client.post("/sdapi/v1/txt2img", json={"prompt": "slow [sleep=0.5]", "steps": 40})

    thread = threading.Thread(target=blocking_call)
    thread.start()
    try:
        progress = poll_progress(client, lambda p: p["state"]["sampling_step"] >= 1)
        assert progress["state"]["sampling_steps"] == 40
        assert 0 < progress["progress"] < 1
        assert progress["current_task"]
        assert client.post("/sdapi/v1/interrupt").json() == {}
    finally:
        thread.join(60)
    _assert_a1111_error(result["response"], 409)
    # The queue goes on.
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "after"}).status_code == 200


def test_interrupt_and_skip_leave_other_dialects_jobs_alone(client) -> None:
    """A1111's Interrupt button stops A1111 jobs only: a native client's running job carries on and succeeds."""
    bearer = {"Authorization": f"Bearer {API_KEY}"}

    def get(path: str):
        return client.get(path, headers=bearer)

    submitted = client.post(
        "/v1/jobs", json={"prompt": "native [sleep=0.1]", "num_inference_steps": 30}, headers=bearer
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    wait_job(get, job_id, until=lambda job: job["step"] >= 1)
    assert client.post("/sdapi/v1/interrupt").json() == {}
    assert client.post("/sdapi/v1/skip").status_code == 200
    assert get(f"/v1/jobs/{job_id}").json()["status"] == "running"  # the calls above came while it ran
    done = wait_job(get, job_id)
    assert (done["status"], done["cancel_requested"]) == ("succeeded", False)


def test_submit_runs_off_the_event_loop(client, monkeypatch: pytest.MonkeyPatch) -> None:
    # submit encodes the init image as PNG, hashes its pixels and writes SQLite: on the loop it would stall every
    # other request (SSE streams, probes) for as long as that takes.
    on_loop = record_submit_threads(client, monkeypatch)
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x"}).status_code == 200
    payload = {"prompt": "x", "init_images": [_b64(_png())]}
    assert client.post("/sdapi/v1/img2img", json=payload).status_code == 200
    assert on_loop == [False, False]


def test_failed_job_is_an_a1111_error(client) -> None:
    body = _assert_a1111_error(client.post("/sdapi/v1/txt2img", json={"prompt": "[oom]"}), 503)
    assert "out of memory" in body["detail"]


def test_openapi_lists_every_a1111_field(client) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    fields = set(schema["A1111Txt2ImgRequest"]["properties"])
    assert set(WEBUIAPI_TXT2IMG) <= fields
    assert {"init_images", "mask", "inpainting_fill", "include_init_images"} <= set(
        schema["A1111Img2ImgRequest"]["properties"]
    )


def test_unknown_path_under_sdapi_is_an_a1111_404(client) -> None:
    _assert_a1111_error(client.get("/sdapi/v1/no-such-thing"), 404)


def test_dialect_app_helper_paths_exist() -> None:
    # The helper copies the bundled configs; a missing folder would make every route test fail obscurely.
    from dialect_app import CONFIGS

    assert (Path(CONFIGS) / "sd15" / "model_index.json").is_file()


def test_a1111_client_over_real_http(server) -> None:
    """The webuiapi-shaped request against ``imagegen serve`` in a subprocess, over a real socket."""
    response = server.post("/sdapi/v1/txt2img", json={**WEBUIAPI_TXT2IMG, "seed": 9, "n_iter": 2})
    assert response.status_code == 200, server.log()[-2000:]
    body = response.json()
    assert json.loads(body["info"])["all_seeds"] == [9, 10]
    info = server.post("/sdapi/v1/png-info", json={"image": body["images"][1]}).json()
    assert info["parameters"]["Seed"] == 10
    assert info["parameters"]["Prompt"] == "a red circle"
    error = server.post("/sdapi/v1/txt2img", json={"prompt": "x", "restore_faces": True})
    assert error.status_code == 422
    assert error.json()["detail"].startswith("restore_faces:")


def test_a_full_queue_is_an_a1111_429_end_to_end(tmp_path: Path) -> None:
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    with dialect_client(tmp_path, max_queue=1) as client:
        queued = fill_queue(client, bearer)
        response = client.post("/sdapi/v1/txt2img", json={**WEBUIAPI_TXT2IMG, "steps": 1}, headers=AUTH)
        body = _assert_a1111_error(response, 429)
        assert "queue is full" in body["detail"]
        assert int(response.headers["retry-after"]) >= 1
        for job_id in queued:
            client.delete(f"/v1/jobs/{job_id}", headers=bearer)


def _job(client, response) -> dict:
    assert response.status_code == 200, response.text
    job_id = json.loads(response.json()["info"])["job_id"]
    return client.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {API_KEY}"}).json()["request"]


def test_hires_fix_fields_reach_the_request(client) -> None:
    payload = {
        "prompt": "x",
        "enable_hr": True,
        "hr_scale": 1.5,
        "hr_upscaler": "Lanczos",
        "hr_second_pass_steps": 7,
        "denoising_strength": 0.4,
        "hr_sampler_name": "Use same sampler",
        "hr_scheduler": "Karras",
        "hr_prompt": "y",
        "hr_cfg": 4.5,
    }
    request = _job(client, client.post("/sdapi/v1/txt2img", json=payload))
    assert request["enable_hr"] is True
    assert (request["hr_scale"], request["hr_upscaler"], request["hr_second_pass_steps"]) == (1.5, "Lanczos", 7)
    assert (request["strength"], request["hr_sampler"], request["hr_schedule_type"]) == (0.4, None, "Karras")
    assert (request["hr_prompt"], request["hr_cfg"]) == ("y", 4.5)
    # hr_upscaler unset is A1111's default, Latent; enable_hr false leaves the hires fields inert.
    assert (
        _job(client, client.post("/sdapi/v1/txt2img", json={"prompt": "x", "enable_hr": True}))["hr_upscaler"]
        == "Latent"
    )
    assert _job(client, client.post("/sdapi/v1/txt2img", json={"prompt": "x", "hr_scale": 99}))["enable_hr"] is False


def test_inpainting_fields_reach_the_request(client) -> None:
    payload = {
        "init_images": [_b64(_png())],
        "mask": _b64(_png()),
        "mask_blur_x": 6,
        "mask_blur_y": 6,
        "inpainting_fill": 2,
        "inpaint_full_res": True,
        "inpaint_full_res_padding": 12,
        "inpainting_mask_invert": 1,
        "tiling": True,
    }
    request = _job(client, client.post("/sdapi/v1/img2img", json=payload))
    assert request["mask"] is True
    assert (request["mask_blur"], request["inpainting_fill"], request["invert_mask"]) == (6, "latent noise", True)
    assert (request["inpaint_full_res"], request["inpaint_full_res_padding"], request["tiling"]) == (True, 12, True)
    assert _job(client, client.post("/sdapi/v1/img2img", json={**payload, "mask_blur": 3}))["mask_blur"] == 3


def test_the_sd_upscale_script_is_the_sd_upscale_field(client) -> None:
    listed = [u["name"] for u in client.get("/sdapi/v1/upscalers").json()]
    payload = {
        "init_images": [_b64(_png((64, 64)))],
        "script_name": "SD upscale",
        "script_args": [None, 16, listed.index("Lanczos"), 2.0],
        "width": 64,
        "height": 64,
    }
    request = _job(client, client.post("/sdapi/v1/img2img", json=payload))
    assert (request["sd_upscale"], request["sd_upscale_upscaler"], request["sd_upscale_overlap"]) == (
        2.0,
        "Lanczos",
        16,
    )
    bad = client.post("/sdapi/v1/img2img", json={**payload, "script_args": [None, 16, 99, 2.0]})
    _assert_a1111_error(bad, 422, "script_args[2]")
    _assert_a1111_error(
        client.post("/sdapi/v1/img2img", json={**payload, "script_args": [None, 16, 0, 0.5]}), 422, "script_args[3]"
    )
    other = client.post("/sdapi/v1/img2img", json={**payload, "script_name": "loopback"})
    _assert_a1111_error(other, 422, "script_name")


def test_noise_multiplier_and_tiling_from_the_request_or_the_options(client) -> None:
    payload = {"init_images": [_b64(_png())], "initial_noise_multiplier": 0.9}
    assert _job(client, client.post("/sdapi/v1/img2img", json=payload))["initial_noise_multiplier"] == 0.9
    overrides = {"override_settings": {"initial_noise_multiplier": 0.5, "tiling": True}}
    request = _job(client, client.post("/sdapi/v1/img2img", json={"init_images": [_b64(_png())], **overrides}))
    assert (request["initial_noise_multiplier"], request["tiling"]) == (0.5, True)
    bad = {"init_images": [_b64(_png())], "override_settings": {"initial_noise_multiplier": 3}}
    _assert_a1111_error(client.post("/sdapi/v1/img2img", json=bad), 422, "override_settings.initial_noise_multiplier")


def test_progress_shows_the_live_preview_as_a1111_options_say(client) -> None:
    """``live_previews_enable`` and ``show_progress_every_n_steps`` decide the previews of A1111 jobs;
    ``/progress`` returns the latest as ``current_image`` (base64), unless ``skip_current_image``."""
    assert client.post("/sdapi/v1/options", json={"show_progress_every_n_steps": 4}).status_code == 200
    result: dict = {}

    def blocking_call() -> None:
        result["response"] = client.post("/sdapi/v1/txt2img", json={"prompt": "slow [sleep=0.1]", "steps": 40})

    thread = threading.Thread(target=blocking_call)
    thread.start()
    try:
        progress = poll_progress(client, lambda p: bool(p["current_image"]))
        with Image.open(io.BytesIO(base64.b64decode(progress["current_image"]))) as picture:
            level = picture.convert("L").getpixel((8, 8))
        # The fake engine's preview at step s is grey 255 * s / 40, made at every 4th step only.
        assert min(abs(level - round(255 * s / 40)) for s in range(4, 41, 4)) <= 3
        assert level >= round(255 * 4 / 40) - 3
        assert client.get("/sdapi/v1/progress", params={"skip_current_image": True}).json()["current_image"] is None
        job = client.get("/v1/jobs", headers={"Authorization": f"Bearer {API_KEY}"}).json()["data"][0]
        assert job["request"]["preview_every"] == 4
    finally:
        client.post("/sdapi/v1/interrupt")
        thread.join(60)
    assert client.post("/sdapi/v1/options", json={"live_previews_enable": False}).status_code == 200
    client.post("/sdapi/v1/txt2img", json={"prompt": "no previews", "steps": 2})
    job = client.get("/v1/jobs", headers={"Authorization": f"Bearer {API_KEY}"}).json()["data"][0]
    assert job["request"]["prompt"] == "no previews"
    assert "preview_every" not in job["request"]
    _assert_a1111_error(
        client.post("/sdapi/v1/options", json={"show_progress_every_n_steps": -2}), 422, "show_progress_every_n_steps"
    )
