"""Sampler names -> diffusers schedulers: parsing, building on real SD configs, reverse mapping, listings."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from importlib.resources import files

import diffusers
import pytest
import torch

from imagegen import GenerationRequest
from imagegen.errors import InvalidRequest
from imagegen.samplers import (
    _SCHEDULER_CLASSES,
    SamplerChoice,
    ScheduleType,
    build_scheduler,
    diffusers_base,
    list_samplers,
    list_schedule_types,
    parse_sampler,
    sampler_for_scheduler,
)

# The full-size reference configs imagegen ships (same files as ../shared/model-configs).
CONFIGS = files("imagegen") / "configs"

# diffusers' schedulers hand torch tensors to numpy, which numpy 2 flags on every call (~100k times here, slowing the
# run down): a diffusers/torch matter, not ours.
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
]

A1111_NAMES = (
    "Euler a",
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM++ 2S a",
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 3M SDE",
    "DDIM",
    "PLMS",
    "UniPC",
    "LCM",
    "DDPM",
)
A = ScheduleType.AUTOMATIC
K = ScheduleType.KARRAS
E = ScheduleType.EXPONENTIAL
SIGMA_FLAGS = {K: "use_karras_sigmas", E: "use_exponential_sigmas", ScheduleType.BETA: "use_beta_sigmas"}


def load_config(name: str) -> dict:
    return json.loads((CONFIGS / name / "scheduler" / "scheduler_config.json").read_text())


def supported_types(name: str) -> list[ScheduleType]:
    return [t for t in ScheduleType if _can_parse(name, t)]


def _can_parse(name: str, schedule_type: ScheduleType) -> bool:
    try:
        parse_sampler(name, schedule_type.value)
    except InvalidRequest:
        return False
    return True


def public_config(scheduler: diffusers.SchedulerMixin) -> dict:
    return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}


# --- parsing -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", A1111_NAMES)
def test_every_a1111_name_parses_to_a_diffusers_scheduler(name):
    choice = parse_sampler(name)
    assert choice is not None
    assert choice.name == name
    assert choice.schedule_type is A
    assert issubclass(getattr(diffusers, choice.scheduler_class), diffusers.SchedulerMixin)


@pytest.mark.parametrize("spelling", ["dpm++ 2m", "  DPM++   2M ", "Dpm++\t2m", "DPM++ 2M"])
def test_names_are_case_and_whitespace_insensitive(spelling):
    choice = parse_sampler(spelling, " karras ")
    assert choice is not None
    assert (choice.name, choice.schedule_type) == ("DPM++ 2M", K)


def test_supported_schedule_types_per_sampler():
    everything = list(ScheduleType)
    sigma_only = [A, K, E, ScheduleType.BETA]
    spacing_only = [A, ScheduleType.UNIFORM, ScheduleType.SGM_UNIFORM]
    expected = {
        **dict.fromkeys(["Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ SDE"], everything),
        **dict.fromkeys(["DPM++ 2M", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "UniPC"], everything),
        "DPM++ 2S a": sigma_only,
        **dict.fromkeys(["Euler a", "DDIM", "PLMS", "DDPM"], spacing_only),
        "LCM": [A],
    }
    assert {name: supported_types(name) for name in A1111_NAMES} == expected


def test_schedule_type_accepts_the_enum_and_a1111_internal_names():
    assert parse_sampler("Euler", ScheduleType.SGM_UNIFORM).schedule_type is ScheduleType.SGM_UNIFORM
    assert parse_sampler("Euler", "sgm_uniform").schedule_type is ScheduleType.SGM_UNIFORM
    assert parse_sampler("Euler", "SGMUniform").schedule_type is ScheduleType.SGM_UNIFORM
    assert parse_sampler("Euler", "").schedule_type is A


@pytest.mark.parametrize(
    ("given", "name", "schedule_type"),
    [
        ("DPM++ 2M Karras", "DPM++ 2M", K),
        ("DPM++ SDE Karras", "DPM++ SDE", K),
        ("LMS Karras", "LMS", K),
        ("DPM2 Karras", "DPM2", K),
        ("DPM2 a Karras", "DPM2 a", K),
        ("DPM++ 2S a Karras", "DPM++ 2S a", K),
        ("DPM++ 2M SDE Karras", "DPM++ 2M SDE", K),
        ("DPM++ 2M SDE Exponential", "DPM++ 2M SDE", E),
        ("DPM++ 2M SDE Heun Karras", "DPM++ 2M SDE Heun", K),
        ("DPM++ 2M SDE Heun Exponential", "DPM++ 2M SDE Heun", E),
        ("DPM++ 3M SDE Karras", "DPM++ 3M SDE", K),
        ("dpm++ 3m sde  exponential", "DPM++ 3M SDE", E),
        ("Euler SGM Uniform", "Euler", ScheduleType.SGM_UNIFORM),
        ("Euler Uniform", "Euler", ScheduleType.UNIFORM),
        ("Euler sgm_uniform", "Euler", ScheduleType.SGM_UNIFORM),
        ("UniPC Beta", "UniPC", ScheduleType.BETA),
        ("DPMSolverMultistepScheduler Karras", "DPMSolverMultistepScheduler", K),
    ],
)
def test_legacy_combined_names_are_split(given, name, schedule_type):
    choice = parse_sampler(given)
    assert (choice.name, choice.schedule_type) == (name, schedule_type)


def test_combined_name_with_matching_or_automatic_schedule_type_is_accepted():
    assert parse_sampler("DPM++ 2M Karras", "Karras").schedule_type is K
    assert parse_sampler("DPM++ 2M Karras", "Automatic").schedule_type is K
    assert parse_sampler("DPM++ 2M Karras", None).schedule_type is K


def test_combined_name_with_conflicting_schedule_type_names_schedule_type():
    with pytest.raises(InvalidRequest) as info:
        parse_sampler("DPM++ 2M Karras", "Exponential")
    assert info.value.field == "schedule_type"
    assert "Karras" in info.value.message
    assert "Exponential" in info.value.message


@pytest.mark.parametrize(
    ("alias", "name", "schedule_type"),
    [
        ("k_euler_a", "Euler a", A),
        ("k_euler_ancestral", "Euler a", A),
        ("K_EULER_A", "Euler a", A),
        ("k_euler", "Euler", A),
        ("k_lms", "LMS", A),
        ("k_heun", "Heun", A),
        ("k_dpm_2", "DPM2", A),
        ("k_dpm_2_a", "DPM2 a", A),
        ("k_dpmpp_2s_a", "DPM++ 2S a", A),
        ("k_dpmpp_2m", "DPM++ 2M", A),
        ("k_dpmpp_sde", "DPM++ SDE", A),
        ("k_dpmpp_2m_sde", "DPM++ 2M SDE", A),
        ("k_dpmpp_3m_sde", "DPM++ 3M SDE", A),
        ("k_lcm", "LCM", A),
        ("ddim", "DDIM", A),
        ("plms", "PLMS", A),
        ("unipc", "UniPC", A),
        # Pre-1.9 aliases of combined names.
        ("k_dpmpp_2m_ka", "DPM++ 2M", K),
        ("k_lms_ka", "LMS", K),
        ("k_dpmpp_sde_ka", "DPM++ SDE", K),
        ("k_dpmpp_3m_sde_exp", "DPM++ 3M SDE", E),
        ("k_dpmpp_2m_sde_heun_exp", "DPM++ 2M SDE Heun", E),
    ],
)
def test_a1111_aliases(alias, name, schedule_type):
    choice = parse_sampler(alias)
    assert (choice.name, choice.schedule_type) == (name, schedule_type)


@pytest.mark.parametrize(
    ("class_name", "expected_name"),
    [
        ("EulerAncestralDiscreteScheduler", "Euler a"),
        ("EulerDiscreteScheduler", "Euler"),
        ("DDIMScheduler", "DDIM"),
        ("eulerdiscretescheduler", "Euler"),
        # These classes' A1111 samplers need extra options, so the bare class keeps its own name.
        ("DPMSolverMultistepScheduler", "DPMSolverMultistepScheduler"),
        ("PNDMScheduler", "PNDMScheduler"),
        ("UniPCMultistepScheduler", "UniPCMultistepScheduler"),
        ("deismultistepscheduler", "DEISMultistepScheduler"),
    ],
)
def test_diffusers_class_names_map_to_the_class_with_default_options(class_name, expected_name):
    choice = parse_sampler(class_name)
    assert choice.name == expected_name
    assert choice.scheduler_class.casefold() == class_name.casefold()
    assert dict(choice.options) == {}


def test_unknown_sampler_names_the_field_and_lists_valid_names():
    with pytest.raises(InvalidRequest) as info:
        parse_sampler("Euler b")
    assert info.value.field == "sampler"
    assert "unknown sampler 'Euler b'" in info.value.message
    for name in A1111_NAMES:
        assert name in info.value.message


def test_a1111_sampler_without_diffusers_equivalent_says_so():
    with pytest.raises(InvalidRequest) as info:
        parse_sampler("DPM adaptive")
    assert info.value.field == "sampler"
    assert "no diffusers equivalent" in info.value.message


def test_error_does_not_echo_a_huge_value():
    with pytest.raises(InvalidRequest) as info:
        parse_sampler("x" * 1_000_000)
    assert len(str(info.value)) < 2_000


def test_unknown_schedule_type_names_the_field_and_lists_valid_types():
    with pytest.raises(InvalidRequest) as info:
        parse_sampler("Euler", "Align Your Steps")
    assert info.value.field == "schedule_type"
    for t in ScheduleType:
        assert t.value in info.value.message


@pytest.mark.parametrize(
    ("sampler", "schedule_type", "valid"),
    [
        ("Euler a", "Karras", "Automatic, Uniform, SGM Uniform"),
        ("Euler a Karras", None, "Automatic, Uniform, SGM Uniform"),
        ("DDIM", "Exponential", "Automatic, Uniform, SGM Uniform"),
        ("LCM", "SGM Uniform", "Automatic"),
        ("DPM++ 2S a", "Uniform", "Automatic, Karras, Exponential, Beta"),
    ],
)
def test_schedule_type_the_class_does_not_support_names_schedule_type(sampler, schedule_type, valid):
    with pytest.raises(InvalidRequest) as info:
        parse_sampler(sampler, schedule_type)
    assert info.value.field == "schedule_type"
    assert info.value.message.endswith(f"valid for it: {valid}")


def test_no_sampler_means_the_models_scheduler():
    assert parse_sampler(None) is None
    assert parse_sampler("") is None
    assert parse_sampler("  ", "Automatic") is None
    choice = parse_sampler(None, "Karras")
    assert choice == SamplerChoice(name="", schedule_type=K, scheduler_class="", options={})
    assert choice.uses_model_scheduler


def test_sampler_choice_is_immutable_and_hashable():
    options = {"solver_order": 2}
    choice = SamplerChoice(name="x", schedule_type=A, scheduler_class="X", options=options)
    options["solver_order"] = 3  # the caller's dict is copied, not shared
    assert choice.options["solver_order"] == 2
    with pytest.raises(TypeError):
        choice.options["solver_order"] = 3  # type: ignore[index]
    assert hash(parse_sampler("DPM++ 2M Karras")) == hash(parse_sampler("k_dpmpp_2m_ka"))
    assert parse_sampler("DPM++ 2M Karras") == parse_sampler("k_dpmpp_2m_ka")


def test_module_import_does_not_load_torch_or_diffusers():
    code = "import sys, imagegen.samplers; print(sorted({'torch', 'diffusers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- the static support table matches what diffusers does -----------------------------------------------------------

# SDXL's betas with 100 training steps: every effect below is the same as with 1000, and KDPM2's constructor (which
# converts every training sigma back to a timestep) is 100x cheaper. "leading" spacing makes each effect visible.
SMALL = {
    **json.loads((CONFIGS / "sdxl-base" / "scheduler" / "scheduler_config.json").read_text()),
    "num_train_timesteps": 100,
}


def _schedule(scheduler: diffusers.SchedulerMixin) -> tuple[list[float], float]:
    """(timesteps, largest sigma or 0) of a 5-step run."""
    scheduler.set_timesteps(5)
    sigmas = getattr(scheduler, "sigmas", None)
    return [float(t) for t in scheduler.timesteps], float(sigmas.max()) if sigmas is not None else 0.0


@pytest.mark.parametrize("class_name", sorted(_SCHEDULER_CLASSES))
def test_support_table_matches_diffusers(class_name):
    support = _SCHEDULER_CLASSES[class_name]
    cls = getattr(diffusers, class_name)
    params = inspect.signature(cls.__init__).parameters

    assert all(flag in params for flag in support.other_flags)
    assert all(flag in params for flag in SIGMA_FLAGS.values()) == support.sigma_schedules
    if support.sigma_schedules:
        plain = cls.from_config(SMALL)
        full_range = float(((1 - plain.alphas_cumprod[-1]) / plain.alphas_cumprod[-1]) ** 0.5)
        plain_timesteps, _ = _schedule(plain)
        for flag in SIGMA_FLAGS.values():
            assert _schedule(cls.from_config(SMALL, **{flag: True}))[0] != plain_timesteps, flag
        # Classes flagged sigma_range_from_spacing lose the top of the sigma range with "leading"; the others do not.
        _, leading_top = _schedule(cls.from_config(SMALL, use_karras_sigmas=True))
        assert (leading_top < 0.95 * full_range) == support.sigma_range_from_spacing
        # Either way, what build_scheduler makes of "Karras" spans the whole range, as in A1111.
        built = build_scheduler(SamplerChoice(name="", schedule_type=K, scheduler_class=class_name), SMALL)
        assert _schedule(built)[1] == pytest.approx(full_range, rel=1e-3)

    if "timestep_spacing" in params:
        spacings = {
            s: _schedule(cls.from_config(SMALL, timestep_spacing=s))[0] for s in ("leading", "linspace", "trailing")
        }
        if support.timestep_spacing:
            assert spacings["leading"] != spacings["linspace"]
            assert spacings["leading"] != spacings["trailing"]
            assert spacings["trailing"][0] == 99
        else:
            # Accepted but ignored (LCM, TCD): offering Uniform / SGM Uniform would be a lie.
            assert spacings["leading"] == spacings["linspace"] == spacings["trailing"]
    else:
        assert not support.timestep_spacing


# --- building on real model configs ---------------------------------------------------------------------------------

# Every sampler x every schedule type it supports, on SD 2.1's v-prediction config and on SD 1.5's. diffusers' KDPM2
# constructors take ~0.25 s each, so DPM2 / DPM2 a get only Automatic and Karras on SD 1.5 (the schedule-type
# settings do not depend on the model; SD 2.1 covers them all).
SLOW_CLASSES = ("DPM2", "DPM2 a")
CASES = [
    pytest.param(model, name, t, id=f"{name}-{t.value}-{model}")
    for model in ("sd21", "sd15")
    for name in A1111_NAMES
    for t in supported_types(name)
    if model == "sd21" or name not in SLOW_CLASSES or t in (A, K)
]


@pytest.fixture(scope="module")
def built() -> Callable[[str, str, ScheduleType], tuple[diffusers.SchedulerMixin, dict]]:
    """Build (model, sampler, schedule type) once per module: KDPM2's constructor alone takes ~0.25 s."""
    cache: dict[tuple[str, str, ScheduleType], tuple[diffusers.SchedulerMixin, dict]] = {}

    def build(model: str, name: str, schedule_type: ScheduleType) -> tuple[diffusers.SchedulerMixin, dict]:
        key = (model, name, schedule_type)
        if key not in cache:
            scheduler = build_scheduler(parse_sampler(name, schedule_type.value), load_config(model))
            cache[key] = scheduler, public_config(scheduler)  # config snapshot before set_timesteps touches it
        return cache[key]

    return build


