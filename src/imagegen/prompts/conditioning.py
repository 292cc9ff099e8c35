"""What the denoiser is conditioned on at every step: A1111's prompt editing and alternation during sampling.

A prompt such as ``a [red:blue:0.5] circle`` is a schedule (:func:`imagegen.prompts.syntax.prompt_schedule`): one
text until step 10 of 20, another after. :class:`StagePrompts` encodes each distinct text once, hands the pipeline
the first step's embeddings, and swaps them in its step callback (diffusers' ``callback_on_step_end`` may return new
``prompt_embeds``/``add_text_embeds``), so step *i* sees the text A1111 would use at step *i*. The prompt and the
negative prompt are padded to the same number of chunks at every step (A1111's ``pad_cond_uncond``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from imagegen.prompts.encoding import Conditioning, pad_pair
from imagegen.prompts.syntax import prompt_schedule, step_prompt

__all__ = ["StagePrompts"]


class TextEncoder(Protocol):
    """What a stage needs of its encoder: :class:`~imagegen.prompts.encoding.PromptEncoder` or a cached one."""

    def encode(self, text: str) -> Conditioning: ...


@dataclass(frozen=True)
class _Pair:
    cond: Conditioning
    uncond: Conditioning


class StagePrompts:
    """The conditioning of one pipeline stage (the base, or the SDXL refiner) over the whole schedule."""

    def __init__(
        self,
        encoder: TextEncoder,
        prompt: str,
        negative_prompt: str,
        *,
        steps: int,
        zero_empty_negative: bool = False,
    ) -> None:
        self._encoder = encoder
        self._positive = prompt_schedule(prompt, steps)
        self._negative = prompt_schedule(negative_prompt, steps)
        # SDXL base's force_zeros_for_empty_prompt: an empty negative prompt is a zero tensor, as diffusers does.
        self._zero_negative = zero_empty_negative and not negative_prompt.strip()
        self._encoded: dict[str, Conditioning] = {}
        self._empty: Conditioning | None = None

    @property
    def changes(self) -> bool:
        """Whether the conditioning changes during sampling (editing or alternation)."""
        return len(self._positive) > 1 or len(self._negative) > 1

    def pipeline_arguments(self, step: int, *, pooled: bool) -> dict[str, Any]:
        """``prompt_embeds`` & co. for a pipeline call whose first step is ``step`` (0-based over the schedule)."""
        pair = self._pair(step)
        arguments: dict[str, Any] = {
            "prompt_embeds": pair.cond.embeds,
            "negative_prompt_embeds": pair.uncond.embeds,
        }
        if pooled:
            arguments["pooled_prompt_embeds"] = pair.cond.pooled
            arguments["negative_pooled_prompt_embeds"] = pair.uncond.pooled
        return arguments

    def tensor_inputs(self, *, pooled: bool) -> list[str]:
        """What the step callback must see (``callback_on_step_end_tensor_inputs``)."""
        if not self.changes:
            return ["latents"]
        return ["latents", "prompt_embeds", *(["add_text_embeds"] if pooled else [])]

    def updater(self, first_step: int, *, pooled: bool) -> Callable[[Any, int, dict[str, Any]], dict[str, Any]]:
        """A step-callback part: after the stage's step ``i``, put step ``first_step + i + 1``'s conditioning in."""

        def update(pipe: Any, i: int, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            if not self.changes:
                return callback_kwargs
            now, upcoming = first_step + i, first_step + i + 1
            if self._key(now) == self._key(upcoming):
                return callback_kwargs
            pair = self._pair(upcoming)
            current = callback_kwargs["prompt_embeds"]
            cfg = bool(getattr(pipe, "do_classifier_free_guidance", True))
            copies = current.shape[0] // (2 if cfg else 1)
            callback_kwargs["prompt_embeds"] = _batch(pair.cond.embeds, pair.uncond.embeds, copies, cfg).to(current)
            if pooled and "add_text_embeds" in callback_kwargs and pair.cond.pooled is not None:
                assert pair.uncond.pooled is not None  # both come from the same encoder
                pooled_now = callback_kwargs["add_text_embeds"]
                callback_kwargs["add_text_embeds"] = _batch(pair.cond.pooled, pair.uncond.pooled, copies, cfg).to(
                    pooled_now
                )
            return callback_kwargs

        return update

    # Steps ------------------------------------------------------------------------------------------------------

    def _key(self, step: int) -> tuple[str, str]:
        return step_prompt(self._positive, step), step_prompt(self._negative, step)

    def _pair(self, step: int) -> _Pair:
        text, negative = self._key(step)
        cond = self._encode(text)
        if self._zero_negative:
            uncond = Conditioning(
                torch.zeros_like(cond.embeds),
                None if cond.pooled is None else torch.zeros_like(cond.pooled),
                cond.chunk_length,
            )
            return _Pair(cond, uncond)
        padded_cond, padded_uncond = pad_pair(cond, self._encode(negative), self._empty_conditioning())
        return _Pair(padded_cond, padded_uncond)

    def _encode(self, text: str) -> Conditioning:
        if text not in self._encoded:
            self._encoded[text] = self._encoder.encode(text)
        return self._encoded[text]

    def _empty_conditioning(self) -> Conditioning:
        if self._empty is None:
            self._empty = self._encode("")
        return self._empty


def _batch(cond: torch.Tensor, uncond: torch.Tensor, copies: int, cfg: bool) -> torch.Tensor:
    """diffusers' layout: ``[uncond × copies, cond × copies]`` with guidance, ``[cond × copies]`` without."""
    repeat = (copies,) + (1,) * (cond.ndim - 1)
    if not cfg:
        return cond.repeat(*repeat)
    return torch.cat([uncond.repeat(*repeat), cond.repeat(*repeat)], dim=0)
