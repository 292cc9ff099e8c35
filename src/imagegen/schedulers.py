"""Two diffusers schedulers, each changed where A1111's sampler of the same name does what diffusers' does not.

- :class:`EulerAncestralScheduler`: Euler a with an ``eta`` (A1111 applies a request's eta to the ancestral
  samplers: 0 means no ancestral noise, 1 is diffusers' fixed behaviour), k-diffusion's ``sample_euler_ancestral``.
- :class:`UniPCScheduler`: UniPC whose last step to sigma 0 returns the denoised sample instead of NaN.

Everything else is diffusers' own code; :func:`imagegen.samplers.build_scheduler` picks these classes.
"""

from __future__ import annotations

import torch
from diffusers import EulerAncestralDiscreteScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

__all__ = ["EulerAncestralScheduler", "UniPCScheduler", "get_ancestral_step"]


def get_ancestral_step(
    sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_down, sigma_up): the noise level to step down to, and the fresh noise to add back, of an ancestral step
    with noise scale ``eta`` (k-diffusion's ``get_ancestral_step``)."""
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


class EulerAncestralScheduler(EulerAncestralDiscreteScheduler):  # type: ignore[misc]  # diffusers is untyped
    """diffusers' Euler a with A1111's ``eta`` (set after construction; 1.0 is diffusers' behaviour, bit for bit)."""

    eta: float = 1.0

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> EulerAncestralDiscreteSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One Euler step down to ``sigma_down``, then ``sigma_up`` of fresh noise (none when eta is 0)."""
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma = self.sigmas[self.step_index]
        sigma_next = self.sigmas[self.step_index + 1]
        # Upcast as diffusers does, so that eta 1 gives exactly its pixels.
        sample = sample.to(torch.float32)
        # 1. The denoised sample (x_0) the model predicts at this noise level.
        if self.config.prediction_type == "epsilon":
            denoised = sample - sigma * model_output
        elif self.config.prediction_type == "v_prediction":
            denoised = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))
        else:
            raise ValueError(f"Euler a supports epsilon and v_prediction models, got {self.config.prediction_type}")
        # 2. Euler step to sigma_down, then noise back up to sigma_next.
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, self.eta)
        derivative = (sample - denoised) / sigma
        prev_sample = sample + derivative * (sigma_down - sigma)
        if self.eta:
            noise = randn_tensor(
                model_output.shape, dtype=model_output.dtype, device=model_output.device, generator=generator
            )
            prev_sample = prev_sample + noise * sigma_up
        prev_sample = prev_sample.to(model_output.dtype)
        self._step_index += 1
        if not return_dict:
            return prev_sample, denoised
        return EulerAncestralDiscreteSchedulerOutput(prev_sample=prev_sample, pred_original_sample=denoised)


class UniPCScheduler(UniPCMultistepScheduler):  # type: ignore[misc]  # diffusers is untyped
    """diffusers' UniPC, except for a predictor step that ends at sigma 0.

    There diffusers computes ``x_t = x_t_ - alpha_t * B_h * pred_res`` with ``h = inf``: with A1111's variant "bh1"
    (``B(h) = h``) that is ``inf * 0 = NaN`` even for a first-order step, on every model whose schedule ends at
    sigma 0 (``final_sigmas_type="zero"``, diffusers' default). The step's exact limit is the model's denoised
    prediction, which this returns (A1111's own UniPC stops just above 0 and never meets the case).
    """

    def multistep_uni_p_bh_update(
        self, model_output: torch.Tensor, *args: object, sample: torch.Tensor, order: int, **kwargs: object
    ) -> torch.Tensor:
        """The predictor step; to sigma 0, the denoised sample."""
        if self.sigmas[self.step_index + 1] > 0 or self.solver_p:
            predicted: torch.Tensor = super().multistep_uni_p_bh_update(
                model_output, *args, sample=sample, order=order, **kwargs
            )
            return predicted
        latest: torch.Tensor = self.model_outputs[-1]  # convert_model_output's result for this step
        if self.predict_x0:
            return latest.to(sample.dtype)
        alpha_s, sigma_s = self._sigma_to_alpha_sigma_t(self.sigmas[self.step_index].to(sample.device))
        denoised: torch.Tensor = (sample - sigma_s * latest) / alpha_s
        return denoised.to(sample.dtype)
