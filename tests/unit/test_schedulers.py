"""imagegen's two scheduler corrections, against formulas written out here (k-diffusion's) and diffusers' originals."""

from __future__ import annotations

import math

import diffusers
import pytest
import torch

from imagegen.schedulers import EulerAncestralScheduler, UniPCScheduler, get_ancestral_step

CONFIG = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}


@pytest.mark.parametrize(
    ("sigma_from", "sigma_to", "eta"),
    [(10.0, 5.0, 1.0), (10.0, 5.0, 0.5), (3.0, 0.5, 0.25), (2.0, 1.9, 1.0), (4.0, 0.0, 1.0)],
)
def test_ancestral_step_is_k_diffusions(sigma_from: float, sigma_to: float, eta: float) -> None:
    down, up = get_ancestral_step(torch.tensor(sigma_from), torch.tensor(sigma_to), eta)
    expected_up = min(sigma_to, eta * math.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2))
    assert float(up) == pytest.approx(expected_up, rel=1e-6)
    # Down and up recombine to the next noise level: the variance is preserved.
    assert float(down) ** 2 + float(up) ** 2 == pytest.approx(sigma_to**2, rel=1e-5)


def test_ancestral_step_worked_by_hand() -> None:
    # 10 -> 5 at eta 1: up = sqrt(25 * 75 / 100) = sqrt(18.75) = 4.3301..., down = sqrt(25 - 18.75) = 2.5.
    down, up = get_ancestral_step(torch.tensor(10.0), torch.tensor(5.0), 1.0)
    assert (float(up), float(down)) == (pytest.approx(4.330127), pytest.approx(2.5))
    # At eta 0.5, up halves: sqrt(4.6875) = 2.1651, down = sqrt(25 - 4.6875) = 4.5069.
    down, up = get_ancestral_step(torch.tensor(10.0), torch.tensor(5.0), 0.5)
    assert (float(up), float(down)) == (pytest.approx(2.165064), pytest.approx(4.506939))


def test_ancestral_step_without_noise_and_with_more_than_all_of_it() -> None:
    down, up = get_ancestral_step(torch.tensor(10.0), torch.tensor(5.0), 0.0)
    assert (float(down), float(up)) == (5.0, 0.0)
    # eta above 1 is capped at sigma_to: never more noise than the level the step ends at.
    down, up = get_ancestral_step(torch.tensor(10.0), torch.tensor(5.0), 3.0)
    assert (float(down), float(up)) == (0.0, 5.0)


def _reference_step(
    sample: torch.Tensor,
    output: torch.Tensor,
    sigma: float,
    sigma_next: float,
    eta: float,
    *,
    prediction: str,
    noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of k-diffusion's sample_euler_ancestral, written out: (next sample, denoised estimate)."""
    if prediction == "epsilon":
        denoised = sample - sigma * output
    else:  # v_prediction, in the sigma-scaled parameterisation diffusers uses
        denoised = output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    down = math.sqrt(sigma_next**2 - up**2)
    return sample + (sample - denoised) / sigma * (down - sigma) + noise * up, denoised


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_euler_a_with_eta_is_k_diffusions_step(prediction: str, eta: float) -> None:
    scheduler = EulerAncestralScheduler.from_config({**CONFIG, "prediction_type": prediction})
    scheduler.eta = eta
    scheduler.set_timesteps(4)
    sample = torch.linspace(-2.0, 2.0, 32).reshape(1, 2, 4, 4) * float(scheduler.sigmas[0])
    for index, t in enumerate(scheduler.timesteps):
        output = torch.sin(sample)  # any "model"
        noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(index))
        sigma, sigma_next = float(scheduler.sigmas[index]), float(scheduler.sigmas[index + 1])
        expected, denoised = _reference_step(sample, output, sigma, sigma_next, eta, prediction=prediction, noise=noise)
        got = scheduler.step(output, t, sample, generator=torch.Generator().manual_seed(index))
        assert torch.allclose(got.prev_sample, expected, rtol=1e-4, atol=1e-4), (index, eta)
        # pred_original_sample is the denoised estimate of this step.
        assert torch.allclose(got.pred_original_sample, denoised, rtol=1e-4, atol=1e-4)
        sample = got.prev_sample


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_euler_a_at_eta_1_is_diffusers_own_bit_for_bit(prediction: str) -> None:
    ours = EulerAncestralScheduler.from_config({**CONFIG, "prediction_type": prediction})
    stock = diffusers.EulerAncestralDiscreteScheduler.from_config(ours.config)
    for scheduler in (ours, stock):
        scheduler.set_timesteps(5)
    sample = torch.linspace(-1.0, 1.0, 32).reshape(1, 2, 4, 4) * float(ours.sigmas[0])
    ours_sample = stock_sample = sample
    for index, t in enumerate(ours.timesteps):
        ours_sample = ours.step(
            torch.cos(ours_sample), t, ours_sample, generator=torch.Generator().manual_seed(7)
        ).prev_sample
        stock_sample = stock.step(
            torch.cos(stock_sample), t, stock_sample, generator=torch.Generator().manual_seed(7)
        ).prev_sample
        assert torch.equal(ours_sample, stock_sample), index