@pytest.mark.parametrize(("model", "name", "schedule_type"), CASES)
def test_build_every_sampler_and_schedule_type(built, model, name, schedule_type):
    config = load_config(model)
    choice = parse_sampler(name, schedule_type.value)
    scheduler, built_config = built(model, name, schedule_type)

    # imagegen.schedulers replaces a class only where A1111's sampler differs (UniPC's last step): same diffusers name.
    assert diffusers_base(type(scheduler)).__name__ == choice.scheduler_class
    # The model's training schedule and parameterisation survive the class change.
    assert built_config["prediction_type"] == config.get("prediction_type", "epsilon")
    assert built_config["beta_schedule"] == "scaled_linear"
    assert built_config["beta_end"] == pytest.approx(0.012)
    for key, value in choice.options.items():
        assert built_config[key] == value
    for flag_type, flag in SIGMA_FLAGS.items():
        if flag in built_config:
            assert built_config[flag] == (schedule_type is flag_type)
    if schedule_type is ScheduleType.UNIFORM:
        assert built_config["timestep_spacing"] == "linspace"
    if schedule_type is ScheduleType.SGM_UNIFORM:
        assert built_config["timestep_spacing"] == "trailing"
    scheduler.set_timesteps(20)
    assert len(scheduler.timesteps) >= 20

    # Round trip: the reverse mapping names the same sampler and schedule type ...
    got_name, got_type = sampler_for_scheduler(diffusers_base(type(scheduler)).__name__, built_config)
    assert got_name == name
    if schedule_type is not A:
        assert got_type is schedule_type
    # ... and, for Automatic, a concrete type only when it rebuilds exactly the same scheduler.
    assert built(model, got_name, got_type)[1] == built_config


