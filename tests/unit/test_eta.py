"""A1111's ``eta``: DDIM's noise scale (default 0) and the ancestral/SDE samplers' (default 1, 0 = no fresh noise).

Honoured where imagegen can (any value for DDIM and Euler a; 0 or 1 where 0 is exactly a deterministic twin), refused
naming ``eta`` where it cannot, dropped silently for samplers without noise (as A1111 ignores it there), written to and
read from the infotext under A1111's keys (``Eta DDIM``, ``Eta``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from imagegen import GenerationRequest, InvalidRequest
from imagegen.metadata import Infotext, format_infotext, parse_infotext, request_fields_from_infotext
from imagegen.samplers import eta_rule, parse_sampler


@pytest.mark.parametrize("eta", [0, 0.0, 0.25, 1, 1.0])
@pytest.mark.parametrize("sampler", ["DDIM", "DDIMScheduler", "Euler a", "k_euler_a"])
def test_ddim_and_euler_a_take_any_eta_from_0_to_1(sampler: str, eta: float) -> None:
    assert GenerationRequest(sampler=sampler, eta=eta).eta == eta


@pytest.mark.parametrize(
    ("sampler", "allowed", "refused"),
    [
        ("DPM2 a", (0.0, 1.0), (0.5,)),
        ("DPM++ 2S a", (0.0, 1.0), (0.5,)),
        ("DPM++ 2M SDE", (0.0, 1.0), (0.3,)),
        ("DPM++ 2M SDE Heun", (0.0, 1.0), (0.3,)),
        ("DPM++ 3M SDE", (0.0, 1.0), (0.7,)),
        ("DPM++ SDE", (1.0,), (0.0, 0.5)),
    ],
)
def test_samplers_with_a_fixed_noise_take_only_the_values_they_can_honour(sampler, allowed, refused) -> None:
    for eta in allowed:
        assert GenerationRequest(sampler=sampler, eta=eta).eta == eta
    for eta in refused:
        with pytest.raises(InvalidRequest) as exc:
            GenerationRequest(sampler=sampler, eta=eta)
        assert exc.value.field == "eta"
        assert sampler in exc.value.message
        assert "only" in exc.value.message


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"sampler": "DDIM", "eta": 1.5}, "must be in [0.0, 1.0]"),
        ({"sampler": "DDIM", "eta": -0.1}, "must be in [0.0, 1.0]"),
        ({"sampler": "DDIM", "eta": math.nan}, "must be in [0.0, 1.0]"),
        ({"sampler": "DDIM", "eta": True}, "must be a number"),
        ({"sampler": "DDIM", "eta": "1"}, "must be a number"),
        # The range holds whatever the sampler, even one that ignores eta.
        ({"sampler": "Euler", "eta": 2.0}, "must be in [0.0, 1.0]"),
        ({"eta": -1.0}, "must be in [0.0, 1.0]"),
    ],
)
def test_bad_eta_is_refused_naming_eta(fields: dict, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        GenerationRequest(**fields)
    assert exc.value.field == "eta"
    assert fragment in exc.value.message


def test_eta_on_a_sampler_without_noise_or_the_models_own_is_accepted_at_request_time() -> None:
    # A no-op value is accepted silently (the engine drops it); the model's own sampler is only known with the model.
    assert GenerationRequest(sampler="Euler", eta=0.4).eta == 0.4
    assert GenerationRequest(sampler="DPM++ 2M", eta=0.0).eta == 0.0
    assert GenerationRequest(eta=0.5).eta == 0.5
    assert GenerationRequest().eta is None


def test_eta_rules_by_sampler_and_by_the_models_own_scheduler() -> None:
    assert eta_rule(parse_sampler("DDIM"), {}).infotext_key == "Eta DDIM"
    assert eta_rule(parse_sampler("DDIM"), {}).pipeline_argument
    assert eta_rule(parse_sampler("Euler a"), {}).infotext_key == "Eta"
    assert not eta_rule(parse_sampler("Euler a"), {}).pipeline_argument
    assert eta_rule(parse_sampler("Euler"), {}) is None
    assert eta_rule(parse_sampler("DPM++ 2M"), {}) is None
    # No sampler named: the model's scheduler config decides, algorithm_type included.
    assert eta_rule(None, {"_class_name": "DDIMScheduler"}).default == 0.0
    assert eta_rule(None, {"_class_name": "EulerAncestralDiscreteScheduler"}).default == 1.0
    sde = {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}
    assert eta_rule(None, sde).only == (0.0, 1.0)  # diffusers' noise is on or off, nothing between
    assert eta_rule(parse_sampler("DPM++ SDE"), {}).only == (1.0,)
    assert eta_rule(parse_sampler("Euler a"), {}).only == ()  # any value in [0, 1]
    assert eta_rule(None, {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++"}) is None
    assert eta_rule(parse_sampler(None, "Karras"), {"_class_name": "DDIMScheduler"}).default == 0.0


def _infotext(sampler: str, **extra: str) -> str:
    return format_infotext(
        Infotext(prompt="p", steps=3, sampler=sampler, cfg_scale=7.0, seed=1, width=64, height=64, extra=extra)
    )


def test_eta_in_an_infotext_is_read_under_the_key_a1111_writes_for_the_sampler() -> None:
    text = _infotext("DDIM", **{"Eta DDIM": "0.5"})
    assert "Eta DDIM: 0.5" in text
    fields = request_fields_from_infotext(text)
    assert fields["eta"] == 0.5
    assert GenerationRequest(**fields).eta == 0.5
    assert request_fields_from_infotext(_infotext("Euler a", Eta="0.25"))["eta"] == 0.25
    # The other sampler's key, a sampler without eta, an unknown sampler, or a value that is not a number: no eta.
    assert "eta" not in request_fields_from_infotext(_infotext("Euler a", **{"Eta DDIM": "0.5"}))
    assert "eta" not in request_fields_from_infotext(_infotext("DDIM", Eta="0.5"))
    assert "eta" not in request_fields_from_infotext(_infotext("Euler", Eta="0.5"))
    assert "eta" not in request_fields_from_infotext(_infotext("No Such Sampler", Eta="0.5"))
    assert "eta" not in request_fields_from_infotext(_infotext("DDIM", **{"Eta DDIM": "lots"}))
    assert "eta" not in request_fields_from_infotext(_infotext("DDIM"))


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


def test_engine_honours_ddim_eta_and_records_it(tiny_models) -> None:
    from imagegen.engine import Engine

    engine = Engine(device="cpu", max_loaded=1)
    base = {"prompt": "a cat", "model": str(tiny_models["sd1"]), "num_inference_steps": 3, "seed": 7}

    def run(**fields: object):
        return engine.generate(GenerationRequest(**base, sampler="DDIM", **fields))

    plain, noisy, again = run(), run(eta=1.0), run(eta=1.0)
    assert np.abs(_pixels(plain) - _pixels(noisy)).max() > 0  # eta 1 draws fresh noise at every step
    assert np.array_equal(_pixels(noisy), _pixels(again))  # from the seeded generator: reproducible
    assert parse_infotext(noisy.infotexts[0]).extra.get("Eta DDIM") == "1"
    assert "Eta" not in plain.infotexts[0]  # 0, A1111's default, is not written
    assert noisy.effective.eta == 1.0
    # The infotext alone regenerates the image.
    fields = {**request_fields_from_infotext(noisy.infotexts[0]), "model": base["model"]}
    replay = engine.generate(GenerationRequest(**fields))
    assert np.array_equal(_pixels(replay), _pixels(noisy))


def test_engine_ancestral_eta_0_is_the_deterministic_twin_and_eta_half_differs_from_both(tiny_models) -> None:
    from imagegen.engine import Engine

    engine = Engine(device="cpu", max_loaded=1)
    base = {"prompt": "a cat", "model": str(tiny_models["sd1"]), "num_inference_steps": 4, "seed": 3}

    def run(sampler: str, **fields: object):
        return engine.generate(GenerationRequest(**base, sampler=sampler, **fields))

    # Euler a without its ancestral noise is Euler, bit for bit; eta 1 is diffusers' Euler a, bit for bit.
    assert np.array_equal(_pixels(run("Euler a", eta=0.0)), _pixels(run("Euler")))
    assert np.array_equal(_pixels(run("Euler a", eta=1.0)), _pixels(run("Euler a")))
    half, half_again = run("Euler a", eta=0.5), run("Euler a", eta=0.5)
    assert np.array_equal(_pixels(half), _pixels(half_again))
    assert np.abs(_pixels(half) - _pixels(run("Euler a"))).max() > 0
    assert np.abs(_pixels(half) - _pixels(run("Euler"))).max() > 0
    assert parse_infotext(half.infotexts[0]).extra.get("Eta") == "0.5"
    assert "Eta" not in run("Euler a", eta=1.0).infotexts[0]  # 1, A1111's default for it, is not written
    fields = {**request_fields_from_infotext(half.infotexts[0]), "model": base["model"]}  # only what the PNG lacks
    replay = engine.generate(GenerationRequest(**fields))
    assert np.array_equal(_pixels(replay), _pixels(half))
    # The other twins: DPM2 a -> DPM2, DPM++ 2M SDE -> DPM++ 2M (same schedule type, so the same sigmas).
    assert np.array_equal(_pixels(run("DPM2 a", eta=0.0)), _pixels(run("DPM2")))
    assert np.array_equal(
        _pixels(run("DPM++ 2M SDE", eta=0.0, schedule_type="Karras")),
        _pixels(run("DPM++ 2M", schedule_type="Karras")),
    )


def test_engine_drops_eta_for_a_sampler_without_noise(tiny_models) -> None:
    from imagegen.engine import Engine

    engine = Engine(device="cpu", max_loaded=1)
    base = {"prompt": "a cat", "model": str(tiny_models["sd1"]), "num_inference_steps": 2, "seed": 3}
    with_eta = engine.generate(GenerationRequest(**base, sampler="Euler", eta=0.3))
    without = engine.generate(GenerationRequest(**base, sampler="Euler"))
    assert with_eta.effective.eta is None
    assert "Eta" not in with_eta.infotexts[0]
    assert np.array_equal(_pixels(with_eta), _pixels(without))


def test_engine_checks_eta_against_the_models_own_sampler(tiny_models) -> None:
    from imagegen.engine import Engine

    engine = Engine(device="cpu", max_loaded=1)
    # The tiny SD2 model's own scheduler is DDIM: an eta without a sampler name is DDIM's.
    sd2 = {"prompt": "a cat", "model": str(tiny_models["sd2"]), "num_inference_steps": 2, "seed": 3}
    result = engine.generate(GenerationRequest(**sd2, eta=1.0))
    assert (result.effective.sampler, result.effective.eta) == ("DDIM", 1.0)
    assert parse_infotext(result.infotexts[0]).extra.get("Eta DDIM") == "1"
