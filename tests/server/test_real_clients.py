"""The client libraries people actually use, unmodified, against ``imagegen serve`` over a real socket: the official
OpenAI Python SDK and ``webuiapi`` (the most used A1111 client). The engine is the fake one (solid colours, real
infotext): these tests are about the HTTP contract each library relies on, not about pixels."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import pytest
from PIL import Image

from imagegen.metadata import parse_infotext, read_infotext
from support.server_harness import ServerProcess

API_KEY = "sk-real-clients"


@pytest.fixture
def keyed_server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    server = make_server("--api-key", API_KEY, "--api-auth", "alice:secret")
    server.headers = {"Authorization": f"Bearer {API_KEY}"}
    return server.start()


def _png(colour: str = "yellow") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_openai_sdk_generates_edits_lists_models_and_reads_errors(keyed_server: ServerProcess) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{keyed_server.url}/v1", api_key=API_KEY, max_retries=0)
    result = client.images.generate(
        model="dall-e-3", prompt="a red circle", size="64x64", n=2, response_format="b64_json", extra_body={"seed": 7}
    )
    assert len(result.data) == 2
    image = Image.open(io.BytesIO(base64.b64decode(result.data[1].b64_json or "")))
    assert parse_infotext(read_infotext(image) or "").seed == 8  # image i of a batch uses seed + i
    # URLs work without the key until they expire.
    url = client.images.generate(prompt="x", size="64x64", response_format="url").data[0].url
    assert url is not None
    import httpx

    assert httpx.get(url, timeout=30).headers["content-type"] == "image/png"
    edited = client.images.edit(
        image=("in.png", _png(), "image/png"), prompt="make it blue", size="64x64", response_format="url"
    )
    # The image is named after its job ("<job id>-<i>.png"): the job ran as an img2img of the uploaded image.
    name = (edited.data[0].url or "").split("?")[0].rsplit("/", 1)[-1]
    job = keyed_server.get(f"/v1/jobs/{name.split('-')[0]}").json()
    assert (job["request"]["init_image"], job["request"]["prompt"]) == (True, "make it blue")
    assert "fake-sd1" in [model.id for model in client.models.list()]
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(prompt="x", size="100x64")
    assert bad.value.body["param"] == "size"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.images.generate(prompt="x", model="no-such-model")
    wrong = openai.OpenAI(base_url=f"{keyed_server.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.images.generate(prompt="x")


def test_webuiapi_txt2img_img2img_options_and_models(keyed_server: ServerProcess) -> None:
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=keyed_server.port)
    api.set_auth("alice", "secret")
    result = api.txt2img(prompt="a red circle", seed=42, steps=3, width=64, height=64, batch_size=2)
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert result.info["all_seeds"] == [42, 43]
    job = keyed_server.get(f"/v1/jobs/{result.info['job_id']}").json()
    assert (job["request"]["sampler"], job["request"]["eta"]) == ("Euler a", 1.0)  # webuiapi's defaults
    # webuiapi always sends eta=1.0 and sampler "Euler a" unless told otherwise: honoured, not refused.
    ddim = api.txt2img(prompt="x", seed=1, steps=3, width=64, height=64, sampler_name="DDIM")
    assert ddim.info["sampler_name"] == "DDIM"
    job = keyed_server.get(f"/v1/jobs/{ddim.info['job_id']}").json()
    assert (job["request"]["sampler"], job["request"]["eta"]) == ("DDIM", 1.0)
    img2img = api.img2img(images=[Image.new("RGB", (64, 64), "green")], prompt="x", seed=3, steps=4)
    assert img2img.image.size == (512, 512)  # webuiapi sends width and height 512 unless told otherwise
    job = keyed_server.get(f"/v1/jobs/{img2img.info['job_id']}").json()
    assert (job["request"]["init_image"], job["request"]["strength"]) == (True, 0.75)
    options = api.get_options()
    assert options["send_seed"] is True
    api.set_options({"send_seed": False})
    assert api.get_options()["send_seed"] is False
    titles = [model["title"] for model in api.get_sd_models()]
    assert any(title.startswith("fake-sd1") for title in titles)
    assert "Euler a" in [sampler["name"] for sampler in api.get_samplers()]