@pytest.mark.parametrize(
    ("model", "expected"),
    [("sd15", ("PLMS", A)), ("sd21", ("DDIM", A)), ("sdxl-base", ("Euler", A))],
)
def test_model_default_scheduler_round_trips(model, expected):
    config = load_config(model)
    scheduler = build_scheduler(None, config)
    assert type(scheduler).__name__ == config["_class_name"]
    assert sampler_for_scheduler(type(scheduler).__name__, scheduler.config) == expected
    rebuilt = build_scheduler(parse_sampler(expected[0], expected[1].value), config)
    assert public_config(rebuilt) == public_config(scheduler)


def test_schedule_type_alone_keeps_the_model_class_when_it_supports_it():
    sdxl = load_config("sdxl-base")
    scheduler = build_scheduler(parse_sampler(None, "Karras"), sdxl)
    assert type(scheduler).__name__ == "EulerDiscreteScheduler"
    assert scheduler.config.use_karras_sigmas is True

    with pytest.raises(InvalidRequest) as info:
        build_scheduler(parse_sampler(None, "Karras"), load_config("sd15"))  # PNDM has no sigma schedules
    assert info.value.field == "schedule_type"
    assert "Automatic, Uniform, SGM Uniform" in info.value.message


def test_requested_schedule_switches_off_the_models_own():
    config = {**diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True).config}
    scheduler = build_scheduler(parse_sampler("DPM++ 2M", "Exponential"), config)
    assert scheduler.config.use_exponential_sigmas is True
    assert scheduler.config.use_karras_sigmas is False
    scheduler.set_timesteps(20)


