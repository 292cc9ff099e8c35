"""The native job API, in process (TestClient) with real worker processes and the fake engine."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image

from imagegen.metadata import parse_infotext, read_infotext
from support.malformed_png import declaring
from support.server_harness import wait_job


def test_submit_poll_and_fetch_images(client):
    response = client.post("/v1/jobs", json={"prompt": "a red square", "seed": 42, "num_images": 2})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running")
    assert response.headers["location"].endswith(f"/v1/jobs/{job['id']}")

    done = wait_job(client.get, job["id"])
    assert done["status"] == "succeeded", done
    assert done["seeds"] == [42, 43]
    assert done["progress"] == 1.0
    assert done["model"] == "fake-sd1"
    assert len(done["images"]) == 2
    image = client.get(done["images"][1])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    info = parse_infotext(read_infotext(Image.open(io.BytesIO(image.content))))
    assert info.seed == 43
    assert info.prompt == "a red square"


def test_img2img_input_is_decoded_and_passed(client):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 48), "blue").save(buffer, format="PNG")
    data = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    response = client.post("/v1/jobs", json={"prompt": "x", "init_image": data, "strength": 0.5})
    assert response.status_code == 202, response.text
    done = wait_job(client.get, response.json()["id"])
    assert done["status"] == "succeeded"
    assert done["request"]["init_image"] is True
    assert done["request"]["strength"] == 0.5


def test_inpainting_and_outpainting_jobs_keep_their_mask(client, tmp_path):
    def data_uri(image: Image.Image) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

    init = data_uri(Image.new("RGB", (32, 48), "blue"))
    mask = Image.new("RGBA", (32, 48), (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (16, 0, 32, 48))
    body = {"prompt": "x", "init_image": init, "mask": data_uri(mask), "mask_blur": 2, "outpaint": [8, 0, 0, 0]}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    done = wait_job(client.get, response.json()["id"])
    assert done["status"] == "succeeded"
    assert (done["request"]["mask"], done["request"]["outpaint"], done["request"]["mask_blur"]) == (
        True,
        [8, 0, 0, 0],
        2,
    )
    # The mask's size is checked against the image's, by name, before queueing.
    bad = client.post("/v1/jobs", json={**body, "mask": data_uri(Image.new("L", (8, 8)))})
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "mask"
    wrong = client.post("/v1/jobs", json={**body, "outpaint": [8, 0]})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["field"] == "outpaint"


def test_an_oversized_init_image_is_fitted_into_the_limits_as_in_the_other_dialects(make_client):
    from imagegen.requests import Limits

    client = make_client(limits=Limits(max_width=256, max_height=256, max_pixels=256 * 256, max_input_bytes=200_000))
    buffer = io.BytesIO()
    Image.new("RGB", (600, 300), "blue").save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    job = client.post("/v1/jobs", json={"prompt": "x", "init_image": data}).json()
    request = wait_job(client.get, job["id"])["request"]
    assert (request["width"], request["height"]) == (256, 128)  # the input's aspect, within the limits
    # A base64 text longer than the byte limit is refused by its length, before it is decoded.
    huge = client.post("/v1/jobs", json={"prompt": "x", "init_image": "A" * 400_000})
    assert huge.status_code == 400
    assert (huge.json()["error"]["field"], huge.json()["error"]["message"]) == (
        "init_image",
        "init_image: must be at most 200000 bytes once decoded",
    )


def test_ddim_eta_is_stored_with_the_job(client):
    response = client.post("/v1/jobs", json={"prompt": "x", "sampler": "DDIM", "eta": 0.5})
    assert response.status_code == 202, response.text
    assert response.json()["request"]["eta"] == 0.5
    assert wait_job(client.get, response.json()["id"])["status"] == "succeeded"


def test_unknown_job_and_image_are_404_in_native_shape(client):
    response = client.get("/v1/jobs/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    for name in ("..%2Fjobs.sqlite3", "jobs.sqlite3", "0" * 32 + "-0.png"):
        assert client.get(f"/v1/images/{name}").status_code == 404


def test_models_list_has_openai_shape(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids[0] == "fake-sd1"  # the default first
    assert {"fake-sd1", "fake-sd1-b", "fake-sdxl", "fake-refiner"} <= set(ids)
    first = body["data"][0]
    assert first["object"] == "model"
    assert (first["family"], first["width"], first["height"]) == ("sd1", 64, 64)
    assert isinstance(first["created"], int)
    assert isinstance(first["owned_by"], str)


def test_one_model_by_id(client):
    model = client.get("/v1/models/fake-sdxl").json()
    assert (model["id"], model["object"], model["family"]) == ("fake-sdxl", "model", "sdxl")
    missing = client.get("/v1/models/owner/not-served")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert client.get("/v1/models/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_list_jobs_pages_and_filters(client):
    ids = [client.post("/v1/jobs", json={"prompt": f"p{i}", "seed": i}).json()["id"] for i in range(3)]
    for job_id in ids:
        wait_job(client.get, job_id)
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2]  # newest first
    assert page["has_more"] is True
    assert page["total"] == 3
    rest = client.get("/v1/jobs", params={"limit": 2, "offset": 2}).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]]
    assert client.get("/v1/jobs", params={"status": "failed"}).json()["total"] == 0
    assert client.get("/v1/jobs", params={"status": "succeeded"}).json()["total"] == 3
    bad = client.get("/v1/jobs", params={"status": "done"})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "status"


def test_huge_paging_values_are_422_naming_the_parameter(client):
    # SQLite binds 64-bit integers only: an unbounded offset used to reach it and fail as a 500.
    for params, name in (
        ({"offset": 10**20}, "offset"),
        ({"offset": 2**63}, "offset"),
        ({"offset": -1}, "offset"),
        ({"limit": 10**20}, "limit"),
        ({"limit": 0}, "limit"),
    ):
        response = client.get("/v1/jobs", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["field"] == name
    largest = client.get("/v1/jobs", params={"offset": 10**9})
    assert largest.status_code == 200
    assert largest.json()["data"] == []


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True


def test_each_job_records_the_model_it_asked_for(client):
    ids = [
        client.post("/v1/jobs", json={"prompt": "x", "model": model}).json()["id"]
        for model in ("fake-sd1-b", "fake-sd1", "fake-sd1-b")
    ]
    models = [wait_job(client.get, job_id)["model"] for job_id in ids]
    assert models == ["fake-sd1-b", "fake-sd1", "fake-sd1-b"]
    job = client.get(f"/v1/jobs/{ids[0]}").json()
    assert "Model: fake-sd1-b" in job["infotexts"][0]


def test_http_errors_use_the_native_shape(client):
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert missing.json()["error"]["type"] == "invalid_request_error"
    wrong_method = client.put("/v1/jobs")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    bad_key = client.post("/v1/jobs", json={"prompt": "x"}, headers={"Idempotency-Key": "has spaces in it"})
    assert bad_key.status_code == 400
    assert bad_key.json()["error"]["field"] == "Idempotency-Key"


def test_openapi_documents_the_native_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/images/{name}", "/v1/models"} <= set(
        paths
    )
    assert "Idempotency-Key" in json.dumps(paths["/v1/jobs"]["post"])
    assert {"400", "401", "421", "429"} <= set(paths["/v1/jobs"]["post"]["responses"])


def test_native_errors_carry_openai_type_and_param(client):
    """OpenAI SDKs read ``error.type`` and ``error.param`` of any error under their ``base_url``, and
    ``client.models.list()`` calls the native ``GET /v1/models``: the native shape is a superset of OpenAI's."""
    error = client.post("/v1/jobs", json={"prompt": "x", "width": 7}).json()["error"]
    assert set(error) == {"code", "message", "field", "type", "param"}
    assert (error["code"], error["field"], error["param"], error["type"]) == (
        "invalid_request",
        "width",
        "width",
        "invalid_request_error",
    )
    missing = client.get("/v1/models/owner/not-served").json()["error"]
    assert (missing["type"], missing["param"]) == ("invalid_request_error", None)


