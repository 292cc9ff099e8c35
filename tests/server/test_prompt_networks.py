"""LoRA, styles and the prompt language through every dialect, on a real worker running the tiny SD1 model."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from imagegen.metadata import parse_infotext, read_infotext
from imagegen.options import EngineOptions
from imagegen.server.settings import DEFAULT_ENGINE_FACTORY
from support.server_harness import wait_job
from support.tiny_loras import make_loha, make_lora


def test_loras_styles_and_clip_skip_in_every_dialect(make_client, tiny_models, tmp_path: Path) -> None:
    model = str(tiny_models["sd1"])
    loras = tmp_path / "Lora"
    make_lora(tiny_models["sd1"], loras / "detail.safetensors", fmt="kohya")
    make_loha(loras / "loha.safetensors")
    styles = tmp_path / "styles.csv"
    styles.write_text("name,prompt,negative_prompt\nfilm,photo of {prompt},blurry\n", encoding="utf-8")
    options = EngineOptions(device="cpu", lora_dirs=(loras,), styles_file=styles)
    client = make_client(models=(model,), default_model=model, engine_factory=DEFAULT_ENGINE_FACTORY, engine=options)

    # Lists, in A1111's shapes and the native one.
    a1111_loras = client.get("/sdapi/v1/loras").json()
    assert {entry["name"] for entry in a1111_loras} == {"detail", "loha", "shapes-outline"}  # + the shipped one
    assert next(e for e in a1111_loras if e["name"] == "detail")["alias"] == "detail"
    native = {entry["name"]: entry for entry in client.get("/v1/loras").json()["data"]}
    assert native["detail"]["format"] == "kohya"
    assert native["detail"]["error"] is None
    assert "LoHa" in native["loha"]["error"]
    assert client.post("/sdapi/v1/refresh-loras").status_code == 200
    assert client.get("/sdapi/v1/prompt-styles").json() == [
        {"name": "film", "prompt": "photo of {prompt}", "negative_prompt": "blurry"}
    ]
    # The shipped demo embedding is for the demo model's encoders: skipped for this one, with the reason.
    embeddings = client.get("/sdapi/v1/embeddings").json()
    assert embeddings["loaded"] == {}
    assert embeddings["skipped"]["crimson"]["vectors"] == 1

    # A1111: the tag in the prompt, a style, clip skip as an override; the infotext records all three.
    body = {
        "prompt": "a cat <lora:detail:0.8>",
        "styles": ["film"],
        "steps": 2,
        "seed": 5,
        "override_settings": {"CLIP_stop_at_last_layers": 2},
    }
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    text = read_infotext(_image(answer.json()["images"][0])) or ""
    info = parse_infotext(text)
    assert info.prompt == "photo of a cat <lora:detail:0.8>"
    assert info.negative_prompt == "blurry"
    assert "Lora hashes: " in text
    assert "Clip skip: 2" in text
    # Unknown LoRA, a LyCORIS file, an unknown style: 422 naming the field, before queueing or from the engine.
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "a <lora:nope:1>"}).status_code == 422
    refused = client.post("/sdapi/v1/txt2img", json={"prompt": "a <lora:loha:1>", "steps": 1})
    assert refused.status_code == 422
    assert "LoHa" in refused.text

    # Native: the structured field; the job's record keeps it.
    job = client.post(
        "/v1/jobs", json={"prompt": "a cat", "loras": [{"name": "detail", "weight": 0.8}], "num_inference_steps": 2}
    ).json()
    done = wait_job(client.get, job["id"])
    assert done["status"] == "succeeded", done
    assert done["request"]["loras"] == [{"name": "detail", "weight": 0.8, "te_weight": None, "unet_weight": None}]
    assert "<lora:detail:0.8>" in done["infotexts"][0]
    bad = client.post("/v1/jobs", json={"prompt": "a", "loras": [{"name": "../detail"}]})
    assert bad.status_code == 400
    assert "not a path" in bad.text

    # OpenAI: the tag in the prompt.
    openai = client.post(
        "/v1/images/generations",
        json={"prompt": "a (cat:1.2) <lora:detail:1>", "size": "64x64", "response_format": "b64_json"},
    )
    assert openai.status_code == 200, openai.text
    png = _image(openai.json()["data"][0]["b64_json"])
    assert "Lora hashes" in (read_infotext(png) or "")


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))
