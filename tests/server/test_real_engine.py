"""The real path once: a worker process running imagegen's Engine on a tiny random-weight SD1 model."""

from __future__ import annotations

import io

from PIL import Image

from imagegen.metadata import parse_infotext, read_infotext
from imagegen.options import EngineOptions
from imagegen.server.settings import DEFAULT_ENGINE_FACTORY
from support.server_harness import wait_job


def test_real_engine_generates_reproducibly_and_cancels(make_client, tiny_models):
    model = str(tiny_models["sd1"])
    client = make_client(
        models=(model,), default_model=model, engine_factory=DEFAULT_ENGINE_FACTORY, engine=EngineOptions(device="cpu")
    )
    served = client.get("/v1/models").json()["data"]
    assert served[0]["family"] == "sd1"
    assert (served[0]["width"], served[0]["height"]) == (64, 64)

    body = {"prompt": "a red circle", "seed": 1234, "num_inference_steps": 2, "sampler": "Euler"}
    first, second = (wait_job(client.get, client.post("/v1/jobs", json=body).json()["id"]) for _ in range(2))
    assert first["status"] == second["status"] == "succeeded", first
    assert first["total_steps"] == 2
    assert first["timings"]["total"] > 0
    png = client.get(first["images"][0]).content
    # Reliability case 15: the same seed gives the same pixels, through the queue and the worker.
    assert (
        Image.open(io.BytesIO(png)).tobytes()
        == Image.open(io.BytesIO(client.get(second["images"][0]).content)).tobytes()
    )
    info = parse_infotext(read_infotext(Image.open(io.BytesIO(png))))
    assert (info.seed, info.steps, info.sampler, info.width) == (1234, 2, "Euler", 64)

    # Reliability case 7: a prompt longer than CLIP's window runs whole (75-token chunks, as A1111): nothing ignored.
    long_prompt = " ".join(["lighthouse"] * 100)
    long_job = wait_job(
        client.get, client.post("/v1/jobs", json={"prompt": long_prompt, "num_inference_steps": 1}).json()["id"]
    )
    assert long_job["status"] == "succeeded"
    assert long_job["warnings"] == []

    # A running job on the real engine stops at the next step when cancelled.
    long = client.post("/v1/jobs", json={"prompt": "long", "num_inference_steps": 150, "width": 256, "height": 256})
    job_id = long.json()["id"]
    wait_job(client.get, job_id, until=lambda job: job["step"] >= 1)
    client.delete(f"/v1/jobs/{job_id}")
    ended = wait_job(client.get, job_id)
    assert ended["status"] == "cancelled"
    assert ended["step"] < 150


def test_compatible_queued_jobs_run_as_one_batch(make_client, tiny_models):
    """Jobs queued behind a running one are claimed together and denoised as one batch; an incompatible job and a job
    cancelled while queued do not join it."""
    model = str(tiny_models["sd1"])
    client = make_client(
        models=(model,), default_model=model, engine_factory=DEFAULT_ENGINE_FACTORY, engine=EngineOptions(device="cpu")
    )
    blocker = client.post("/v1/jobs", json={"prompt": "busy", "num_inference_steps": 60, "width": 192, "height": 192})
    wait_job(client.get, blocker.json()["id"], until=lambda job: job["status"] == "running")
    common = {"num_inference_steps": 3, "sampler": "Euler"}
    ids = [client.post("/v1/jobs", json={"prompt": f"shape {i}", "seed": i, **common}).json()["id"] for i in range(4)]
    other = client.post("/v1/jobs", json={"prompt": "other", "num_inference_steps": 2}).json()["id"]
    client.delete(f"/v1/jobs/{ids[3]}")  # cancelled while queued: never claimed
    jobs = [wait_job(client.get, job_id) for job_id in [*ids, other]]
    assert [job["status"] for job in jobs] == ["succeeded"] * 3 + ["cancelled", "succeeded"]
    assert [job["timings"].get("batch_images") for job in jobs[:3]] == [3, 3, 3]
    assert "batch_images" not in jobs[4]["timings"]
    for i, job in enumerate(jobs[:3]):
        assert job["seeds"] == [i]
        assert f"Seed: {i}," in job["infotexts"][0]
        assert job["infotexts"][0].startswith(f"shape {i}")
