"""The model-dependent request rules (imagegen.rules) and the engine options (imagegen.options), without any model."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from imagegen import GenerationRequest, InvalidRequest
from imagegen.loading import Family
from imagegen.options import EngineOptions, Offload
from imagegen.rules import check_models, effective_eta
from support.model_info import model_info

SD1 = model_info("sd1", Family.SD1)
SDXL = model_info("base", Family.SDXL)
REFINER = model_info("refiner", Family.SDXL_REFINER, "DDIMScheduler")
IMAGE = Image.new("RGB", (64, 64))


def test_a_refiner_continues_an_sdxl_base_only():
    check_models(GenerationRequest(), SDXL, REFINER)
    check_models(GenerationRequest(), SD1, None)
    with pytest.raises(InvalidRequest) as exc:
        check_models(GenerationRequest(), SD1, REFINER)
    assert exc.value.field == "refiner"
    assert exc.value.message == "a refiner continues an SDXL base's latents, but sd1 is sd1"
    with pytest.raises(InvalidRequest) as exc:
        check_models(GenerationRequest(), SDXL, SDXL)
    assert exc.value.field == "refiner"
    assert exc.value.message == "base is a sdxl model, not an SDXL refiner"


def test_a_refiner_alone_only_refines_an_image():
    with pytest.raises(InvalidRequest) as exc:
        check_models(GenerationRequest(), REFINER, None)
    assert exc.value.field == "model"
    assert exc.value.message == (
        "refiner is an SDXL refiner, which only refines images: give an init image, "
        "or use it as the refiner of an SDXL base"
    )
    check_models(GenerationRequest(init_image=IMAGE), REFINER, None)
    # The refiner-as-model check comes first, even when a refiner is given too.
    with pytest.raises(InvalidRequest) as exc:
        check_models(GenerationRequest(), REFINER, REFINER)
    assert exc.value.field == "model"


def test_eta_of_the_models_own_sampler():
    # No sampler named: the model's scheduler decides (SD1's Euler has no noise, the refiner's DDIM has).
    assert effective_eta(GenerationRequest(eta=0.5), SD1) is None
    assert effective_eta(GenerationRequest(), SD1) is None
    assert effective_eta(GenerationRequest(eta=0.5), REFINER) == 0.5
    assert effective_eta(GenerationRequest(), REFINER) is None
    sde = model_info("sde", Family.SD1, "DPMSolverSDEScheduler")
    with pytest.raises(InvalidRequest) as exc:
        effective_eta(GenerationRequest(eta=0.5), sde)
    assert exc.value.field == "eta"
    assert "sde's own sampler (DPMSolverSDEScheduler)" in exc.value.message
    # A named sampler wins over the model's own.
    assert effective_eta(GenerationRequest(sampler="DDIM", eta=0.5), SD1) == 0.5
    assert effective_eta(GenerationRequest(sampler="Euler", eta=0.5), REFINER) is None


def test_the_refiner_runs_the_same_eta_and_is_checked_too():
    fixed = model_info("fixed-refiner", Family.SDXL_REFINER, "DPMSolverSDEScheduler")
    # The base (Euler) drops the eta, but the refiner's own sampler cannot take 0.5.
    with pytest.raises(InvalidRequest) as exc:
        effective_eta(GenerationRequest(eta=0.5), SDXL, fixed)
    assert "fixed-refiner's own sampler" in exc.value.message
    # A named sampler is what the refiner runs too: DDIM takes 0.5 there, whatever the refiner's own sampler.
    assert effective_eta(GenerationRequest(sampler="DDIM", eta=0.5), SDXL, fixed) == 0.5
    # What the base runs with is the base's answer.
    assert effective_eta(GenerationRequest(eta=0.5), SDXL, REFINER) is None
    assert effective_eta(GenerationRequest(eta=1.0), SDXL, fixed) is None


def test_engine_options_check_their_values():
    options = EngineOptions(offload="model", models_dir="models")  # type: ignore[arg-type]
    assert options.offload is Offload.MODEL
    assert options.models_dir == Path("models")
    assert EngineOptions().offload is Offload.NONE
    assert EngineOptions(max_loaded=1).max_loaded == 1
    with pytest.raises(InvalidRequest) as exc:
        EngineOptions(offload="cpu")  # type: ignore[arg-type]
    assert exc.value.field == "offload"
    assert exc.value.message == "must be one of none, model, sequential, got 'cpu'"
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidRequest) as exc:
            EngineOptions(max_loaded=bad)  # type: ignore[arg-type]
        assert exc.value.field == "max_loaded"
        assert f"must be an integer of at least 1, got {bad!r}" == exc.value.message
    assert Offload.parse(Offload.SEQUENTIAL) is Offload.SEQUENTIAL
    assert Offload.parse("none") is Offload.NONE


def test_threads_are_a_positive_count_or_unset():
    assert EngineOptions().threads is None
    assert EngineOptions(threads=3).threads == 3
    for bad in (0, -2, True, 2.5):
        with pytest.raises(InvalidRequest) as exc:
            EngineOptions(threads=bad)  # type: ignore[arg-type]
        assert (exc.value.field, exc.value.message) == ("threads", f"must be an integer of at least 1, got {bad!r}")


def test_server_workers_leave_the_api_process_a_core():
    from imagegen.server.jobs.worker import worker_threads

    assert worker_threads(1, 2) == 1  # this machine: one for the API process, one for the worker
    assert worker_threads(1, 16) == 15
    assert worker_threads(2, 16) == 7  # two workers share the rest
    assert worker_threads(4, 4) == 1  # never below one
    assert worker_threads(1, 1) == 1