def test_reverse_mapping_examples():
    dpm = diffusers.DPMSolverMultistepScheduler
    assert sampler_for_scheduler("DPMSolverMultistepScheduler", dpm(use_karras_sigmas=True).config) == ("DPM++ 2M", K)
    sde = dpm(algorithm_type="sde-dpmsolver++", use_exponential_sigmas=True).config
    assert sampler_for_scheduler("DPMSolverMultistepScheduler", sde) == ("DPM++ 2M SDE", E)
    # Settings no A1111 sampler has: the class name, which parse_sampler accepts back.
    odd = dpm(solver_order=3).config
    assert sampler_for_scheduler("DPMSolverMultistepScheduler", odd)[0] == "DPMSolverMultistepScheduler"
    # A raw config without the default keys is read with the class defaults filled in.
    assert sampler_for_scheduler("EulerDiscreteScheduler", {"timestep_spacing": "leading"}) == ("Euler", A)
    assert sampler_for_scheduler("NotAScheduler", {}) == ("NotAScheduler", A)


def test_euler_karras_with_leading_spacing_reports_automatic():
    # Rebuilding "Euler, Karras" would span the full sigma range (linspace): not this config, so say Automatic.
    config = {**load_config("sdxl-base"), "use_karras_sigmas": True}
    scheduler = build_scheduler(None, config)
    name, schedule_type = sampler_for_scheduler(type(scheduler).__name__, scheduler.config)
    assert (name, schedule_type) == ("Euler", A)
    rebuilt = build_scheduler(parse_sampler(name, schedule_type.value), config)
    assert public_config(rebuilt) == public_config(scheduler)


