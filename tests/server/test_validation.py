"""Reliability cases 2, 5, 7 and 15 (ARCHITECTURE.md): bad input is a clear 4xx before any model work."""

from __future__ import annotations

import base64
import io

import pytest

from imagegen.metadata import read_infotext
from imagegen.options import EngineOptions
from support.malformed_png import declaring, truncated_ihdr, ztxt_bomb
from support.server_harness import wait_job, write_fake_model


def _no_jobs(client):
    return client.get("/v1/jobs").json()["total"] == 0


#: The native API's contract: 422 for a body its schema refuses (a wrong type, an unknown field), 400 for a value of
#: the right type that imagegen refuses (a range, a limit, a name).
@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"width": 0}, "width", 400),
        ({"width": 7}, "width", 400),
        ({"height": 100000}, "height", 400),
        ({"width": 100000}, "width", 400),
        ({"num_inference_steps": 0}, "num_inference_steps", 400),
        ({"num_inference_steps": -1}, "num_inference_steps", 400),
        ({"num_inference_steps": 10**6}, "num_inference_steps", 400),
        ({"num_images": 10**4}, "num_images", 400),
        ({"seed": -2}, "seed", 400),
        ({"strength": 0}, "strength", 400),
        ({"sampler": "Nope"}, "sampler", 400),
        ({"prompt": 5}, "prompt", 422),
        ({"steps": 5}, "steps", 422),  # A1111's name is not the native API's
        ({"colour": "red"}, "colour", 422),
        ({"sampler": "DPM++ SDE", "eta": 0.5}, "eta", 400),  # diffusers' DPM++ SDE has no other noise scale
        ({"sampler": "DDIM", "eta": 2}, "eta", 400),
    ],
)
def test_bad_values_are_4xx_naming_the_field(client, body, field, status):
    response = client.post("/v1/jobs", json={"prompt": "x", **body})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["code"] == "invalid_request"
    assert _no_jobs(client)


