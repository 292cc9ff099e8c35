"""Prompt text → the text encoders' embeddings, the way A1111 does it (``modules/sd_hijack_clip.py``'s semantics).

1. The text is parsed for attention (:func:`imagegen.prompts.syntax.parse_attention`); each fragment is tokenized on
   its own and carries its weight to every one of its tokens.
2. Tokens fill chunks of 75. A chunk that would end within 20 tokens after a comma is cut at the comma (A1111's
   ``comma_padding_backtrack``), ``BREAK`` starts a new chunk, a textual-inversion embedding is never split between
   chunks. Each chunk becomes ``[start] + 75 tokens + [end]``, padded with the tokenizer's pad token after the first
   end token (as diffusers pads, so a short plain prompt gives exactly diffusers' ``encode_prompt`` embeddings).
3. Each chunk runs through the text encoder on its own; the weights scale its token embeddings and ("Original"
   emphasis) the chunk's mean is restored. The chunks are concatenated: a 150-token prompt gives a 154-token
   conditioning. SDXL runs both encoders per chunk and concatenates their features; its pooled embedding comes from
   the first chunk.
4. Clip skip, A1111's meaning: SD 1.x takes the hidden state ``clip_skip`` layers from the end and applies the final
   layer norm; SD 2.x and SDXL ignore it (A1111's SD 2 encoder and SDXL's default do the same).

Nothing here keeps state between calls: an embedding is injected with a forward hook that lives for one encoder call.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import torch

from imagegen.prompts.syntax import BREAK, Fragment, parse_attention

if TYPE_CHECKING:
    from imagegen.networks.embeddings import Embedding

__all__ = ["CHUNK_TOKENS", "Conditioning", "Emphasis", "EncoderSlot", "PromptEncoder", "pad_pair"]

#: Tokens of prompt text per chunk (CLIP's 77 minus start and end).
CHUNK_TOKENS: Final[int] = 75
#: A1111's ``comma_padding_backtrack``: a chunk is cut at a comma this close to its end.
COMMA_BACKTRACK: Final[int] = 20


class Emphasis(str, enum.Enum):
    """A1111's emphasis modes (its ``emphasis`` setting)."""

    #: Scale the token embeddings by their weights, then restore each chunk's original mean (A1111's default).
    ORIGINAL = "Original"
    #: Scale the token embeddings, no mean restore.
    NO_NORM = "No norm"
    #: Parse the brackets but ignore the weights (every token 1.0).
    IGNORE = "Ignore"
    #: No attention syntax at all: brackets and ``BREAK`` are plain text.
    NONE = "None"


@dataclass(frozen=True, kw_only=True)
class EncoderSlot:
    """One text encoder of a pipeline and how A1111 reads its output."""

    tokenizer: Any
    text_encoder: Any
    #: ``"last"`` (last hidden state, final layer norm applied) or ``"penultimate"`` (SDXL: no final norm).
    layer: str
    #: SD 1.x: clip skip picks an earlier layer (then the final layer norm).
    clip_skip_applies: bool
    #: The pooled (projected) embedding is read from this encoder (SDXL's second).
    pooled: bool
    #: Key of this encoder's vectors in an SDXL embedding file (``clip_l``/``clip_g``), ``None`` for SD 1.x/2.x.
    embedding_key: str | None


@dataclass(frozen=True)
class Conditioning:
    """One prompt's embeddings: ``embeds`` [1, 77·chunks, dim] and, for SDXL, ``pooled`` [1, dim]."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    #: Tokens per chunk including start and end (77 for CLIP; fewer for a model trained with shorter windows).
    chunk_length: int = CHUNK_TOKENS + 2

    @property
    def chunks(self) -> int:
        return int(self.embeds.shape[1]) // self.chunk_length


@dataclass
class _Chunk:
    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    #: Prompt tokens in the chunk before it was closed with start/end/padding.
    used: int = 0
    #: (offset among the 75 tokens, vectors) of the embeddings placed in this chunk.
    fixes: list[tuple[int, torch.Tensor]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class _Vocabulary:
    """A tokenizer's ids that chunking needs, and the embeddings it can spot in a token stream."""

    tokenizer: Any
    start: int
    end: int
    pad: int
    #: Prompt tokens per chunk: 75, or the encoder's window minus start/end when it is shorter (the demo model's).
    length: int
    comma: int | None
    #: token ids of an embedding's name → its vectors for this encoder, longest names first.
    embeddings: tuple[tuple[tuple[int, ...], torch.Tensor], ...]