def test_other_diffusers_classes_pass_through():
    config = {**diffusers.EDMEulerScheduler().config, "_class_name": "EDMEulerScheduler"}
    scheduler = build_scheduler(None, config)
    name, schedule_type = sampler_for_scheduler(type(scheduler).__name__, scheduler.config)
    assert (name, schedule_type) == ("EDMEulerScheduler", A)
    assert isinstance(build_scheduler(parse_sampler(name, schedule_type.value), config), diffusers.EDMEulerScheduler)

    choice = parse_sampler("NoSuchScheduler")  # can only be checked once diffusers is loaded
    with pytest.raises(InvalidRequest) as info:
        build_scheduler(choice, load_config("sd15"))
    assert info.value.field == "sampler"


def _sde_run(noise_seed: int | list[int], batch: int) -> torch.Tensor:
    scheduler = build_scheduler(parse_sampler("DPM++ SDE"), load_config("sd15"), noise_seed=noise_seed)
    scheduler.set_timesteps(4)
    sample = torch.ones(batch, 4, 8, 8) * scheduler.init_noise_sigma
    for t in scheduler.timesteps[:3]:
        sample = scheduler.step(torch.zeros_like(sample), t, sample).prev_sample
    return sample


def test_dpmpp_sde_noise_is_seeded_by_noise_seed():
    assert torch.equal(_sde_run(7, 1), _sde_run(7, 1))
    assert not torch.equal(_sde_run(7, 1), _sde_run(8, 1))
    # One Brownian tree per image: image i of a batch matches a single run with seed i.
    batch = _sde_run([7, 8], 2)
    assert torch.allclose(batch[1:], _sde_run(8, 1), atol=1e-6)