def test_euler_a_without_noise_draws_none_and_returns_tuples_when_asked() -> None:
    scheduler = EulerAncestralScheduler.from_config(CONFIG)
    scheduler.eta = 0.0
    scheduler.set_timesteps(3)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    sample = torch.ones(1, 1, 2, 2) * float(scheduler.sigmas[0])
    sigma = float(scheduler.sigmas[0])
    output = torch.full_like(sample, 0.25)
    prev, denoised = scheduler.step(output, scheduler.timesteps[0], sample, generator=generator, return_dict=False)
    assert torch.equal(generator.get_state(), state)  # eta 0: the generator is left as it was
    assert torch.allclose(denoised, sample - sigma * 0.25)  # epsilon prediction: x - sigma * eps
    assert prev.dtype == sample.dtype
    assert scheduler.step_index == 1


def test_euler_a_refuses_a_prediction_type_it_cannot_step() -> None:
    scheduler = EulerAncestralScheduler.from_config({**CONFIG, "prediction_type": "sample"})
    scheduler.eta = 0.5
    scheduler.set_timesteps(2)
    sample = torch.ones(1, 1, 2, 2)
    with pytest.raises(ValueError, match="Euler a supports epsilon and v_prediction models, got sample"):
        scheduler.step(sample, scheduler.timesteps[0], sample)


def _unipc_runs(predict_x0: bool, last_sigma: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The last sample of imagegen's UniPC and of diffusers' (whose final sigma may be moved off 0), A1111's variant."""
    config = {**CONFIG, "predict_x0": predict_x0, "solver_type": "bh1", "final_sigmas_type": "zero"}
    ours = UniPCScheduler.from_config(config)
    stock = diffusers.UniPCMultistepScheduler.from_config(ours.config)
    for scheduler in (ours, stock):
        scheduler.set_timesteps(3)
    if last_sigma is not None:
        stock.sigmas[-1] = last_sigma
    a = b = torch.linspace(-3.0, 3.0, 16).reshape(1, 4, 2, 2)
    for t in ours.timesteps:
        a = ours.step(torch.tanh(a), t, a).prev_sample
        b = stock.step(torch.tanh(b), t, b).prev_sample
    return a, b


@pytest.mark.parametrize("predict_x0", [True, False])
def test_unipc_ends_on_the_limit_of_diffusers_step_as_the_last_sigma_goes_to_zero(predict_x0: bool) -> None:
    ours, at_zero = _unipc_runs(predict_x0, None)
    assert not torch.isfinite(at_zero).all()  # diffusers' own at sigma 0: inf * 0
    assert torch.isfinite(ours).all()
    _, near_zero = _unipc_runs(predict_x0, 1e-5)
    assert torch.allclose(ours, near_zero, atol=1e-3)


def test_unipc_with_a_solver_p_is_diffusers_unchanged() -> None:
    solver = diffusers.DPMSolverMultistepScheduler.from_config(CONFIG)
    ours = UniPCScheduler.from_config({**CONFIG, "final_sigmas_type": "zero"}, solver_p=solver)
    stock = diffusers.UniPCMultistepScheduler.from_config(
        ours.config, solver_p=diffusers.DPMSolverMultistepScheduler.from_config(CONFIG)
    )
    for scheduler in (ours, stock, ours.solver_p, stock.solver_p):
        scheduler.set_timesteps(3)
    sample = torch.linspace(-1.0, 1.0, 16).reshape(1, 4, 2, 2)
    a = b = sample
    for t in ours.timesteps:
        a = ours.step(torch.tanh(a), t, a).prev_sample
        b = stock.step(torch.tanh(b), t, b).prev_sample
    assert torch.equal(a, b)


def test_half_precision_samples_stay_half() -> None:
    scheduler = EulerAncestralScheduler.from_config(CONFIG)
    scheduler.eta = 0.5
    scheduler.set_timesteps(3)
    sample = (torch.linspace(-1.0, 1.0, 16).reshape(1, 4, 2, 2) * float(scheduler.sigmas[0])).to(torch.bfloat16)
    output = torch.sin(sample)
    full = scheduler.step(
        output.float(), scheduler.timesteps[0], sample.float(), generator=torch.Generator().manual_seed(1)
    )
    scheduler._step_index = None  # the same step again, in bfloat16
    half = scheduler.step(output, scheduler.timesteps[0], sample, generator=torch.Generator().manual_seed(1))
    assert half.prev_sample.dtype == torch.bfloat16  # handed back in the model's dtype, as diffusers does
    assert torch.allclose(half.prev_sample.float(), full.prev_sample, rtol=2e-2, atol=2e-2)
    unipc = UniPCScheduler.from_config({**CONFIG, "solver_type": "bh1", "final_sigmas_type": "zero"})
    unipc.set_timesteps(2)
    x = torch.linspace(-1.0, 1.0, 16).reshape(1, 4, 2, 2).to(torch.bfloat16)
    for t in unipc.timesteps:
        x = unipc.step(torch.tanh(x), t, x).prev_sample
        assert x.dtype == torch.bfloat16
