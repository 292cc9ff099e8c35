"""Sampler names people use (A1111 labels and aliases, diffusers class names) -> a diffusers scheduler.

A request names a *sampler* ("DPM++ 2M", "k_euler_a", "DPMSolverMultistepScheduler") and, since A1111 1.9, a
separate *schedule type* ("Karras", "SGM Uniform"). Legacy combined names ("DPM++ 2M Karras") are split into the two.

Design:

- :func:`parse_sampler` is pure Python (no torch/diffusers import): it validates names once, at request time, and
  returns a :class:`SamplerChoice`, or ``None`` when the request wants the model's own scheduler unchanged.
- A schedule type without a sampler means "the model's own scheduler class, with this schedule type": the choice has
  ``name == scheduler_class == ""`` (see :attr:`SamplerChoice.uses_model_scheduler`). Whether that class supports the
  schedule type can only be checked once the model is known, in :func:`build_scheduler`.
- :func:`build_scheduler` calls ``from_config`` on the *model's* scheduler config, so betas, ``prediction_type``
  (v-prediction), ``steps_offset`` and friends are kept, and only the sampler's options and the schedule type's
  settings are overridden.
- ``Automatic`` means "whatever the model's config and the scheduler class default to". Note: A1111 instead resolves
  Automatic to a per-sampler default (Karras for DPM++ 2M / DPM++ SDE / DPM++ 2S a / DPM2 / DPM2 a, Exponential for
  the DPM++ 2M/3M SDE family); send that schedule type explicitly to get A1111's behaviour.
- :func:`sampler_for_scheduler` goes back from a scheduler config to a (name, schedule type) pair such that parsing
  that pair and building it on the same model reproduces the same config; that is what infotext needs.

Only samplers with a faithful (or closely approximating, noted below) diffusers scheduler are offered. A1111's
"DPM fast", "DPM adaptive", "Restart" and "DDIM CFG++" have no diffusers equivalent; "DEIS" is not an A1111 sampler
and its diffusers solver differs from ComfyUI's, so it is reachable only by its class name.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING

from imagegen.errors import InvalidRequest, ModelLoadError

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

__all__ = [
    "EtaRule",
    "SamplerChoice",
    "ScheduleType",
    "build_scheduler",
    "eta_rule",
    "list_samplers",
    "list_schedule_types",
    "parse_sampler",
    "sampler_for_scheduler",
]


class ScheduleType(str, Enum):
    """How the noise levels (sigmas) or timesteps of a run are spaced (A1111's "Schedule type")."""

    AUTOMATIC = "Automatic"
    UNIFORM = "Uniform"
    KARRAS = "Karras"
    EXPONENTIAL = "Exponential"
    BETA = "Beta"
    SGM_UNIFORM = "SGM Uniform"


@dataclass(frozen=True, kw_only=True)
class SamplerChoice:
    """A validated sampler request: which diffusers scheduler class, with which options and schedule type.

    ``name`` is the canonical A1111 sampler name ("DPM++ 2M"); for a diffusers class name given as input it is the
    A1111 name when one maps to that class with its default options, else the class name. ``name`` and
    ``scheduler_class`` are both ``""`` when only a schedule type was requested: the model's own scheduler class is
    kept and only its schedule changes.
    """

    name: str
    schedule_type: ScheduleType
    scheduler_class: str
    #: Extra ``from_config`` settings of the sampler itself (e.g. ``algorithm_type``); the schedule type's settings
    #: depend on the scheduler class and are added by :func:`build_scheduler`.
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        # Freeze whatever mapping the caller passed, so a choice can be shared between requests safely.
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def __hash__(self) -> int:
        # The generated hash would fail on the mapping proxy; option values are plain str/int/bool.
        return hash((self.name, self.schedule_type, self.scheduler_class, tuple(sorted(self.options.items()))))

    @property
    def uses_model_scheduler(self) -> bool:
        """True when the model's own scheduler class is kept and only the schedule type is changed."""
        return not self.scheduler_class


# --------------------------------------------------------------------------------------------------------------------
# Static tables. Everything here is immutable; tests check them against diffusers' real behaviour.


@dataclass(frozen=True, kw_only=True)
class _ScheduleInfo:
    type: ScheduleType
    name: str  # A1111's internal name, as /sdapi/v1/schedulers reports it
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0
    need_inner_model: bool = False


# Values mirror A1111's modules/sd_schedulers.py so /sdapi/v1/schedulers answers the same (in ScheduleType's order).
_SCHEDULES: tuple[_ScheduleInfo, ...] = (
    _ScheduleInfo(type=ScheduleType.AUTOMATIC, name="automatic"),
    _ScheduleInfo(type=ScheduleType.UNIFORM, name="uniform", need_inner_model=True),
    _ScheduleInfo(type=ScheduleType.KARRAS, name="karras", default_rho=7.0),
    _ScheduleInfo(type=ScheduleType.EXPONENTIAL, name="exponential"),
    _ScheduleInfo(type=ScheduleType.BETA, name="beta", need_inner_model=True),
    _ScheduleInfo(type=ScheduleType.SGM_UNIFORM, name="sgm_uniform", aliases=("SGMUniform",), need_inner_model=True),
)

# Sigma schedules: diffusers replaces the spaced sigmas by a Karras / exponential / beta schedule between their end
# points. All three match k-diffusion's get_sigmas_karras (rho 7) / get_sigmas_exponential and A1111's beta
# scheduler (alpha = beta = 0.6, interpolated in sigma space), given the same end points (see _Support).
_SIGMA_FLAGS: Mapping[ScheduleType, str] = MappingProxyType(
    {
        ScheduleType.KARRAS: "use_karras_sigmas",
        ScheduleType.EXPONENTIAL: "use_exponential_sigmas",
        ScheduleType.BETA: "use_beta_sigmas",
    }
)
# Timestep spacings. A1111's "Uniform" is k-diffusion's get_sigmas(n): n timesteps evenly from 999 down to 0, which is
# diffusers' "linspace" for the k-diffusion ports (Euler, Heun, ...). The multistep solvers' "linspace" drops t=0 and
# so lands close to "trailing" there. A1111's "SGM Uniform" is linspace(999, 0, n + 1)[:-1], which is diffusers'
# "trailing" up to rounding of the timesteps.
_SPACINGS: Mapping[ScheduleType, str] = MappingProxyType(
    {ScheduleType.UNIFORM: "linspace", ScheduleType.SGM_UNIFORM: "trailing"}
)


@dataclass(frozen=True, kw_only=True)
class _Support:
    """What a diffusers scheduler class actually honours (not merely accepts) in its config."""

    sigma_schedules: bool  # use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas
    timestep_spacing: bool  # set_timesteps follows timestep_spacing
    # The k-diffusion ports take the sigma schedule's end points from the *spaced* timesteps, so with the "leading"
    # spacing of e.g. SDXL's config, Karras would start below sigma_max. A1111 always spans the model's full sigma
    # range, which "linspace" spacing reproduces, so the sigma schedules also set it for these classes.
    sigma_range_from_spacing: bool = False
    # Other schedule switches of the class that would override or clash with an explicitly requested schedule type.
    other_flags: tuple[str, ...] = ()

    @property
    def types(self) -> tuple[ScheduleType, ...]:
        types = [ScheduleType.AUTOMATIC]
        if self.timestep_spacing:
            types += [ScheduleType.UNIFORM, ScheduleType.SGM_UNIFORM]
        if self.sigma_schedules:
            types += [ScheduleType.KARRAS, ScheduleType.EXPONENTIAL, ScheduleType.BETA]
        return tuple(sorted(types, key=_SCHEDULE_ORDER.index))


_SCHEDULE_ORDER: tuple[ScheduleType, ...] = tuple(ScheduleType)

_K_PORT = _Support(sigma_schedules=True, timestep_spacing=True, sigma_range_from_spacing=True)
_SCHEDULER_CLASSES: Mapping[str, _Support] = MappingProxyType(
    {
        "EulerAncestralDiscreteScheduler": _Support(sigma_schedules=False, timestep_spacing=True),
        "EulerDiscreteScheduler": _K_PORT,
        "LMSDiscreteScheduler": _K_PORT,
        "HeunDiscreteScheduler": _K_PORT,
        "KDPM2DiscreteScheduler": _K_PORT,
        "KDPM2AncestralDiscreteScheduler": _K_PORT,
        "DPMSolverSDEScheduler": _K_PORT,
        "DPMSolverMultistepScheduler": _Support(
            sigma_schedules=True, timestep_spacing=True, other_flags=("use_lu_lambdas", "use_flow_sigmas")
        ),
        # Singlestep has no timestep_spacing setting at all.
        "DPMSolverSinglestepScheduler": _Support(
            sigma_schedules=True, timestep_spacing=False, other_flags=("use_flow_sigmas",)
        ),
        "UniPCMultistepScheduler": _Support(
            sigma_schedules=True, timestep_spacing=True, other_flags=("use_flow_sigmas",)
        ),
        "DEISMultistepScheduler": _Support(
            sigma_schedules=True, timestep_spacing=True, other_flags=("use_flow_sigmas",)
        ),
        "SASolverScheduler": _Support(sigma_schedules=True, timestep_spacing=True, other_flags=("use_flow_sigmas",)),
        "DDIMScheduler": _Support(sigma_schedules=False, timestep_spacing=True),
        "PNDMScheduler": _Support(sigma_schedules=False, timestep_spacing=True),
        "DDPMScheduler": _Support(sigma_schedules=False, timestep_spacing=True),
        # LCM and TCD accept timestep_spacing but ignore it: they pick timesteps from their distillation grid.
        "LCMScheduler": _Support(sigma_schedules=False, timestep_spacing=False),
        "TCDScheduler": _Support(sigma_schedules=False, timestep_spacing=False),
    }
)


@dataclass(frozen=True, kw_only=True)
class _Sampler:
    name: str  # canonical A1111 spelling
    aliases: tuple[str, ...]
    scheduler_class: str
    options: tuple[tuple[str, object], ...] = ()


# Order and aliases as A1111 1.10 lists them (the classic order, DDPM last: it is Forge's/ComfyUI's name).
_SAMPLERS: tuple[_Sampler, ...] = (
    # k-diffusion sample_euler_ancestral (eta 1): the same update.
    _Sampler(
        name="Euler a", aliases=("k_euler_a", "k_euler_ancestral"), scheduler_class="EulerAncestralDiscreteScheduler"
    ),
    _Sampler(name="Euler", aliases=("k_euler",), scheduler_class="EulerDiscreteScheduler"),
    # Both use 4th-order linear multistep coefficients integrated numerically.
    _Sampler(name="LMS", aliases=("k_lms",), scheduler_class="LMSDiscreteScheduler"),
    _Sampler(name="Heun", aliases=("k_heun",), scheduler_class="HeunDiscreteScheduler"),
    # ≈: A1111 discards the next-to-last sigma for DPM2 / DPM2 a; diffusers keeps the whole schedule.
    _Sampler(name="DPM2", aliases=("k_dpm_2",), scheduler_class="KDPM2DiscreteScheduler"),
    _Sampler(name="DPM2 a", aliases=("k_dpm_2_a",), scheduler_class="KDPM2AncestralDiscreteScheduler"),
    # ≈ only: k-diffusion's 2S ancestral makes two model calls per step and adds ancestral noise; diffusers'
    # singlestep DPM-Solver++(2S) spends one call per step and is deterministic. Diffusers' docs name it as the
    # closest match. lower_order_final: diffusers forces it on (with a warning) for a schedule ending at sigma 0.
    _Sampler(
        name="DPM++ 2S a",
        aliases=("k_dpmpp_2s_a",),
        scheduler_class="DPMSolverSinglestepScheduler",
        options=(
            ("algorithm_type", "dpmsolver++"),
            ("solver_order", 2),
            ("solver_type", "midpoint"),
            ("lower_order_final", True),
        ),
    ),
    # DPM-Solver++(2M): k-diffusion's denoised_d = (1 + 1/2r) D0 - (1/2r) D_prev is diffusers' "midpoint" form, and
    # both take first-order steps first and last (diffusers: final_sigmas_type "zero").
    _Sampler(
        name="DPM++ 2M",
        aliases=("k_dpmpp_2m",),
        scheduler_class="DPMSolverMultistepScheduler",
        options=(("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("solver_type", "midpoint")),
    ),
    # diffusers' DPMSolverSDEScheduler is a port of k-diffusion's sample_dpmpp_sde with Brownian-tree noise
    # (needs torchsde); its noise comes from noise_sampler_seed, not the torch generator (see build_scheduler).
    _Sampler(name="DPM++ SDE", aliases=("k_dpmpp_sde",), scheduler_class="DPMSolverSDEScheduler"),
    # Same update as k-diffusion's sample_dpmpp_2m_sde (eta 1); ≈: fresh Gaussian noise per step from the
    # generator instead of A1111's Brownian-tree noise (same distribution, different draws).
    _Sampler(
        name="DPM++ 2M SDE",
        aliases=("k_dpmpp_2m_sde", "k_dpmpp_2m_sde_ka"),  # the second is what A1111 1.5-1.8 listed (sic)
        scheduler_class="DPMSolverMultistepScheduler",
        options=(("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2), ("solver_type", "midpoint")),
    ),
    _Sampler(
        name="DPM++ 2M SDE Heun",
        aliases=("k_dpmpp_2m_sde_heun",),
        scheduler_class="DPMSolverMultistepScheduler",
        options=(("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2), ("solver_type", "heun")),
    ),
    # ≈: third-order SDE-DPM-Solver++; its second-order warm-up step is k-diffusion's phi_2 ("heun") form, but the
    # third-order correction's constant term differs in sign from k-diffusion's sample_dpmpp_3m_sde, below 15 steps
    # diffusers drops to second order on the next-to-last step, A1111 discards the next-to-last sigma, and the noise
    # is Gaussian per step rather than Brownian-tree.
    _Sampler(
        name="DPM++ 3M SDE",
        aliases=("k_dpmpp_3m_sde",),
        scheduler_class="DPMSolverMultistepScheduler",
        options=(("algorithm_type", "sde-dpmsolver++"), ("solver_order", 3), ("solver_type", "heun")),
    ),
    # DDIM with eta from the pipeline call (A1111's default eta 0); A1111's "uniform" DDIM discretisation is
    # diffusers' "leading" spacing with steps_offset 1, which SD configs already have.
    _Sampler(name="DDIM", aliases=("ddim",), scheduler_class="DDIMScheduler"),
    # CompVis PLMS is PNDM without the Runge-Kutta warm-up steps.
    _Sampler(name="PLMS", aliases=("plms",), scheduler_class="PNDMScheduler", options=(("skip_prk_steps", True),)),
    # A1111's UniPC defaults: variant bh1, order 3, data prediction, lower order final. ≈: A1111 spaces the
    # timesteps "time_uniform" in continuous time; diffusers uses the config's timestep_spacing.
    _Sampler(
        name="UniPC",
        aliases=("unipc",),
        scheduler_class="UniPCMultistepScheduler",
        options=(("solver_type", "bh1"), ("solver_order", 3)),
    ),
    # ≈: A1111's LCM sampler is "denoise, then re-noise to the next sigma" on the chosen sigma schedule; diffusers'
    # LCMScheduler does the same on the LCM distillation timestep grid and adds the consistency boundary scalings.
    _Sampler(name="LCM", aliases=("k_lcm",), scheduler_class="LCMScheduler"),
    # Ancestral DDPM sampling with the trained variance (not in A1111 1.10; Forge/ComfyUI call it DDPM).
    _Sampler(name="DDPM", aliases=("ddpm",), scheduler_class="DDPMScheduler"),
)

# A1111 samplers that exist but have no diffusers equivalent: named in the error so users know why.
_UNSUPPORTED_A1111: tuple[str, ...] = ("DPM fast", "DPM adaptive", "Restart", "DDIM CFG++")

# Old A1111 aliases of combined names (k_dpmpp_2m_ka = "DPM++ 2M Karras", k_dpmpp_3m_sde_exp = "... Exponential").
_ALIAS_SUFFIXES: tuple[tuple[str, ScheduleType], ...] = (
    ("_ka", ScheduleType.KARRAS),
    ("_exp", ScheduleType.EXPONENTIAL),
)

_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*Scheduler")
_SHOWN_CHARS = 80


def _norm(text: str) -> str:
    """Case- and whitespace-insensitive key: ' dpm++  2M ' -> 'dpm++ 2m'."""
    return " ".join(text.split()).casefold()


def _sampler_keys() -> Mapping[str, _Sampler | str]:
    """Every accepted spelling -> its sampler entry, or (for a known class name) the canonical class name."""
    keys: dict[str, _Sampler | str] = {}
    for class_name in _SCHEDULER_CLASSES:
        keys[_norm(class_name)] = class_name
    for sampler in _SAMPLERS:
        for spelling in (sampler.name, *sampler.aliases):
            keys[_norm(spelling)] = sampler
    return MappingProxyType(keys)


def _schedule_keys() -> Mapping[str, ScheduleType]:
    keys: dict[str, ScheduleType] = {}
    for info in _SCHEDULES:
        for spelling in (info.type.value, info.name, *info.aliases):
            keys[_norm(spelling)] = info.type
    return MappingProxyType(keys)


# Built once at import from the constants above: pure Python, microseconds, and read-only afterwards.
_SAMPLER_KEYS = _sampler_keys()
_SCHEDULE_KEYS = _schedule_keys()
# Longest first, so "euler sgm uniform" is split at " sgm uniform", not at " uniform".
_SCHEDULE_SUFFIXES: tuple[tuple[str, ScheduleType], ...] = tuple(
    sorted(_SCHEDULE_KEYS.items(), key=lambda item: len(item[0]), reverse=True)
)


def _show(value: str) -> str:
    """Quote a user-supplied value for an error message without echoing megabytes of it."""
    return repr(value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "...")


def _valid_samplers() -> str:
    return ", ".join(sampler.name for sampler in _SAMPLERS)


def _valid_types(types: Sequence[ScheduleType]) -> str:
    return ", ".join(t.value for t in types)


# --------------------------------------------------------------------------------------------------------------------
# Parsing (pure Python).


def _parse_schedule_type(schedule_type: str | None) -> ScheduleType | None:
    if isinstance(schedule_type, ScheduleType):
        return schedule_type
    if schedule_type is None or not schedule_type.strip():
        return None
    found = _SCHEDULE_KEYS.get(_norm(schedule_type))
    if found is None:
        raise InvalidRequest(
            "schedule_type",
            f"unknown or unsupported schedule type {_show(schedule_type)}; valid: {_valid_types(_SCHEDULE_ORDER)}",
        )
    return found


def _lookup(key: str) -> tuple[_Sampler | str, ScheduleType | None] | None:
    """Find a sampler entry (or known class name) for a normalised name, splitting a trailing schedule type."""
    if key in _SAMPLER_KEYS:
        return _SAMPLER_KEYS[key], None
    for suffix, implied in _ALIAS_SUFFIXES:
        base = key.removesuffix(suffix)
        if base != key and base in _SAMPLER_KEYS:
            return _SAMPLER_KEYS[base], implied
    for spelling, implied in _SCHEDULE_SUFFIXES:
        if key.endswith(" " + spelling):
            base = key[: -len(spelling) - 1].strip()
            if base in _SAMPLER_KEYS:
                return _SAMPLER_KEYS[base], implied
    return None


def _choice_for_class(class_name: str) -> tuple[str, Mapping[str, object]]:
    """(name, options) for a bare class name: its A1111 name when one is exactly the class with default options."""
    for sampler in _SAMPLERS:
        if sampler.scheduler_class == class_name and not sampler.options:
            return sampler.name, {}
    return class_name, {}


def parse_sampler(sampler: str | None, schedule_type: str | None = None) -> SamplerChoice | None:
    """Validate a sampler name and schedule type; ``None`` means "use the model's scheduler unchanged".

    Accepts A1111 names and aliases ("DPM++ 2M", "k_dpmpp_2m"), legacy combined names ("DPM++ 2M Karras"),
    diffusers class names ("DPMSolverMultistepScheduler"), case- and whitespace-insensitively. A schedule type
    alone keeps the model's scheduler class (``SamplerChoice(name="", scheduler_class="", ...)``).
    Raises :class:`InvalidRequest` naming ``sampler`` or ``schedule_type``.
    """
    # 1. Schedule type on its own.
    explicit = _parse_schedule_type(schedule_type)
    text = (sampler or "").strip()
    if not text:
        if explicit in (None, ScheduleType.AUTOMATIC):
            return None
        return SamplerChoice(name="", schedule_type=explicit, scheduler_class="", options={})

    # 2. Sampler name, possibly with a schedule type appended.
    found = _lookup(_norm(text))
    if found is None:
        if _CLASS_NAME.fullmatch(text):
            # Another diffusers class (e.g. the EDM schedulers some SDXL-based models ship): its existence and its
            # schedule types are checked in build_scheduler, where diffusers is imported anyway.
            return SamplerChoice(
                name=text, schedule_type=explicit or ScheduleType.AUTOMATIC, scheduler_class=text, options={}
            )
        unsupported = any(_norm(n) == _norm(text) for n in _UNSUPPORTED_A1111)
        problem = (
            f"sampler {_show(text)} has no diffusers equivalent" if unsupported else f"unknown sampler {_show(text)}"
        )
        raise InvalidRequest(
            "sampler",
            f"{problem}; valid: {_valid_samplers()} (a schedule type may be appended, as in 'DPM++ 2M Karras'), "
            "or a diffusers scheduler class name such as 'DPMSolverMultistepScheduler'",
        )
    entry, implied = found
    options: Mapping[str, object]
    if isinstance(entry, _Sampler):
        name, class_name, options = entry.name, entry.scheduler_class, dict(entry.options)
    else:
        class_name = entry
        name, options = _choice_for_class(class_name)

    # 3. Reconcile a schedule type in the name with the explicit one ("Automatic"/empty means "not given").
    unset = (None, ScheduleType.AUTOMATIC)
    if implied not in unset and explicit not in unset and implied is not explicit:
        raise InvalidRequest(
            "schedule_type",
            f"sampler {_show(text)} already implies schedule type {implied.value!r}, which conflicts with "
            f"{explicit.value!r}; send sampler {name!r} with the schedule type you want",
        )
    final = implied if implied not in unset else (explicit or ScheduleType.AUTOMATIC)

    # 4. The class must honour the schedule type.
    supported = _SCHEDULER_CLASSES[class_name].types
    if final not in supported:
        raise InvalidRequest(
            "schedule_type",
            f"schedule type {final.value!r} is not supported by sampler {name!r} ({class_name}); "
            f"valid for it: {_valid_types(supported)}",
        )
    return SamplerChoice(name=name, schedule_type=final, scheduler_class=class_name, options=options)


# --------------------------------------------------------------------------------------------------------------------
# eta: A1111's noise scale of the samplers that add noise (pure Python).


@dataclass(frozen=True, kw_only=True)
class EtaRule:
    """How a sampler takes A1111's ``eta``: its default, the values imagegen can honour, the infotext key.

    A1111 scales the fresh noise of DDIM (its ``eta_ddim``, default 0) and of the ancestral and SDE samplers (its
    ``eta_ancestral``, default 1: 0 means no ancestral noise) by a request's eta; samplers without noise ignore it.
    """

    default: float
    #: The values honoured; empty: any value in [0, 1].
    only: tuple[float, ...] = ()
    #: What A1111 writes into the infotext when eta is not the default.
    infotext_key: str = "Eta"
    #: True when eta is an argument of the pipeline call (diffusers passes it to DDIM's step), not of the scheduler.
    pipeline_argument: bool = False

    def check(self, eta: float, sampler: str) -> None:
        """Raise :class:`InvalidRequest` (field ``eta``) for a value this sampler cannot honour."""
        if self.only and eta not in self.only:
            allowed = " or ".join(format(value, "g") for value in self.only)
            raise InvalidRequest(
                "eta",
                f"sampler {sampler!r} can run with eta {allowed} only (diffusers has no other noise scale for it), "
                f"got {eta!r}",
            )


#: DDIM: any eta, passed to diffusers' DDIM step (A1111's default 0 is deterministic DDIM).
_DDIM_ETA = EtaRule(default=0.0, infotext_key="Eta DDIM", pipeline_argument=True)
#: Euler a: any eta (k-diffusion's get_ancestral_step, imagegen.schedulers.EulerAncestralScheduler).
_ANCESTRAL_ETA = EtaRule(default=1.0)
#: 1 is diffusers' sampler; 0 is exactly its deterministic twin (DPM2 a -> DPM2, SDE-DPM-Solver++ -> DPM-Solver++).
#: DPM++ 2S a also takes both: diffusers' version adds no noise at all (the ≈ in the sampler table).
_ZERO_OR_ONE = EtaRule(default=1.0, only=(0.0, 1.0))
#: DPM++ SDE: diffusers' step has no noise scale; only A1111's default.
_ONE = EtaRule(default=1.0, only=(1.0,))
_SDE_ALGORITHMS = frozenset({"sde-dpmsolver++", "sde-dpmsolver"})


def eta_rule(choice: SamplerChoice | None, model_scheduler_config: Mapping[str, object]) -> EtaRule | None:
    """How the sampler a request runs takes eta; ``None`` for a sampler without noise (eta is then a no-op).

    ``choice`` is :func:`parse_sampler`'s result; ``None`` or a schedule-type-only choice means the model's own
    scheduler, described by its config (``_class_name``, ``algorithm_type``)."""
    if choice is not None and not choice.uses_model_scheduler:
        class_name, options, name = choice.scheduler_class, choice.options, choice.name
    else:
        class_name, options, name = str(model_scheduler_config.get("_class_name") or ""), model_scheduler_config, ""
    if class_name == "DDIMScheduler":
        return _DDIM_ETA
    if class_name == "EulerAncestralDiscreteScheduler":
        return _ANCESTRAL_ETA
    if class_name == "KDPM2AncestralDiscreteScheduler" or name == "DPM++ 2S a":
        return _ZERO_OR_ONE
    if class_name == "DPMSolverMultistepScheduler" and options.get("algorithm_type") in _SDE_ALGORITHMS:
        return _ZERO_OR_ONE
    if class_name == "DPMSolverSDEScheduler":
        return _ONE
    return None


def resolve_eta(
    eta: float | None, choice: SamplerChoice | None, model_scheduler_config: Mapping[str, object], *, sampler: str
) -> float | None:
    """The eta a request runs with: ``None`` when the sampler has no noise to scale (a no-op, accepted silently),
    else ``eta`` itself once checked against what the sampler can honour (:class:`InvalidRequest` naming ``eta``)."""
    rule = eta_rule(choice, model_scheduler_config)
    if rule is None or eta is None:
        return None
    rule.check(eta, sampler)
    return eta


# --------------------------------------------------------------------------------------------------------------------
# Building (imports diffusers).


def _diffusers_class(class_name: str) -> type[SchedulerMixin] | None:
    """The diffusers scheduler class of that name (case-insensitive), or None."""
    import diffusers

    candidate = getattr(diffusers, class_name, None)
    if candidate is None:
        # Only a name spelled another way pays for the scan (about 2 ms: diffusers exports a thousand names); this
        # runs several times per request.
        wanted = class_name.casefold()
        spelled = next((n for n in dir(diffusers) if n.casefold() == wanted), None)
        candidate = getattr(diffusers, spelled) if spelled else None
    if isinstance(candidate, type) and issubclass(candidate, diffusers.SchedulerMixin):
        return candidate
    return None


def _init_parameters(cls: type) -> Mapping[str, inspect.Parameter]:
    # The class's own signature: its __init__'s parameters without self.
    return inspect.signature(cls).parameters


def _support(cls: type) -> _Support:
    """The static table's entry, else what the class's __init__ accepts (for classes the table does not know)."""
    known = _SCHEDULER_CLASSES.get(cls.__name__)
    if known is not None:
        return known
    params = _init_parameters(cls)
    return _Support(
        sigma_schedules=all(flag in params for flag in _SIGMA_FLAGS.values()),
        timestep_spacing="timestep_spacing" in params,
        other_flags=tuple(flag for flag in ("use_lu_lambdas", "use_flow_sigmas") if flag in params),
    )


def _schedule_overrides(schedule_type: ScheduleType, support: _Support) -> dict[str, object]:
    """The config settings that make a scheduler class follow a schedule type (empty for Automatic)."""
    if schedule_type is ScheduleType.AUTOMATIC:
        return {}
    # Switch every other schedule off explicitly: the model's config may have one on, and diffusers refuses two.
    overrides: dict[str, object] = dict.fromkeys(support.other_flags, False)
    if support.sigma_schedules:
        overrides.update(dict.fromkeys(_SIGMA_FLAGS.values(), False))
    if schedule_type in _SIGMA_FLAGS:
        overrides[_SIGMA_FLAGS[schedule_type]] = True
        if support.sigma_range_from_spacing:
            overrides["timestep_spacing"] = "linspace"
    else:
        overrides["timestep_spacing"] = _SPACINGS[schedule_type]
    return overrides


def build_scheduler(
    choice: SamplerChoice | None,
    model_scheduler_config: Mapping[str, object],
    *,
    noise_seed: int | Sequence[int] | None = None,
    eta: float | None = None,
) -> SchedulerMixin:
    """A fresh scheduler for one request, from the model's own scheduler config plus the choice's settings.

    ``noise_seed`` seeds the Brownian-tree noise of ``DPMSolverSDEScheduler`` (DPM++ SDE), which does not draw from
    the pipeline's torch generator: without it that sampler is not reproducible. A list gives one tree per image.
    ``eta`` (checked by :func:`resolve_eta`) sets the ancestral samplers' noise scale; DDIM's goes to the pipeline.
    """
    # 1. Which class: the choice's, or the model's own.
    model_class = str(model_scheduler_config.get("_class_name") or "")
    by_choice = choice is not None and not choice.uses_model_scheduler
    class_name = choice.scheduler_class if choice is not None and by_choice else model_class
    cls = _diffusers_class(class_name)
    if cls is None:
        if by_choice:
            raise InvalidRequest(
                "sampler",
                f"unknown sampler {_show(class_name)} (diffusers has no scheduler class of that name); "
                f"valid: {_valid_samplers()}, or a diffusers scheduler class name",
            )
        if not model_class:
            raise ModelLoadError("the model's scheduler config has no _class_name, so its scheduler is unknown")
        raise ModelLoadError(f"the model's scheduler config names {model_class!r}, which is not a diffusers scheduler")

    # 2. The choice's options and schedule type, checked against what this class honours.
    overrides: dict[str, object] = {}
    if choice is not None:
        support = _support(cls)
        if choice.schedule_type not in support.types:
            sampler = f"sampler {choice.name!r}" if choice.name else "the model's own sampler"
            raise InvalidRequest(
                "schedule_type",
                f"schedule type {choice.schedule_type.value!r} is not supported by {sampler} ({cls.__name__}); "
                f"valid for it: {_valid_types(support.types)}",
            )
        overrides.update(choice.options)
        overrides.update(_schedule_overrides(choice.schedule_type, support))
    if noise_seed is not None and "noise_sampler_seed" in _init_parameters(cls):
        overrides["noise_sampler_seed"] = noise_seed if isinstance(noise_seed, int) else list(noise_seed)
    if "clip_sample" in _init_parameters(cls) and "clip_sample" not in model_scheduler_config:
        # DDIM's and DDPM's default (True) clips x_0 to [-1, 1]: right for pixels, ruinous for latents, which reach
        # about ±4. Every latent model's config that means it says so; one that is silent is a latent model too.
        overrides["clip_sample"] = False

    # 3. eta, and the diffusers classes imagegen replaces (imagegen.schedulers).
    cls, ancestral_eta = _noise_variant(cls, choice, model_scheduler_config, overrides, eta)

    # 4. from_config keeps the model's betas, prediction_type, steps_offset, ... and applies the overrides.
    scheduler = cls.from_config(dict(model_scheduler_config), **overrides)
    if ancestral_eta is not None:
        scheduler.eta = ancestral_eta
    return scheduler


def _noise_variant(
    cls: type[SchedulerMixin],
    choice: SamplerChoice | None,
    model_scheduler_config: Mapping[str, object],
    overrides: dict[str, object],
    eta: float | None,
) -> tuple[type[SchedulerMixin], float | None]:
    """The class to build for ``eta`` (plus the Euler a eta to set on it), updating ``overrides`` in place."""
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        KDPM2AncestralDiscreteScheduler,
        KDPM2DiscreteScheduler,
        UniPCMultistepScheduler,
    )

    from imagegen.schedulers import EulerAncestralScheduler, UniPCScheduler

    if issubclass(cls, UniPCMultistepScheduler):
        return UniPCScheduler, None
    rule = eta_rule(choice, model_scheduler_config)
    if eta is None or rule is None or eta == rule.default or rule.pipeline_argument:
        return cls, None
    if issubclass(cls, EulerAncestralDiscreteScheduler):
        return EulerAncestralScheduler, eta
    if issubclass(cls, KDPM2AncestralDiscreteScheduler):
        return KDPM2DiscreteScheduler, None  # eta 0: DPM2 a without its ancestral noise is DPM2
    algorithm = overrides.get("algorithm_type", model_scheduler_config.get("algorithm_type"))
    if algorithm in _SDE_ALGORITHMS:
        overrides["algorithm_type"] = str(algorithm).removeprefix("sde-")  # eta 0: the same solver without noise
    return cls, None


def diffusers_base(cls: type) -> type:
    """The diffusers class ``cls`` is (or derives from): imagegen's replacements keep their diffusers name."""
    return next(c for c in cls.__mro__ if c.__module__.startswith("diffusers."))


# --------------------------------------------------------------------------------------------------------------------
# Reverse mapping and listings.


def _resolved_config(class_name: str, config: Mapping[str, object]) -> tuple[type | None, dict[str, object]]:
    """The class (if diffusers has it) and the config with the class's __init__ defaults filled in."""
    cls = _diffusers_class(class_name) if class_name else None
    resolved: dict[str, object] = {}
    if cls is not None:
        for name, param in _init_parameters(cls).items():
            if param.default is not inspect.Parameter.empty:
                resolved[name] = param.default
    resolved.update(config)
    return cls, resolved


def _matches(settings: Mapping[str, object], config: Mapping[str, object]) -> bool:
    return all(key in config and config[key] == value for key, value in settings.items())


def sampler_for_scheduler(scheduler_class_name: str, config: Mapping[str, object]) -> tuple[str, ScheduleType]:
    """Describe a scheduler config as (sampler name, schedule type), e.g. for the infotext of a default-sampler run.

    The pair is chosen so that ``build_scheduler(parse_sampler(name, type), model_config)`` on the same model gives
    the same config: the A1111 name only if the sampler's options all match (else the class name), and a concrete
    schedule type only if its settings all match (else Automatic).
    """
    cls, resolved = _resolved_config(scheduler_class_name, config)
    canonical = cls.__name__ if cls is not None else scheduler_class_name
    name = next(
        (s.name for s in _SAMPLERS if s.scheduler_class == canonical and _matches(dict(s.options), resolved)),
        canonical,
    )
    if cls is None:
        return name, ScheduleType.AUTOMATIC
    support = _support(cls)
    # Sigma schedules first: with one on, the timestep spacing no longer decides the schedule.
    for schedule_type in (
        ScheduleType.KARRAS,
        ScheduleType.EXPONENTIAL,
        ScheduleType.BETA,
        ScheduleType.SGM_UNIFORM,
        ScheduleType.UNIFORM,
    ):
        if schedule_type in support.types and _matches(_schedule_overrides(schedule_type, support), resolved):
            return name, schedule_type
    return name, ScheduleType.AUTOMATIC


def _option_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def list_samplers() -> list[dict[str, object]]:
    """The samplers in A1111's ``/sdapi/v1/samplers`` shape: ``[{"name", "aliases", "options"}]``.

    ``options`` values are strings (A1111 declares ``dict[str, str]``): the diffusers class, the schedule types it
    supports, and the sampler's own config settings.
    """
    return [
        {
            "name": sampler.name,
            "aliases": list(sampler.aliases),
            "options": {
                "scheduler_class": sampler.scheduler_class,
                "schedule_types": _valid_types(_SCHEDULER_CLASSES[sampler.scheduler_class].types),
                **{key: _option_text(value) for key, value in sampler.options},
            },
        }
        for sampler in _SAMPLERS
    ]


def list_schedule_types() -> list[dict[str, object]]:
    """The schedule types in A1111's ``/sdapi/v1/schedulers`` shape."""
    return [
        {
            "name": info.name,
            "label": info.type.value,
            "aliases": list(info.aliases),
            "default_rho": info.default_rho,
            "need_inner_model": info.need_inner_model,
        }
        for info in _SCHEDULES
    ]