# --- listings -------------------------------------------------------------------------------------------------------


def test_list_samplers_has_a1111_shape():
    samplers = list_samplers()
    assert [s["name"] for s in samplers] == list(A1111_NAMES)
    for item in samplers:
        assert set(item) == {"name", "aliases", "options"}
        assert all(isinstance(alias, str) for alias in item["aliases"])
        assert all(isinstance(v, str) for v in item["options"].values())
        for alias in item["aliases"]:
            assert parse_sampler(alias).name == item["name"]
        listed = item["options"]["schedule_types"].split(", ")
        assert listed == [t.value for t in supported_types(item["name"])]
    dpm = next(s for s in samplers if s["name"] == "DPM++ 2M")
    assert dpm["options"]["scheduler_class"] == "DPMSolverMultistepScheduler"
    assert dpm["options"]["solver_order"] == "2"


def test_list_schedule_types_has_a1111_shape():
    types = list_schedule_types()
    assert {t["label"] for t in types} == {t.value for t in ScheduleType}
    for item in types:
        assert set(item) == {"name", "label", "aliases", "default_rho", "need_inner_model"}
        assert parse_sampler("Euler", item["name"]).schedule_type.value == item["label"]
    karras = next(t for t in types if t["name"] == "karras")
    assert karras["default_rho"] == 7.0
    assert next(t for t in types if t["name"] == "sgm_uniform")["aliases"] == ["SGMUniform"]