def test_nan_guidance_is_refused(client):
    response = client.post(
        "/v1/jobs", content=b'{"prompt": "x", "guidance_scale": NaN}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "guidance_scale"
    assert _no_jobs(client)


def test_invalid_json_is_422(client):
    response = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert response.json()["error"]["field"] == "body"


#: Bodies that are not a JSON object: JSON without a Content-Type (``requests.post(url, data=json.dumps(...))``), as
#: text/plain or a form, and JSON arrays, strings or nothing.
NOT_AN_OBJECT = [
    (b'{"prompt": "x"}', {}),
    (b'{"prompt": "x"}', {"content-type": "text/plain"}),
    (b"prompt=x", {"content-type": "application/x-www-form-urlencoded"}),
    (b'[{"prompt": "x"}]', {"content-type": "application/json"}),
    (b'"x"', {"content-type": "application/json"}),
    (b"", {"content-type": "application/json"}),
]
NOT_AN_OBJECT_IDS = ["no-content-type", "text-plain", "form", "array", "string", "empty"]


@pytest.mark.parametrize(("content", "headers"), NOT_AN_OBJECT, ids=NOT_AN_OBJECT_IDS)
def test_a_body_that_is_not_a_json_object_says_what_to_send(client, content, headers):
    response = client.post("/v1/jobs", content=content, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_request", "body")
    assert "JSON object" in error["message"]
    assert "Content-Type: application/json" in error["message"]
    assert _no_jobs(client)


def test_50_mb_body_is_413_before_any_work(client):
    body = b'{"prompt": "' + b"a" * (50 * 1000 * 1000) + b'"}'
    response = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert _no_jobs(client)
    assert client.get("/readyz").status_code == 200


def test_small_body_limit_applies_to_chunked_bodies(make_client):
    client = make_client(max_body_bytes=4096)

    def chunks():
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}'

    response = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert _no_jobs(client)


@pytest.mark.parametrize(
    "model",
    ["../fake-sd1", "/etc/passwd", "fake-sd1\x00", "http://example.com/model.safetensors", "nope", "~/models/x"],
)
def test_model_names_outside_the_served_set_are_400(client, model):
    response = client.post("/v1/jobs", json={"prompt": "x", "model": model})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "model"
    assert _no_jobs(client)


def test_symlink_out_of_the_models_folder_is_not_served(make_client, tmp_path, fake_models_dir):
    outside = write_fake_model(tmp_path / "outside" / "evil")
    models = tmp_path / "models"
    models.mkdir()
    (models / "evil").symlink_to(outside, target_is_directory=True)
    write_fake_model(models / "good")
    client = make_client(engine=EngineOptions(models_dir=models), default_model="good")
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert "good" in ids
    assert "evil" not in ids
    response = client.post("/v1/jobs", json={"prompt": "x", "model": "evil"})
    assert response.status_code == 400


def test_refiner_must_fit_the_base(client):
    wrong_base = client.post("/v1/jobs", json={"prompt": "x", "model": "fake-sd1", "refiner": "fake-refiner"})
    assert wrong_base.status_code == 400
    assert wrong_base.json()["error"]["field"] == "refiner"
    not_refiner = client.post("/v1/jobs", json={"prompt": "x", "model": "fake-sdxl", "refiner": "fake-sd1"})
    assert not_refiner.status_code == 400
    refiner_alone = client.post("/v1/jobs", json={"prompt": "x", "model": "fake-refiner"})
    assert refiner_alone.status_code == 400
    assert refiner_alone.json()["error"]["field"] == "model"
    ok = client.post("/v1/jobs", json={"prompt": "x", "model": "fake-sdxl", "refiner": "fake-refiner"})
    assert ok.status_code == 202
    assert ok.json()["request"]["refiner"] == "fake-refiner"


@pytest.mark.parametrize(
    "prompt",
    [
        " ".join(["word"] * 5000),
        "a cat 🐱🎨 on a mat",
        "قطة على حصيرة",
        "(" * 10_000,
        "",
    ],
)
def test_odd_prompts_are_accepted_and_round_trip(client, prompt):
    response = client.post("/v1/jobs", json={"prompt": prompt, "seed": 3})
    assert response.status_code == 202
    job = wait_job(client.get, response.json()["id"])
    assert job["status"] == "succeeded"
    from PIL import Image

    image = Image.open(io.BytesIO(client.get(job["images"][0]).content))
    assert read_infotext(image).startswith(prompt)


def test_nul_in_prompt_is_400(client):
    response = client.post("/v1/jobs", json={"prompt": "a\x00b"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "prompt"


def test_random_seed_is_reported_and_fixed_seed_repeats(client):
    random = wait_job(client.get, client.post("/v1/jobs", json={"prompt": "x", "seed": -1}).json()["id"])
    assert random["seeds"][0] >= 0
    assert f"Seed: {random['seeds'][0]}" in random["infotexts"][0]
    first, second = (
        wait_job(client.get, client.post("/v1/jobs", json={"prompt": "x", "seed": 5}).json()["id"]) for _ in range(2)
    )
    assert first["seeds"] == second["seeds"] == [5]
    assert client.get(first["images"][0]).content == client.get(second["images"][0]).content


@pytest.mark.parametrize(
    "data",
    [
        "not base64!!",
        "data:image/png;base64,AAAA",  # truncated
        "JVBERi0xLjQK",  # PDF bytes
        base64.b64encode(declaring(50_000, 50_000)).decode(),
        base64.b64encode(ztxt_bomb()).decode(),
        base64.b64encode(truncated_ihdr()).decode(),
    ],
    ids=["bad-base64", "truncated", "pdf", "bomb", "ztxt-bomb", "truncated-ihdr"],
)
def test_bad_init_images_are_400(client, data):
    response = client.post("/v1/jobs", json={"prompt": "x", "init_image": data})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "init_image"
    assert _no_jobs(client)


def test_the_schema_examples_work_as_they_are(client):
    """Every request example of the OpenAPI schema is accepted as it is (no "data:image/png;base64,..." stand-ins),
    and the image fields say they hold images (format: image; image/* uploads)."""
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    paths = {"JobCreate": "/v1/jobs", "UpscaleCreate": "/v1/upscales"}
    for name, path in paths.items():
        examples = components[name]["examples"]
        assert examples
        for example in examples:
            response = client.post(path, json=example)
            assert response.status_code == 202, (name, example, response.text)
    a1111 = components["A1111Img2ImgRequest"]["properties"]
    example = {"init_images": a1111["init_images"]["examples"][0], "mask": a1111["mask"]["examples"][0], "steps": 2}
    assert client.post("/sdapi/v1/img2img", json=example).status_code == 200
    assert a1111["init_images"]["anyOf"][0]["items"]["format"] == "image"
    assert components["JobCreate"]["properties"]["init_image"]["anyOf"][0]["format"] == "image"
    assert components["UpscaleCreate"]["properties"]["image"]["format"] == "image"
    edits = schema["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert edits["encoding"]["image"]["contentType"] == "image/png, image/jpeg, image/webp"
    assert edits["encoding"]["mask"]["contentType"] == "image/png"
