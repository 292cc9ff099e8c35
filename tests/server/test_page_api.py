"""What the web page needs from the server, each an API any client can use: the page's files at ``/`` (public, no
data), ``GET /v1/samplers``, ``POST /v1/png-info`` and deleting an ended job (``DELETE /v1/jobs/{id}?purge=true``)."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image, ImageStat
from PIL.PngImagePlugin import PngInfo

from imagegen.metadata import metadata_save_options
from imagegen.server.page import STATIC_DIR
from support.server_harness import wait_job

SLOW = "[sleep=0.1]"  # fake engine: 0.1 s per step


def _data_uri(image: Image.Image, format: str = "PNG", **options: object) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def test_the_page_and_its_files_are_served_without_a_key(make_client) -> None:
    client: TestClient = make_client(api_keys=("secret",))
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/js/main.js">' in page.text
    assert page.headers["cache-control"] == "no-cache"
    for name in ("js/main.js", "js/api.js", "js/form.js", "js/jobs.js", "js/mask.js", "style.css"):
        response = client.get(f"/ui/{name}")
        assert response.status_code == 200, name
        assert response.content == (STATIC_DIR / name).read_bytes()
    assert client.get("/ui/js/missing.js").status_code == 404
    # The data is not: the API still wants the key the page asks for.
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer secret"}).status_code == 200
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is not an API route


def test_every_module_the_page_imports_is_shipped() -> None:
    import re

    for module in (STATIC_DIR / "js").glob("*.js"):
        for target in re.findall(r'from "\./([a-z]+\.js)"', module.read_text(encoding="utf-8")):
            assert (STATIC_DIR / "js" / target).is_file(), f"{module.name} imports missing {target}"
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    for path in re.findall(r'(?:src|href)="/ui/([^"]+)"', html):
        assert (STATIC_DIR / path).is_file(), path


def test_samplers_lists_names_the_jobs_accept(client: TestClient) -> None:
    listing = client.get("/v1/samplers").json()
    names = [s["name"] for s in listing["data"]]
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM"} <= set(names)
    assert {"Karras", "Automatic"} <= set(listing["schedule_types"])
    job = client.post(
        "/v1/jobs", json={"prompt": "x", "sampler": names[-1], "schedule_type": listing["schedule_types"][0]}
    )
    assert job.status_code == 202, job.text


def test_png_info_gives_the_job_fields_of_an_infotext(client: TestClient) -> None:
    infotext = (
        "a red circle\nNegative prompt: blurry\nSteps: 12, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 4.5,"
        " Seed: 77, Size: 96x64, Model: fake-sd1"
    )
    meta = PngInfo()
    meta.add_text("parameters", infotext)
    meta.add_text("Comment", "hello")
    answer = client.post("/v1/png-info", json={"image": _data_uri(Image.new("RGB", (8, 8)), pnginfo=meta)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["infotext"] == infotext
    assert body["items"] == {"Comment": "hello"}
    fields = body["fields"]
    assert fields["prompt"] == "a red circle"
    assert fields["negative_prompt"] == "blurry"
    assert (fields["num_inference_steps"], fields["seed"], fields["guidance_scale"]) == (12, 77, 4.5)
    assert (fields["width"], fields["height"], fields["sampler"], fields["schedule_type"]) == (
        96,
        64,
        "DPM++ 2M",
        "Karras",
    )
    # The fields are a job body as they stand.
    assert client.post("/v1/jobs", json=fields).status_code == 202


def test_png_info_reads_a_jpeg_exif_infotext_too(client: TestClient) -> None:
    options = metadata_save_options("a blue square\nSteps: 5, Seed: 3, Size: 64x64", "JPEG")
    body = client.post("/v1/png-info", json={"image": _data_uri(Image.new("RGB", (8, 8)), "JPEG", **options)}).json()
    assert body["fields"]["prompt"] == "a blue square"
    assert body["fields"]["seed"] == 3


def test_png_info_without_an_infotext_or_of_a_non_image(client: TestClient) -> None:
    plain = client.post("/v1/png-info", json={"image": _data_uri(Image.new("RGB", (8, 8)))}).json()
    assert (plain["infotext"], plain["fields"]) == ("", None)
    bad = client.post("/v1/png-info", json={"image": base64.b64encode(b"not an image").decode()})
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "image"
    assert client.post("/v1/png-info", json={"picture": "x"}).status_code == 422


def test_purge_deletes_an_ended_job_its_images_and_inputs(client: TestClient, settings) -> None:
    init = _data_uri(Image.new("RGB", (32, 32), "blue"))
    job = client.post("/v1/jobs", json={"prompt": "keep me not", "init_image": init}, headers={"Idempotency-Key": "k1"})
    done = wait_job(client.get, job.json()["id"])
    assert done["status"] == "succeeded"
    image_url = done["images"][0]
    assert client.get(image_url).status_code == 200
    files = list(Path(settings.images_dir).glob(f"{done['id']}-*.png"))
    assert len(files) == 1  # (its init image went when it ended)
    response = client.delete(f"/v1/jobs/{done['id']}?purge=true")
    assert response.status_code == 204
    assert client.get(f"/v1/jobs/{done['id']}").status_code == 404
    assert client.get(image_url).status_code == 404
    assert not any(path.exists() for path in files)
    assert client.delete(f"/v1/jobs/{done['id']}?purge=true").status_code == 404
    # Its Idempotency-Key is free again: the same key makes a new job.
    again = client.post("/v1/jobs", json={"prompt": "keep me not"}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 202
    assert again.json()["id"] != done["id"]


def test_purge_of_a_running_or_queued_job_is_409_and_changes_nothing(client: TestClient) -> None:
    running = client.post("/v1/jobs", json={"prompt": f"long {SLOW}", "num_inference_steps": 100}).json()
    queued = client.post("/v1/jobs", json={"prompt": "waits"}).json()
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{running['id']}").json()["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    for job in (running, queued):
        refused = client.delete(f"/v1/jobs/{job['id']}?purge=true")
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "job_not_ended"
        assert "cancel it first" in refused.json()["error"]["message"]
    assert client.get(f"/v1/jobs/{running['id']}").json()["status"] == "running"
    # Plain DELETE still cancels, and the cancelled job can then be purged.
    assert client.delete(f"/v1/jobs/{running['id']}").json()["cancel_requested"] is True
    assert wait_job(client.get, running["id"])["status"] == "cancelled"
    assert client.delete(f"/v1/jobs/{running['id']}?purge=true").status_code == 204
    assert wait_job(client.get, queued["id"])["status"] == "succeeded"


# Live previews -------------------------------------------------------------------------------------------------------


def _sse_events(text: str) -> list[tuple[str, dict]]:
    import json

    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def _grey(data_url: str) -> int:
    header, _, encoded = data_url.partition(",")
    assert header == "data:image/jpeg;base64"
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as picture:
        assert picture.format == "JPEG"
        return round(ImageStat.Stat(picture.convert("L")).mean[0])


def test_a_job_with_preview_every_streams_preview_events(client: TestClient) -> None:
    job = client.post(
        "/v1/jobs", json={"prompt": f"watched {SLOW}", "num_inference_steps": 8, "preview_every": 2}
    ).json()
    assert job["request"]["preview_every"] == 2
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        events = _sse_events(response.read().decode())
    names = [name for name, _ in events]
    assert names[-1] == "done", names
    assert "preview" in names, names
    previews = [data for name, data in events if name == "preview"]
    # Each preview is the fake engine's grey of its step (level 255 * step / 8), taken every 2nd step, in order.
    steps = [data["step"] for data in previews]
    assert steps == sorted(set(steps)), steps
    assert all(step % 2 == 0 for step in steps), steps
    for data in previews:
        assert data["id"] == job["id"]
        assert data["total_steps"] == 8
        assert abs(_grey(data["image"]) - round(255 * data["step"] / 8)) <= 3
    # A preview follows the progress event of its step, so a client shows them in step order.
    first = names.index("preview")
    assert names[first - 1] == "progress"
    # Once the job has ended its preview is gone: the images are the result.
    gone = client.get(f"/v1/jobs/{job['id']}/preview")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "no_preview"
    assert "succeeded" in gone.json()["error"]["message"]


def test_a_running_job_s_latest_preview_is_served_as_jpeg(client: TestClient) -> None:
    job = client.post(
        "/v1/jobs", json={"prompt": f"watched {SLOW}", "num_inference_steps": 60, "preview_every": 3}
    ).json()
    wait_job(client.get, job["id"], until=lambda j: j["status"] == "running" and j["step"] >= 7)
    response = client.get(f"/v1/jobs/{job['id']}/preview")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "no-store"
    step = int(response.headers["x-step"])
    assert step % 3 == 0
    assert step >= 6
    assert response.headers["x-total-steps"] == "60"
    with Image.open(io.BytesIO(response.content)) as picture:
        level = picture.convert("L").getpixel((8, 8))
    assert abs(level - round(255 * step / 60)) <= 3
    client.delete(f"/v1/jobs/{job['id']}")
    wait_job(client.get, job["id"])


def test_jobs_without_preview_every_get_no_previews(client: TestClient) -> None:
    job = client.post("/v1/jobs", json={"prompt": f"plain {SLOW}", "num_inference_steps": 6}).json()
    assert "preview_every" not in job["request"]
    wait_job(client.get, job["id"], until=lambda j: j["status"] == "running" and j["step"] >= 2)
    missing = client.get(f"/v1/jobs/{job['id']}/preview")
    assert missing.status_code == 404
    assert "without preview_every" in missing.json()["error"]["message"]
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        names = [name for name, _ in _sse_events(response.read().decode())]
    assert "preview" not in names
    assert names[-1] == "done"
    assert client.get("/v1/jobs/nope/preview").status_code == 404


def test_a_bad_preview_interval_is_refused_naming_the_field(client: TestClient) -> None:
    for value in (-1, 1001):
        response = client.post("/v1/jobs", json={"prompt": "x", "preview_every": value})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["field"] == "preview_every"
        assert "from 1 to 1000" in error["message"]
        assert str(value) in error["message"]
    assert client.post("/v1/jobs", json={"prompt": "x", "preview_every": "often"}).status_code == 422
    assert client.get("/v1/jobs").json()["data"] == []  # nothing was queued