@pytest.mark.parametrize("name", ["DDIM", "DDPM"])
def test_latent_models_never_clip_x0_unless_their_config_says_so(name):
    # DDIM's and DDPM's own default clips the predicted x_0 to [-1, 1], which ruins latents (they reach about ±4).
    silent = {"_class_name": "EulerDiscreteScheduler", "prediction_type": "epsilon"}
    assert build_scheduler(parse_sampler(name), silent).config.clip_sample is False
    assert build_scheduler(parse_sampler(name), {**silent, "clip_sample": True}).config.clip_sample is True
    # A class without the setting gets none.
    assert "clip_sample" not in build_scheduler(parse_sampler("Euler"), silent).config


def test_unipc_is_built_as_imagegens_correction():
    # What the correction does is tested in tests/unit/test_schedulers.py; here, that UniPC gets it.
    from imagegen.schedulers import UniPCScheduler

    for config in (load_config("sd15"), load_config("sdxl-base")):
        assert type(build_scheduler(parse_sampler("UniPC"), config)) is UniPCScheduler
        assert type(build_scheduler(None, {**config, "_class_name": "UniPCMultistepScheduler"})) is UniPCScheduler


# --------------------------------------------------------------------------------------------------------------------
# Classes outside the table, errors, eta variants (each pins a behaviour a mutation once changed unnoticed).


def test_a_class_outside_the_table_is_found_case_insensitively_and_its_schedules_read_from_its_signature():
    choice = parse_sampler("dpmsolverMultistepInverseScheduler", "Karras")
    assert (choice.name, choice.scheduler_class, choice.schedule_type) == (
        "dpmsolverMultistepInverseScheduler",
        "dpmsolverMultistepInverseScheduler",
        ScheduleType.KARRAS,
    )
    scheduler = build_scheduler(choice, load_config("sd15"))
    assert type(scheduler) is diffusers.DPMSolverMultistepInverseScheduler
    assert scheduler.config.use_karras_sigmas is True
    # Its signature has the sigma schedules, the spacing and use_flow_sigmas (switched off), not use_lu_lambdas.
    assert scheduler.config.use_flow_sigmas is False
    assert scheduler.config.use_exponential_sigmas is False
    uniform = build_scheduler(parse_sampler("DPMSolverMultistepInverseScheduler", "Uniform"), load_config("sd15"))
    assert uniform.config.timestep_spacing == "linspace"
    # A class without sigma schedules or spacing takes Automatic only.
    assert parse_sampler("EDMEulerScheduler").schedule_type is A
    with pytest.raises(InvalidRequest) as info:
        build_scheduler(parse_sampler("EDMEulerScheduler", "Karras"), load_config("sd15"))
    assert info.value.field == "schedule_type"
    assert "valid for it: Automatic" in info.value.message


def test_a_schedule_type_the_models_own_class_lacks_is_named_with_that_class():
    with pytest.raises(InvalidRequest) as info:
        build_scheduler(parse_sampler(None, "Karras"), load_config("sd15"))  # SD 1.5's own: PNDM
    assert info.value.message == (
        "schedule type 'Karras' is not supported by the model's own sampler (PNDMScheduler); "
        "valid for it: Automatic, Uniform, SGM Uniform"
    )