class PromptEncoder:
    """Encodes prompts for one pipeline with A1111's semantics (see the module docstring)."""

    def __init__(
        self,
        slots: Sequence[EncoderSlot],
        *,
        clip_skip: int = 1,
        emphasis: Emphasis = Emphasis.ORIGINAL,
        embeddings: Sequence[Embedding] = (),
        device: torch.device | None = None,
    ) -> None:
        if not slots:
            raise ValueError("a prompt encoder needs at least one text encoder")
        self.slots = tuple(slots)
        self.clip_skip = clip_skip
        self.emphasis = emphasis
        self.device = device
        self._vocabularies = tuple(_vocabulary(slot, embeddings) for slot in self.slots)

    @classmethod
    def for_pipeline(cls, pipeline: Any, family: str, **kwargs: Any) -> PromptEncoder:
        """The encoder slots of a diffusers pipeline of ``family`` (``sd1``, ``sd2``, ``sdxl``, ``sdxl-refiner``)."""
        return cls(slots_for(pipeline, family), device=_device_of(pipeline), **kwargs)

    # Public -----------------------------------------------------------------------------------------------------

    def encode(self, text: str) -> Conditioning:
        """The conditioning of ``text``: every token is seen, in chunks of 75."""
        fragments = self._fragments(text)
        pairs = list(zip(self.slots, self._vocabularies, strict=True))
        per_slot = [self._chunks(fragments, vocabulary) for _, vocabulary in pairs]
        # Both SDXL encoders tokenize the same text with the same BPE, but an embedding may exist for one only:
        # keep the chunk counts equal so their features can be concatenated token by token.
        count = max(len(chunks) for chunks in per_slot)
        embeds: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for slot, vocabulary, chunks in zip(self.slots, self._vocabularies, per_slot, strict=False):
            while len(chunks) < count:
                chunks.append(_close(_Chunk(), vocabulary))
            hidden, first_pooled = self._run(slot, vocabulary, chunks)
            embeds.append(hidden)
            if slot.pooled:
                pooled = first_pooled
        return Conditioning(torch.cat(embeds, dim=-1), pooled, self._vocabularies[0].length + 2)

    def token_count(self, text: str) -> int:
        """Prompt tokens (no start/end/padding) the first encoder sees, as A1111's token counter shows them."""
        return sum(c.used for c in self._chunks(self._fragments(text), self._vocabularies[0]))

    # Steps ------------------------------------------------------------------------------------------------------

    def _fragments(self, text: str) -> Sequence[Fragment]:
        if self.emphasis is Emphasis.NONE:
            return (Fragment(text, 1.0),)
        fragments = parse_attention(text)
        if self.emphasis is Emphasis.IGNORE:
            return tuple(f if _is_break(f) else Fragment(f.text, 1.0) for f in fragments)
        return fragments

    def _chunks(self, fragments: Sequence[Fragment], vocabulary: _Vocabulary) -> list[_Chunk]:
        """A1111's ``tokenize_line``: fragments → chunks of at most 75 tokens, closed with start/end/pad."""
        tokenizer = vocabulary.tokenizer
        chunks: list[_Chunk] = []
        chunk = _Chunk()
        last_comma = -1

        def next_chunk() -> None:
            nonlocal chunk, last_comma
            chunks.append(_close(chunk, vocabulary))
            chunk = _Chunk()
            last_comma = -1

        for fragment in fragments:
            if _is_break(fragment):
                next_chunk()
                continue
            ids: list[int] = _token_ids(tokenizer, fragment.text)
            position = 0
            while position < len(ids):
                token = ids[position]
                if token == vocabulary.comma:
                    last_comma = len(chunk.tokens)
                elif (
                    len(chunk.tokens) == vocabulary.length
                    and last_comma != -1
                    and len(chunk.tokens) - last_comma <= COMMA_BACKTRACK
                ):
                    # A full chunk with a comma near its end: what follows the comma starts the next chunk.
                    cut = last_comma + 1
                    moved_tokens, moved_weights = chunk.tokens[cut:], chunk.multipliers[cut:]
                    chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                    next_chunk()
                    chunk.tokens, chunk.multipliers = moved_tokens, moved_weights
                if len(chunk.tokens) == vocabulary.length:
                    next_chunk()
                match = _embedding_at(vocabulary, ids, position)
                if match is None:
                    chunk.tokens.append(token)
                    chunk.multipliers.append(fragment.weight)
                    position += 1
                    continue
                name_length, vectors = match
                count = int(vectors.shape[0])  # at most CHUNK_TOKENS: longer embeddings are skipped when loaded
                # An embedding is never split between chunks: if it does not fit, the chunk is closed first.
                if len(chunk.tokens) + count > vocabulary.length:
                    next_chunk()
                chunk.fixes.append((len(chunk.tokens), vectors))
                # Placeholder ids (A1111 uses 0, never the end token): the hook overwrites their embeddings.
                chunk.tokens.extend([0] * count)
                chunk.multipliers.extend([fragment.weight] * count)
                position += name_length
        if chunk.tokens or not chunks:
            chunks.append(_close(chunk, vocabulary))
        return chunks

    def _run(
        self, slot: EncoderSlot, vocabulary: _Vocabulary, chunks: Sequence[_Chunk]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode every chunk, apply the weights, concatenate: ([1, 77·n, dim], pooled of the first chunk)."""
        encoder = slot.text_encoder
        device = self.device or encoder.device
        hidden_parts: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for index, chunk in enumerate(chunks):
            ids = torch.tensor([chunk.tokens], dtype=torch.long, device=device)
            with torch.no_grad(), _inject(encoder, chunk.fixes):
                hidden, chunk_pooled = self._forward(slot, ids)
            if index == 0:
                pooled = chunk_pooled
            hidden_parts.append(self._emphasise(hidden, chunk.multipliers))
        return torch.cat(hidden_parts, dim=1), pooled

    def _forward(self, slot: EncoderSlot, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        encoder = slot.text_encoder
        mask = None
        if getattr(encoder.config, "use_attention_mask", False):
            # The tokenizer's mask, as diffusers passes it: the start, the prompt and the first end token; no padding.
            positions = torch.arange(ids.shape[1], device=ids.device)
            first_end = int((ids[0] == self._vocabularies[self.slots.index(slot)].end).nonzero()[0])
            mask = (positions <= first_end).long().unsqueeze(0)
        output = encoder(ids, attention_mask=mask, output_hidden_states=True)
        if slot.layer == "penultimate":
            hidden = output.hidden_states[-2]
        elif slot.clip_skip_applies and self.clip_skip > 1:
            # A1111 (SD 1.x): hidden_states[-clip_skip] through the final layer norm.
            hidden = _final_layer_norm(encoder)(output.hidden_states[-self.clip_skip])
        else:
            hidden = output[0]
        pooled = output[0] if slot.pooled else None
        dtype = encoder.dtype
        return hidden.to(dtype=dtype), (pooled.to(dtype=dtype) if pooled is not None else None)

    def _emphasise(self, hidden: torch.Tensor, multipliers: Sequence[float]) -> torch.Tensor:
        if self.emphasis in (Emphasis.IGNORE, Emphasis.NONE) or all(m == 1.0 for m in multipliers):
            return hidden  # the identity exactly: "(a red circle:1.0)" gives the pixels of "a red circle"
        weights = torch.tensor(multipliers, dtype=torch.float32, device=hidden.device).reshape(1, -1, 1)
        z = hidden.float()
        original_mean = z.mean()
        z = z * weights
        new_mean = z.mean()
        # A mean that is numerically zero (an encoder whose output is layer-normed without bias) has nothing to
        # restore: A1111 would divide by ~0 there and return NaN images; the weights are then applied as "No norm".
        if self.emphasis is Emphasis.ORIGINAL and abs(float(new_mean)) > 1e-6 * float(z.abs().mean()):
            z = z * (original_mean / new_mean)
        return z.to(hidden.dtype)


def pad_pair(cond: Conditioning, uncond: Conditioning, empty: Conditioning) -> tuple[Conditioning, Conditioning]:
    """``cond`` and ``uncond`` with the same number of chunks: the shorter is padded with the empty prompt's chunk
    (A1111's ``pad_cond_uncond``), so classifier-free guidance can batch them."""
    count = max(cond.chunks, uncond.chunks)
    return _pad(cond, count, empty), _pad(uncond, count, empty)


def pad_to(conditioning: Conditioning, count: int, empty: Conditioning) -> Conditioning:
    """``conditioning`` padded to ``count`` chunks with the empty prompt's chunk (a batch of prompts of different
    lengths, as A1111 pads a batch)."""
    return _pad(conditioning, count, empty)


def _pad(conditioning: Conditioning, count: int, empty: Conditioning) -> Conditioning:
    missing = count - conditioning.chunks
    if missing <= 0:
        return conditioning
    filler = empty.embeds[:, : empty.chunk_length].to(conditioning.embeds)
    if not torch.any(conditioning.embeds):
        filler = torch.zeros_like(filler)  # SDXL's zeroed empty negative stays zero
    return Conditioning(
        torch.cat([conditioning.embeds, *([filler] * missing)], dim=1), conditioning.pooled, conditioning.chunk_length
    )


def slots_for(pipeline: Any, family: str) -> tuple[EncoderSlot, ...]:
    """The text encoders of a pipeline of ``family`` and how A1111 reads each."""
    if family in ("sd1", "sd2"):
        return (
            EncoderSlot(
                tokenizer=pipeline.tokenizer,
                text_encoder=pipeline.text_encoder,
                layer="last",
                clip_skip_applies=family == "sd1",
                pooled=False,
                embedding_key=None,
            ),
        )
    second = EncoderSlot(
        tokenizer=pipeline.tokenizer_2,
        text_encoder=pipeline.text_encoder_2,
        layer="penultimate",
        clip_skip_applies=False,
        pooled=True,
        embedding_key="clip_g",
    )
    if family == "sdxl-refiner" or getattr(pipeline, "text_encoder", None) is None:
        return (second,)
    first = EncoderSlot(
        tokenizer=pipeline.tokenizer,
        text_encoder=pipeline.text_encoder,
        layer="penultimate",
        clip_skip_applies=False,
        pooled=False,
        embedding_key="clip_l",
    )
    return (first, second)


def _final_layer_norm(encoder: Any) -> Any:
    """The text encoder's final layer norm (``text_model.final_layer_norm`` before transformers 5, top-level since)."""
    inner = getattr(encoder, "text_model", encoder)
    return inner.final_layer_norm


def _device_of(pipeline: Any) -> torch.device | None:
    device = getattr(pipeline, "_execution_device", None)
    return device if isinstance(device, torch.device) else None


def _is_break(fragment: Fragment) -> bool:
    # The parser's marker only: "(BRE\\AK:-1)" is a plain fragment that happens to read the same.
    return fragment == BREAK


def _close(chunk: _Chunk, vocabulary: _Vocabulary) -> _Chunk:
    """``[start] + tokens + [end] + [pad...]``: 77 ids, weight 1 on everything added."""
    fill = vocabulary.length - len(chunk.tokens)
    return _Chunk(
        tokens=[vocabulary.start, *chunk.tokens, vocabulary.end, *([vocabulary.pad] * fill)],
        multipliers=[1.0, *chunk.multipliers, *([1.0] * (fill + 1))],
        fixes=chunk.fixes,
        used=len(chunk.tokens),
    )


def _vocabulary(slot: EncoderSlot, embeddings: Sequence[Embedding]) -> _Vocabulary:
    tokenizer = slot.tokenizer
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    width = int(slot.text_encoder.get_input_embeddings().weight.shape[1])
    found: list[tuple[tuple[int, ...], torch.Tensor]] = []
    for embedding in embeddings:
        vectors = embedding.vectors_for(slot.embedding_key, width)
        if vectors is None:
            continue
        ids = tuple(_token_ids(tokenizer, embedding.name))
        if ids:
            found.append((ids, vectors))
    found.sort(key=lambda item: -len(item[0]))
    return _Vocabulary(
        tokenizer=tokenizer,
        start=int(tokenizer.bos_token_id),
        end=int(tokenizer.eos_token_id),
        pad=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id),
        comma=comma if isinstance(comma, int) and comma != tokenizer.unk_token_id else None,
        length=min(CHUNK_TOKENS, int(tokenizer.model_max_length) - 2),
        embeddings=tuple(found),
    )


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    """``text``'s token ids without start/end; long texts are expected (they are chunked), so no length warning."""
    ids: list[int] = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    return ids


def _embedding_at(vocabulary: _Vocabulary, ids: Sequence[int], position: int) -> tuple[int, torch.Tensor] | None:
    for name_ids, vectors in vocabulary.embeddings:
        if tuple(ids[position : position + len(name_ids)]) == name_ids:
            return len(name_ids), vectors
    return None


@contextmanager
def _inject(encoder: Any, fixes: Sequence[tuple[int, torch.Tensor]]) -> Iterator[None]:
    """Overwrite the token embeddings at the embeddings' places for one forward pass (offset + 1: the start token)."""
    if not fixes:
        yield
        return

    def hook(module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for offset, vectors in fixes:
            output[:, offset + 1 : offset + 1 + vectors.shape[0]] = vectors.to(output)
        return output

    handle = encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
