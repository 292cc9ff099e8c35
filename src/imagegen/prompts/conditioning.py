"""What the denoiser is conditioned on at every step: A1111's prompt editing and alternation during sampling.

A prompt such as ``a [red:blue:0.5] circle`` is a schedule (:func:`imagegen.prompts.syntax.prompt_schedule`): one
text until step 10 of 20, another after. :class:`StagePrompts` encodes each distinct text once, hands the pipeline
the first step's embeddings, and swaps them in its step callback (diffusers' ``callback_on_step_end`` may return new
``prompt_embeds``/``add_text_embeds``), so step *i* sees the text A1111 would use at step *i*. The prompt and the
negative prompt are padded to the same number of chunks at every step (A1111's ``pad_cond_uncond``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from imagegen.prompts.encoding import Conditioning, pad_pair, pad_to
from imagegen.prompts.syntax import prompt_schedule, step_prompt

__all__ = ["BatchPrompts", "StagePrompts", "TextEncoder"]


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
        return _tensor_inputs(self.changes, pooled)

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


class BatchPrompts:
    """Several requests' prompts in one denoising batch (the server's dynamic batching): image *j* of request *k* is
    conditioned on request *k*'s schedule, every prompt and negative prompt padded to the batch's largest chunk count
    with its stage's empty-prompt chunk. The same interface as :class:`StagePrompts`, for ``num_images_per_prompt=1``
    and one embedding row per image."""

    def __init__(self, stages: Sequence[StagePrompts], counts: Sequence[int]) -> None:
        if len(stages) != len(counts) or not stages:
            raise ValueError(f"one image count per stage is needed, got {len(stages)} stages and {len(counts)} counts")
        self._stages = tuple(stages)
        self._counts = tuple(counts)

    @property
    def changes(self) -> bool:
        return any(stage.changes for stage in self._stages)

    def pipeline_arguments(self, step: int, *, pooled: bool) -> dict[str, Any]:
        cond, uncond, cond_pooled, uncond_pooled = self._rows(step)
        arguments: dict[str, Any] = {"prompt_embeds": cond, "negative_prompt_embeds": uncond}
        if pooled:
            arguments["pooled_prompt_embeds"] = cond_pooled
            arguments["negative_pooled_prompt_embeds"] = uncond_pooled
        return arguments

    def tensor_inputs(self, *, pooled: bool) -> list[str]:
        return _tensor_inputs(self.changes, pooled)

    def updater(self, first_step: int, *, pooled: bool) -> Callable[[Any, int, dict[str, Any]], dict[str, Any]]:
        def update(pipe: Any, i: int, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            now, upcoming = first_step + i, first_step + i + 1
            if not self.changes or all(s._key(now) == s._key(upcoming) for s in self._stages):
                return callback_kwargs
            cond, uncond, cond_pooled, uncond_pooled = self._rows(upcoming)
            cfg = bool(getattr(pipe, "do_classifier_free_guidance", True))
            current = callback_kwargs["prompt_embeds"]
            callback_kwargs["prompt_embeds"] = (torch.cat([uncond, cond]) if cfg else cond).to(current)
            if pooled and "add_text_embeds" in callback_kwargs and cond_pooled is not None:
                assert uncond_pooled is not None  # both come from the same encoder
                now_pooled = callback_kwargs["add_text_embeds"]
                both = torch.cat([uncond_pooled, cond_pooled]) if cfg else cond_pooled
                callback_kwargs["add_text_embeds"] = both.to(now_pooled)
            return callback_kwargs

        return update

    def _rows(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Per image: the prompts' and negative prompts' embeddings (and pooled), all padded to one chunk count."""
        pairs = [stage._pair(step) for stage in self._stages]
        chunks = max(max(pair.cond.chunks, pair.uncond.chunks) for pair in pairs)
        conds, unconds, conds_pooled, unconds_pooled = [], [], [], []
        for stage, pair, count in zip(self._stages, pairs, self._counts, strict=True):
            empty = stage._empty_conditioning()
            cond, uncond = pad_to(pair.cond, chunks, empty), pad_to(pair.uncond, chunks, empty)
            conds.append(cond.embeds.repeat(count, 1, 1))
            unconds.append(uncond.embeds.repeat(count, 1, 1))
            if cond.pooled is not None and uncond.pooled is not None:
                conds_pooled.append(cond.pooled.repeat(count, 1))
                unconds_pooled.append(uncond.pooled.repeat(count, 1))
        pooled = len(conds_pooled) == len(conds)
        return (
            torch.cat(conds),
            torch.cat(unconds),
            torch.cat(conds_pooled) if pooled else None,
            torch.cat(unconds_pooled) if pooled else None,
        )


def _tensor_inputs(changes: bool, pooled: bool) -> list[str]:
    """The tensors a step callback must see: the latents, and the embeddings it swaps when the prompt changes."""
    if not changes:
        return ["latents"]
    return ["latents", "prompt_embeds", *(["add_text_embeds"] if pooled else [])]


def _batch(cond: torch.Tensor, uncond: torch.Tensor, copies: int, cfg: bool) -> torch.Tensor:
    """diffusers' layout: ``[uncond × copies, cond × copies]`` with guidance, ``[cond × copies]`` without."""
    repeat = (copies,) + (1,) * (cond.ndim - 1)
    if not cfg:
        return cond.repeat(*repeat)
    return torch.cat([uncond.repeat(*repeat), cond.repeat(*repeat)], dim=0)