def test_an_image_deleted_after_its_lookup_is_a_native_404(client, monkeypatch, tmp_path):
    # Retention may delete the file between the route's lookup and the send.
    monkeypatch.setattr(
        "imagegen.server.dialects.native.routes.result_image_path", lambda settings, name: tmp_path / "gone.png"
    )
    response = client.get(f"/v1/images/{'0' * 32}-0.png")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_cheap_checks_come_before_the_init_image_is_decoded(client):
    bomb = base64.b64encode(declaring(50_000, 50_000)).decode()
    for extra, field in (
        ({"num_inference_steps": 1000}, "num_inference_steps"),  # within MAX_STEPS, over the server's limit
        ({"num_images": 9}, "num_images"),
        ({"width": 4096, "height": 4096}, "width"),
        ({"sampler": "no such sampler"}, "sampler"),
        ({"strength": 0}, "strength"),
    ):
        response = client.post("/v1/jobs", json={"prompt": "x", "init_image": bomb, **extra})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == field, (extra, response.text)
    # With good fields, the image is what is wrong.
    response = client.post("/v1/jobs", json={"prompt": "x", "init_image": bomb})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "init_image"


def test_status_reads_answer_304_while_nothing_changed_and_long_poll_until_the_job_ends(make_client):
    client = make_client(workers=1)
    blocker = client.post("/v1/jobs", json={"prompt": "blocker [sleep=0.05]", "num_inference_steps": 150}).json()["id"]
    wait_job(client.get, blocker, until=lambda job: job["status"] == "running")
    second = client.post("/v1/jobs", json={"prompt": "second in line"}).json()["id"]
    job = client.post("/v1/jobs", json={"prompt": "waiting"}).json()
    first = client.get(f"/v1/jobs/{job['id']}")
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    assert first.json()["queue_position"] == 1
    again = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    # Anything a read shows changes the ETag: here only the queue position.
    client.delete(f"/v1/jobs/{second}")
    moved = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert (moved.status_code, moved.json()["status"], moved.json()["queue_position"]) == (200, "queued", 0)
    etag = moved.headers["etag"]
    # A long poll that runs out answers with the job as it is; one that sees the job end answers when it ends.
    timed_out = client.get(f"/v1/jobs/{job['id']}", params={"wait": 0.3})
    assert (timed_out.json()["status"], timed_out.headers["etag"]) == ("queued", etag)
    client.delete(f"/v1/jobs/{blocker}")
    ended = client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()
    assert ended["status"] == "succeeded"
    changed = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    for bad in (-1, 56, "soon"):
        error = client.get(f"/v1/jobs/{job['id']}", params={"wait": bad})
        assert error.status_code == 422
        assert error.json()["error"]["field"] == "wait"
