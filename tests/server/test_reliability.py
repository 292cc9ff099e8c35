"""Reliability cases of ``ARCHITECTURE.md`` not covered elsewhere: 4 (image URLs are never fetched), 6 (a pickle
checkpoint is refused without ``--allow-pickle`` and nothing in it runs) and 9 (a model switch while a job runs: each
output records the model it asked for). Case 11 (out of memory) is ``test_queue.test_out_of_memory_fails_the_job_only``.
"""

from __future__ import annotations

import http.server
import pickle
import shutil
import threading
from dataclasses import replace
from pathlib import Path

from support.server_harness import wait_job

SLOW = "[sleep=0.05]"


class _Trap:
    """Unpickling this creates ``path``: proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.path,))


def test_image_urls_are_never_fetched(client) -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    listener = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{listener.server_port}/image.png"
    try:
        native = client.post("/v1/jobs", json={"prompt": "x", "init_image": url})
        assert native.status_code in (400, 422), native.text
        assert native.json()["error"]["field"] == "init_image"
        a1111 = client.post("/sdapi/v1/img2img", json={"prompt": "x", "init_images": [url]})
        assert 400 <= a1111.status_code < 500, a1111.text
        upscale = client.post("/v1/upscales", json={"image": url, "upscaler": "Lanczos", "scale": 2})
        assert 400 <= upscale.status_code < 500, upscale.text
    finally:
        listener.shutdown()
    assert hits == []  # nothing ever asked the loopback server for the image
    assert client.get("/v1/jobs").json()["data"] == []


def test_a_pickle_checkpoint_is_refused_and_never_unpickled(make_client, settings, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(settings.engine.models_dir, models)
    marker = tmp_path / "pickle-ran"
    (models / "evil.ckpt").write_bytes(pickle.dumps(_Trap(marker)))
    client = make_client(engine=replace(settings.engine, models_dir=models))
    listed = [model["id"] for model in client.get("/v1/models").json()["data"]]
    assert "evil.ckpt" not in listed
    response = client.post("/v1/jobs", json={"prompt": "x", "model": "evil.ckpt"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == "model"
    assert "evil.ckpt" in error["message"]
    assert not marker.exists()
    assert client.get("/v1/jobs").json()["data"] == []


def test_each_output_records_the_model_it_asked_for_across_a_switch(client) -> None:
    first = client.post(
        "/v1/jobs", json={"prompt": f"on the first {SLOW}", "model": "fake-sd1", "num_inference_steps": 20, "seed": 1}
    ).json()
    wait_job(client.get, first["id"], until=lambda job: job["status"] == "running")
    second = client.post(
        "/v1/jobs", json={"prompt": "on the second", "model": "fake-sd1-b", "num_inference_steps": 2, "seed": 2}
    ).json()
    third = client.post(
        "/v1/jobs", json={"prompt": "back on the first", "model": "fake-sd1", "num_inference_steps": 2, "seed": 3}
    ).json()
    ended = [wait_job(client.get, job["id"]) for job in (first, second, third)]
    assert [job["status"] for job in ended] == ["succeeded"] * 3
    assert [job["model"] for job in ended] == ["fake-sd1", "fake-sd1-b", "fake-sd1"]
    for job in ended:
        assert f"Model: {job['model']}," in job["infotexts"][0]
