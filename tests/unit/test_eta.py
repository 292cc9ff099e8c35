"""DDIM's ``eta``: validated on the request, passed to diffusers, written to and read from the infotext as A1111's
``Eta DDIM``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imagegen import GenerationRequest, InvalidRequest
from imagegen.metadata import Infotext, format_infotext, parse_infotext, request_fields_from_infotext


@pytest.mark.parametrize("eta", [0, 0.0, 0.25, 1, 1.0])
def test_ddim_takes_eta_from_0_to_1(eta: float) -> None:
    assert GenerationRequest(sampler="DDIM", eta=eta).eta == eta
    # The diffusers class name means the same sampler.
    assert GenerationRequest(sampler="DDIMScheduler", eta=eta).eta == eta


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"sampler": "DDIM", "eta": 1.5}, "must be in [0.0, 1.0]"),
        ({"sampler": "DDIM", "eta": -0.1}, "must be in [0.0, 1.0]"),
        ({"sampler": "DDIM", "eta": math.nan}, "must be in [0.0, 1.0]"),
        ({"sampler": "DDIM", "eta": True}, "must be a number"),
        ({"sampler": "DDIM", "eta": "1"}, "must be a number"),
        ({"eta": 0.5}, "only the DDIM sampler uses eta"),  # the model's own scheduler: maybe not DDIM
        ({"sampler": "Euler a", "eta": 1.0}, "only the DDIM sampler uses eta"),
        ({"sampler": "DPM++ 2M", "eta": 0.0}, "only the DDIM sampler uses eta"),
    ],
)
def test_bad_eta_is_refused_naming_eta(fields: dict, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        GenerationRequest(**fields)
    assert exc.value.field == "eta"
    assert fragment in exc.value.message


def test_no_eta_is_the_default_everywhere() -> None:
    assert GenerationRequest().eta is None
    assert GenerationRequest(sampler="Euler a").eta is None


def _infotext(sampler: str, **extra: str) -> str:
    return format_infotext(
        Infotext(prompt="p", steps=3, sampler=sampler, cfg_scale=7.0, seed=1, width=64, height=64, extra=extra)
    )


def test_eta_ddim_in_an_infotext_becomes_eta() -> None:
    text = _infotext("DDIM", **{"Eta DDIM": "0.5"})
    assert "Eta DDIM: 0.5" in text
    fields = request_fields_from_infotext(text)
    assert fields["eta"] == 0.5
    assert GenerationRequest(**fields).eta == 0.5
    # Only with DDIM (A1111 writes it for DDIM only), and only when it reads as a number.
    assert "eta" not in request_fields_from_infotext(_infotext("Euler a", **{"Eta DDIM": "0.5"}))
    assert "eta" not in request_fields_from_infotext(_infotext("DDIM", **{"Eta DDIM": "lots"}))
    assert "eta" not in request_fields_from_infotext(_infotext("DDIM"))


def test_engine_honours_ddim_eta_and_records_it(tiny_models) -> None:
    from imagegen.engine import Engine

    engine = Engine(device="cpu", max_loaded=1)
    base = {"prompt": "a cat", "model": str(tiny_models["sd1"]), "num_inference_steps": 3, "seed": 7}

    def run(**fields: object):
        return engine.generate(GenerationRequest(**base, sampler="DDIM", **fields))

    plain, noisy, again = run(), run(eta=1.0), run(eta=1.0)
    pixels = [np.asarray(result.images[0], dtype=np.int16) for result in (plain, noisy, again)]
    assert np.abs(pixels[0] - pixels[1]).max() > 0  # eta 1 draws fresh noise at every step
    assert np.array_equal(pixels[1], pixels[2])  # from the seeded generator: reproducible
    assert parse_infotext(noisy.infotexts[0]).extra.get("Eta DDIM") == "1"
    assert "Eta DDIM" not in plain.infotexts[0]  # 0, A1111's default, is not written
    assert noisy.effective.eta == 1.0
    # The infotext alone regenerates the image.
    fields = {**request_fields_from_infotext(noisy.infotexts[0]), "model": base["model"]}
    replay = engine.generate(GenerationRequest(**fields))
    assert np.array_equal(np.asarray(replay.images[0], dtype=np.int16), pixels[1])