def test_a_models_scheduler_config_that_names_no_scheduler_is_a_load_error():
    from imagegen.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="has no _class_name, so its scheduler is unknown"):
        build_scheduler(None, {"prediction_type": "epsilon"})
    with pytest.raises(ModelLoadError, match="names 'NotAScheduler', which is not a diffusers scheduler"):
        build_scheduler(None, {"_class_name": "NotAScheduler"})
    with pytest.raises(InvalidRequest) as info:
        build_scheduler(parse_sampler("NoSuchScheduler"), load_config("sd15"))
    assert info.value.message.startswith(
        "unknown sampler 'NoSuchScheduler' (diffusers has no scheduler class of that name); valid: Euler a, Euler, LMS"
    )


def test_error_messages_quote_long_values_shortened():
    exactly = "x" * 80
    with pytest.raises(InvalidRequest) as info:
        parse_sampler(exactly)
    assert f"unknown sampler '{exactly}';" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        parse_sampler(exactly + "y")
    assert f"unknown sampler '{exactly}...';" in info.value.message
    assert info.value.message.endswith(
        "(a schedule type may be appended, as in 'DPM++ 2M Karras'), "
        "or a diffusers scheduler class name such as 'DPMSolverMultistepScheduler'"
    )
    with pytest.raises(InvalidRequest):
        parse_sampler("nonsense_ka")  # an old alias suffix on no known sampler


def test_eta_variants_build_the_expected_classes():
    sd15 = load_config("sd15")
    # eta at the sampler's default, or on a sampler without noise: diffusers' own class, untouched.
    assert type(build_scheduler(parse_sampler("Euler a"), sd15, eta=1.0)) is diffusers.EulerAncestralDiscreteScheduler
    assert type(build_scheduler(parse_sampler("Euler"), sd15, eta=0.3)) is diffusers.EulerDiscreteScheduler
    assert type(build_scheduler(parse_sampler("DDIM"), sd15, eta=0.5)) is diffusers.DDIMScheduler  # a call argument
    half = build_scheduler(parse_sampler("Euler a"), sd15, eta=0.5)
    assert diffusers_base(type(half)) is diffusers.EulerAncestralDiscreteScheduler
    assert half.eta == 0.5
    assert type(build_scheduler(parse_sampler("DPM2 a"), sd15, eta=0.0)) is diffusers.KDPM2DiscreteScheduler
    # The model's own SDE solver at eta 0 becomes its noiseless twin, read from the model's config.
    sde_model = {**sd15, "_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}
    assert build_scheduler(None, sde_model, eta=0.0).config.algorithm_type == "dpmsolver++"
    assert build_scheduler(None, sde_model, eta=1.0).config.algorithm_type == "sde-dpmsolver++"
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest(sampler="DPM2 a", eta=0.25)
    assert info.value.message == (
        "sampler 'DPM2 a' can run with eta 0 or 1 only (diffusers has no other noise scale for it), got 0.25"
    )


def test_sampler_for_scheduler_canonicalises_the_class_name():
    # Euler's class defaults space timesteps "linspace": A1111's Uniform.
    assert sampler_for_scheduler("eulerdiscretescheduler", {}) == ("Euler", ScheduleType.UNIFORM)
    assert sampler_for_scheduler("", {}) == ("", A)
    # Class defaults count: DPMSolverMultistep's own defaults are exactly DPM++ 2M's options.
    assert sampler_for_scheduler("DPMSolverMultistepScheduler", {})[0] == "DPM++ 2M"


def test_choices_hash_by_value_and_list_samplers_options_are_text():
    a, b = parse_sampler("DPM++ 2M", "Karras"), parse_sampler("DPM++ 2M", "Karras")
    assert hash(a) == hash(b)
    assert hash(a) != hash(parse_sampler("DPM++ 2M", "Exponential"))
    options = {entry["name"]: entry["options"] for entry in list_samplers()}
    assert options["DPM++ 2M"]["algorithm_type"] == "dpmsolver++"  # text as it is
    assert options["DPM++ 2M"]["solver_order"] == "2"  # other values as JSON
    assert options["DPM++ 2S a"]["lower_order_final"] == "true"
