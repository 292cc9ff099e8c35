"""The local hub mirror, driven by the real huggingface_hub client (and diffusers on top of it)."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from support.hub_mirror import HubMirror, RepoListing


def _same_tree(left, right) -> bool:
    left_files = sorted(p.relative_to(left).as_posix() for p in left.rglob("*") if p.is_file())
    right_files = sorted(p.relative_to(right).as_posix() for p in right.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(left, right, left_files, shallow=False)
    return left_files == right_files and not mismatch and not errors


def test_snapshot_download_round_trips_byte_identical(tmp_path, tiny_models, hub_online):
    hub_online.clear_requests()
    folder = Path(snapshot_download("imagegen-test/tiny-sd1", endpoint=hub_online.url, cache_dir=tmp_path))
    assert _same_tree(folder, tiny_models["sd1"])
    assert folder.name == hub_online.commit_sha("imagegen-test/tiny-sd1")
    methods_and_routes = {(m, p.split("?")[0].split("/resolve/")[0]) for m, p in hub_online.calls}
    assert ("GET", "/api/models/imagegen-test/tiny-sd1/revision/main") in methods_and_routes
    assert ("GET", "/imagegen-test/tiny-sd1") in methods_and_routes

    # A second call finds everything cached at that commit and downloads no file again.
    hub_online.clear_requests()
    snapshot_download("imagegen-test/tiny-sd1", endpoint=hub_online.url, cache_dir=tmp_path)
    assert not [p for m, p in hub_online.calls if m == "GET" and "/resolve/" in p]


def test_hf_hub_download_and_missing_entries(tmp_path, tiny_models, hub_online):
    path = hf_hub_download("imagegen-test/tiny-sd2", "unet/config.json", endpoint=hub_online.url, cache_dir=tmp_path)
    assert Path(path).read_bytes() == (tiny_models["sd2"] / "unet" / "config.json").read_bytes()
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("imagegen-test/tiny-sd2", "nope.json", endpoint=hub_online.url, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("imagegen-test/tiny-sd2", "unet/config.json", revision="v9", endpoint=hub_online.url)


def test_missing_repo_raises_repository_not_found(tmp_path, hub_online):
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("imagegen-test/does-not-exist", endpoint=hub_online.url, cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub_online.url).model_info("imagegen-test/does-not-exist")


def test_list_models_filters_and_sorts_by_downloads(tmp_path, hub_online):
    listings = {
        "acme/sd-small": RepoListing(downloads=10),
        "acme/sd-big": RepoListing(downloads=500, likes=3),
        "acme/SD-mid": RepoListing(downloads=100),
        "acme/sd-llm": RepoListing(downloads=900, pipeline_tag="text-generation"),
        "other/photo": RepoListing(downloads=1000),
    }
    with HubMirror({}, listings=listings) as mirror:
        api = HfApi(endpoint=mirror.url)
        found = list(api.list_models(search="sd-", pipeline_tag="text-to-image", sort="downloads", limit=10))
        assert [m.id for m in found] == ["acme/sd-big", "acme/SD-mid", "acme/sd-small"]
        assert [m.downloads for m in found] == [500, 100, 10]
        assert (found[0].likes, found[0].pipeline_tag, found[0].library_name) == (3, "text-to-image", "diffusers")
        assert [m.id for m in api.list_models(sort="downloads", limit=2)] == ["other/photo", "acme/sd-llm"]
        assert mirror.requests[0].startswith("/api/models?")


def test_tiny_models_are_listed_with_their_pipeline_tag(hub_online):
    rows = list(HfApi(endpoint=hub_online.url).list_models(search="imagegen-test", sort="downloads", limit=10))
    assert [r.id for r in rows] == [
        "imagegen-test/tiny-sd1",
        "imagegen-test/tiny-sdxl-base",
        "imagegen-test/tiny-sdxl-refiner",
        "imagegen-test/tiny-sd2",
    ]
    assert {r.id: r.pipeline_tag for r in rows}["imagegen-test/tiny-sdxl-refiner"] == "image-to-image"
    assert "diffusers:StableDiffusionXLPipeline" in {r.id: r.tags for r in rows}["imagegen-test/tiny-sdxl-base"]


def test_offline_by_default_blocks_requests(tmp_path, hub_mirror):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    served = len(hub_mirror.requests)
    with pytest.raises(OfflineModeIsEnabled):
        HfApi(endpoint=hub_mirror.url).model_info("imagegen-test/tiny-sd1")
    assert len(hub_mirror.requests) == served


def test_hf_home_is_a_temporary_folder():
    from huggingface_hub import constants

    assert "imagegen-tests-home-" in os.environ["HF_HOME"]
    assert constants.HF_HUB_CACHE.startswith(os.environ["HF_HOME"])


def test_diffusers_loads_a_hub_id_through_the_mirror(tmp_path, hub_online):
    from diffusers import DiffusionPipeline

    hub_online.clear_requests()
    pipe = DiffusionPipeline.from_pretrained("imagegen-test/tiny-sd2", cache_dir=tmp_path)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert any("/imagegen-test/tiny-sd2/resolve/" in p for p in hub_online.requests)
