"""The OpenAI Images dialect: parameter mapping (pure), then /v1/images/* on a running app with the fake engine."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from dialect_app import API_KEY, MAX_BODY_BYTES, dialect_client, fill_queue, record_submit_threads
from PIL import Image

from imagegen.errors import InvalidRequest
from imagegen.metadata import read_infotext
from imagegen.requests import GenerationRequest
from imagegen.server.dialects.core import renamed_fields
from imagegen.server.dialects.openai.routes import (
    check_ignored,
    is_openai_model,
    output_options,
    parse_n,
    parse_size,
    render_openai_error,
    submission,
)
from imagegen.server.errors import ErrorInfo
from support.malformed_png import declaring, ztxt_bomb

BEARER = {"Authorization": f"Bearer {API_KEY}"}


def _png(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------------------------
# Pure mapping.


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (None, (None, None)),
        ("auto", (None, None)),
        ("1024x1024", (1024, 1024)),
        ("1792x1024", (1792, 1024)),
        ("256x256", (256, 256)),
        ("64X72", (64, 72)),
    ],
)
def test_parse_size(size: str | None, expected: tuple) -> None:
    assert parse_size(size) == expected


@pytest.mark.parametrize("size", ["big", "1024", "1024x", "-8x8", "1024*1024", "1e3x8"])
def test_parse_size_refuses_garbage(size: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_size(size)
    assert info.value.field == "size"


def _request(**kwargs: object) -> GenerationRequest:
    """The request the dialect core builds from an OpenAI call (without decoding its image)."""
    call = submission(**kwargs)
    with renamed_fields(call.names, prefix=call.prefixes):
        return GenerationRequest(**call.fields)


def test_size_must_be_a_multiple_of_8_named_size() -> None:
    with pytest.raises(InvalidRequest) as info:
        _request(prompt="x", n=1, size="100x64", model=None)
    assert info.value.field == "size"
    with pytest.raises(InvalidRequest) as info:
        _request(prompt="x", n=1, size=None, model=None, init_image=b"png", strength=1.5)
    assert info.value.field == "strength"


def test_n_bounds() -> None:
    assert parse_n(None) == 1
    assert parse_n(10) == 10
    for bad in (0, 11, 10_000, True):
        with pytest.raises(InvalidRequest) as info:
            parse_n(bad)
        assert info.value.field == "n"


def test_openai_model_names_mean_the_default_model() -> None:
    assert is_openai_model(None)
    assert is_openai_model("dall-e-3")
    assert is_openai_model("gpt-image-1")
    assert not is_openai_model("fake-sdxl")


def test_output_defaults_and_checks() -> None:
    assert (
        output_options(model=None, response_format=None, output_format=None, output_compression=None).response_format
        == "url"
    )
    gpt = output_options(model="gpt-image-1", response_format=None, output_format="webp", output_compression=80)
    assert (gpt.response_format, gpt.output_format, gpt.output_compression) == ("b64_json", "webp", 80)
    for kwargs, name in (
        ({"response_format": "png"}, "response_format"),
        ({"response_format": "url", "output_format": "jpeg"}, "output_format"),
        ({"output_format": "gif"}, "output_format"),
        ({"output_compression": 101}, "output_compression"),
        ({"background": "transparent"}, "background"),
    ):
        full = {"model": None, "response_format": None, "output_format": None, "output_compression": None, **kwargs}
        with pytest.raises(InvalidRequest) as info:
            output_options(**full)
        assert info.value.field == name


def test_ignored_parameters_are_still_checked() -> None:
    check_ignored(quality="hd", style="vivid", moderation="low", input_fidelity="high", stream=False, partial_images=0)
    for kwargs, name in (
        ({"quality": "ultra"}, "quality"),
        ({"style": "weird"}, "style"),
        ({"stream": True}, "stream"),
        ({"partial_images": 2}, "partial_images"),
    ):
        with pytest.raises(InvalidRequest) as info:
            check_ignored(**kwargs)
        assert info.value.field == name


def test_an_edit_leaves_auto_size_to_the_core_and_keeps_an_explicit_one() -> None:
    call = submission(prompt="p", n=2, size=None, model="m", seed=3, init_image=b"png", strength=0.6)
    assert call.init_image == b"png"
    assert (call.fields["width"], call.fields["height"]) == (None, None)  # the core fits the input's size
    assert (call.fields["num_images"], call.fields["strength"], call.fields["seed"]) == (2, 0.6, 3)
    assert call.names["num_images"] == "n"
    explicit = _request(prompt="p", n=1, size="64x64", model=None)
    assert (explicit.width, explicit.height, explicit.seed) == (64, 64, -1)


def test_error_renderer_shape() -> None:
    full = render_openai_error(
        None, ErrorInfo(status=429, code="queue_full", message="busy", headers={"Retry-After": "7"})
    )
    assert full.status_code == 429
    assert full.headers["retry-after"] == "7"
    assert json.loads(full.body)["error"] == {
        "message": "busy",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    invalid = render_openai_error(None, ErrorInfo(status=422, code="invalid_request", message="n: bad", field="n"))
    assert invalid.status_code == 400
    assert json.loads(invalid.body)["error"]["param"] == "n"
    assert json.loads(invalid.body)["error"]["code"] is None
    down = render_openai_error(None, ErrorInfo(status=503, code="unavailable", message="draining"))
    assert json.loads(down.body)["error"]["type"] == "server_error"


# --------------------------------------------------------------------------------------------------------------------
# Routes on a running app (real JobService + worker process, fake engine).


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    with dialect_client(tmp_path_factory.mktemp("openai")) as test_client:
        test_client.headers.update(BEARER)
        yield test_client


def _assert_openai_error(response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if param is not None:
        assert body["error"]["param"] == param, body
    return body["error"]


def test_generations_b64_json(client) -> None:
    response = client.post(
        "/v1/images/generations",
        json={"prompt": "a blue square", "n": 2, "size": "64x72", "response_format": "b64_json", "seed": 10},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["created"], int)
    assert len(body["data"]) == 2
    for index, item in enumerate(body["data"]):
        assert set(item) == {"b64_json"}
        with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as image:
            assert image.size == (64, 72)
            infotext = read_infotext(image)
        assert infotext is not None
        assert f"Seed: {10 + index}" in infotext


def test_generations_url_points_at_the_native_image_route(client) -> None:
    # What the OpenAI Python SDK sends for client.images.generate(model="dall-e-3", prompt=..., n=1, size=...).
    response = client.post(
        "/v1/images/generations", json={"model": "dall-e-3", "prompt": "sdk shaped", "n": 1, "size": "1024x1024"}
    )
    assert response.status_code == 200, response.text
    url = response.json()["data"][0]["url"]
    assert url.startswith("http://testserver/v1/images/")
    image = client.get(url)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(image.content)) as decoded:
        assert decoded.size == (1024, 1024)


def test_generations_size_auto_is_the_model_native_size_and_model_is_resolved(client) -> None:
    body = client.post(
        "/v1/images/generations", json={"prompt": "x", "model": "fake-sdxl", "response_format": "b64_json"}
    ).json()
    with Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))) as image:
        assert image.size == (64, 64)  # the test models' imagegen.json defaults
        assert "Model: fake-sdxl" in (read_infotext(image) or "")


def test_generations_jpeg_output_keeps_the_infotext(client) -> None:
    body = client.post(
        "/v1/images/generations",
        json={"prompt": "jpeg please", "model": "gpt-image-1", "output_format": "jpeg", "output_compression": 50},
    ).json()
    with Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))) as image:
        assert image.format == "JPEG"
        assert (read_infotext(image) or "").startswith("jpeg please")


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({"prompt": "x", "size": "7x7"}, 400, "size"),
        ({"prompt": "x", "size": "100000x64"}, 400, "size"),
        ({"prompt": "x", "size": "huge"}, 400, "size"),
        ({"prompt": "x", "n": 10_000}, 400, "n"),
        ({"prompt": "x", "n": "two"}, 400, "n"),
        ({"prompt": "x", "response_format": "gif"}, 400, "response_format"),
        ({"prompt": "x", "bogus": 1}, 400, "bogus"),
        ({"n": 1}, 400, "prompt"),
        ({"prompt": "x", "model": "../../etc/passwd"}, 404, "model"),
        ({"prompt": "x", "model": "not-a-model"}, 404, "model"),
        ({"prompt": "x", "stream": True}, 400, "stream"),
    ],
)
def test_generation_errors_in_openai_shape(client, payload: dict, status: int, param: str) -> None:
    error = _assert_openai_error(client.post("/v1/images/generations", json=payload), status, param)
    assert error["type"] == "invalid_request_error"
    if status == 404:
        assert error["code"] == "model_not_found"


def test_wrong_body_shapes(client) -> None:
    _assert_openai_error(client.post("/v1/images/generations", json=["prompt"]), 400)
    for content, headers in (
        (b'{"prompt": "x"}', {}),  # JSON without a Content-Type
        (b'{"prompt": "x"}', {"Content-Type": "text/plain"}),
        (b'[{"prompt": "x"}]', {"Content-Type": "application/json"}),
        (b"{not json", {"Content-Type": "application/json"}),
    ):
        response = client.post("/v1/images/generations", content=content, headers=headers)
        error = _assert_openai_error(response, 400, "body")
        assert "JSON" in error["message"]
        if not content.startswith(b"{not"):
            assert "Content-Type: application/json" in error["message"]
    files = {"image": (None, base64.b64encode(_png()).decode())}  # base64 text instead of a file
    _assert_openai_error(client.post("/v1/images/edits", files=files, data={"prompt": "x"}), 400, "image")


def test_auth_bearer_required(client) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong-key"}):
        response = client.post("/v1/images/generations", json={"prompt": "x"}, headers=headers)
        error = _assert_openai_error(response, 401)
        assert error["code"] == "invalid_api_key"
        assert "wrong-key" not in json.dumps(error)
    files = {"image": ("a.png", _png(), "image/png")}
    response = client.post("/v1/images/variations", files=files, headers={"Authorization": "Bearer nope"})
    _assert_openai_error(response, 401)


def test_edits_without_mask_is_img2img(client) -> None:
    files = {"image": ("in.png", _png((80, 48)), "image/png")}
    data = {"prompt": "make it red", "response_format": "b64_json", "n": "1", "seed": "3"}
    response = client.post("/v1/images/edits", files=files, data=data)
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"]))) as image:
        assert image.size == (80, 48)  # the input's size when size is omitted
        assert "make it red" in (read_infotext(image) or "")


def test_edits_accepts_image_array_field(client) -> None:
    files = [("image[]", ("in.png", _png((64, 64)), "image/png"))]
    response = client.post("/v1/images/edits", files=files, data={"prompt": "x", "response_format": "b64_json"})
    assert response.status_code == 200, response.text


def test_edits_with_a_mask_without_transparent_pixels_is_a_clear_400(client) -> None:
    opaque = io.BytesIO()
    Image.new("RGBA", (64, 48), (0, 0, 0, 255)).save(opaque, format="PNG")
    files = {"image": ("in.png", _png(), "image/png"), "mask": ("mask.png", opaque.getvalue(), "image/png")}
    error = _assert_openai_error(client.post("/v1/images/edits", files=files, data={"prompt": "x"}), 400, "mask")
    assert "transparent" in error["message"]


def test_edits_with_a_mask_become_an_inpainting_job(client) -> None:
    half = Image.new("RGBA", (64, 48), (0, 0, 0, 255))
    half.paste((0, 0, 0, 0), (32, 0, 64, 48))  # the right half is the area to edit
    buffer = io.BytesIO()
    half.save(buffer, format="PNG")
    files = {"image": ("in.png", _png(), "image/png"), "mask": ("mask.png", buffer.getvalue(), "image/png")}
    response = client.post("/v1/images/edits", files=files, data={"prompt": "x", "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    job = client.get("/v1/jobs", params={"limit": 1}).json()["data"][0]
    assert job["request"]["mask"] is True
    assert job["request"]["strength"] == 1.0  # the masked area is painted anew unless strength is sent
    # The image's own transparency is the mask when none is sent.
    files = {"image": ("in.png", buffer.getvalue(), "image/png")}
    assert client.post("/v1/images/edits", files=files, data={"prompt": "x"}).status_code == 200
    assert client.get("/v1/jobs", params={"limit": 1}).json()["data"][0]["request"]["mask"] is True
    # A mask of another size is refused by name.
    files = {"image": ("in.png", _png((32, 32)), "image/png"), "mask": ("mask.png", buffer.getvalue(), "image/png")}
    _assert_openai_error(client.post("/v1/images/edits", files=files, data={"prompt": "x"}), 400, "mask")


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ({}, {"prompt": "x"}, None),  # no multipart file at all
        ({"image": ("in.png", _png(), "image/png")}, {}, "prompt"),
        ({"image": ("in.png", _png(), "image/png")}, {"prompt": "x", "size": "9x9"}, "size"),
        ({"image": ("in.png", _png(), "image/png")}, {"prompt": "x", "n": "lots"}, "n"),
        ({"image": ("in.png", _png(), "image/png")}, {"prompt": "x", "unknown_field": "1"}, "unknown_field"),
        ({"image": ("t.png", _png()[:50], "image/png")}, {"prompt": "x"}, "image"),
        ({"image": ("b.png", declaring(50_000, 50_000), "image/png")}, {"prompt": "x"}, "image"),
        ({"image": ("z.png", ztxt_bomb(), "image/png")}, {"prompt": "x"}, "image"),
        ({"image": ("d.pdf", b"%PDF-1.7\n1 0 obj <<>> endobj\n", "application/pdf")}, {"prompt": "x"}, "image"),
    ],
)
def test_edit_errors_in_openai_shape(client, files: dict, data: dict, param: str | None) -> None:
    response = client.post("/v1/images/edits", files=files or None, data=data)
    error = _assert_openai_error(response, 400)
    if param is not None:
        assert error["param"] == param


def test_edit_size_is_checked_before_the_image_is_decoded(client) -> None:
    files = {"image": ("b.png", declaring(50_000, 50_000), "image/png")}
    _assert_openai_error(client.post("/v1/images/edits", files=files, data={"prompt": "x", "size": "8x9"}), 400, "size")


def test_variations(client) -> None:
    files = {"image": ("in.png", _png((64, 64)), "image/png")}
    response = client.post("/v1/images/variations", files=files, data={"n": "2", "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 2
    with Image.open(io.BytesIO(base64.b64decode(data[0]["b64_json"]))) as image:
        infotext = read_infotext(image) or ""
    assert infotext.startswith("Steps:")  # empty prompt
    # prompt is not a variations parameter
    response = client.post("/v1/images/variations", files=files, data={"prompt": "x"})
    _assert_openai_error(response, 400, "prompt")


def test_submit_runs_off_the_event_loop(client, monkeypatch: pytest.MonkeyPatch) -> None:
    # submit encodes the init image as PNG, hashes its pixels and writes SQLite: keep it off the event loop.
    on_loop = record_submit_threads(client, monkeypatch)
    assert client.post("/v1/images/generations", json={"prompt": "x", "response_format": "b64_json"}).status_code == 200
    files = {"image": ("in.png", _png((64, 64)), "image/png")}
    edit = client.post("/v1/images/edits", files=files, data={"prompt": "x", "response_format": "b64_json"})
    assert edit.status_code == 200, edit.text
    assert on_loop == [False, False]


def test_failed_job_is_an_openai_server_error(client) -> None:
    error = _assert_openai_error(client.post("/v1/images/generations", json={"prompt": "[fail]"}), 500)
    assert error["type"] == "server_error"


def test_body_too_large_is_an_openai_413(client) -> None:
    big = {"prompt": "x" * (MAX_BODY_BYTES + 1)}
    _assert_openai_error(client.post("/v1/images/generations", json=big), 413)


def test_openai_sdk_shaped_requests_over_real_http(make_server) -> None:
    """What the OpenAI Python SDK sends, against ``imagegen serve --api-key`` in a subprocess, over a real socket."""
    server = make_server("--api-key", API_KEY).start()
    sdk_headers = {
        "User-Agent": "OpenAI/Python 1.99.0",
        "X-Stainless-Lang": "python",
        "Authorization": f"Bearer {API_KEY}",
    }
    payload = {"prompt": "a lighthouse", "model": "dall-e-2", "n": 1, "size": "256x256", "response_format": "url"}
    # The SDK with a wrong key: 401 in OpenAI's shape (the SDK raises AuthenticationError from it).
    refused = server.post("/v1/images/generations", json=payload, headers={**sdk_headers, "Authorization": "Bearer x"})
    error = _assert_openai_error(refused, 401)
    assert error["code"] == "invalid_api_key"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    response = server.post("/v1/images/generations", json=payload, headers=sdk_headers)
    assert response.status_code == 200, server.log()[-2000:]
    url = response.json()["data"][0]["url"]
    assert url.startswith(server.url + "/v1/images/")
    fetched = httpx.get(url, timeout=30)  # no key: the URL's signature is the permission
    assert fetched.status_code == 200
    assert httpx.get(url.split("?")[0], timeout=30).status_code == 401  # without it, the key is needed
    with Image.open(io.BytesIO(fetched.content)) as image:
        assert image.size == (256, 256)
    files = {"image": ("in.png", _png((64, 64)), "image/png")}
    data = {"prompt": "winter", "model": "dall-e-2", "response_format": "b64_json"}
    edited = server.post("/v1/images/edits", files=files, data=data, headers=sdk_headers)
    assert edited.status_code == 200, edited.text
    assert base64.b64decode(edited.json()["data"][0]["b64_json"]).startswith(b"\x89PNG")
    invalid = server.post("/v1/images/generations", json={"prompt": "x", "size": "12x12"}, headers=sdk_headers)
    assert invalid.status_code == 400
    assert invalid.json()["error"]["param"] == "size"


def test_a_full_queue_is_an_openai_429_end_to_end(tmp_path) -> None:
    with dialect_client(tmp_path, max_queue=1) as client:
        queued = fill_queue(client, BEARER)
        response = client.post("/v1/images/generations", json={"prompt": "one too many"}, headers=BEARER)
        error = _assert_openai_error(response, 429)
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert int(response.headers["retry-after"]) >= 1
        for job_id in queued:
            client.delete(f"/v1/jobs/{job_id}", headers=BEARER)
