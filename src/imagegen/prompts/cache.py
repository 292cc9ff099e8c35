"""Encoded prompts kept across requests, so a repeated prompt (the same negative prompt on every request, a client
regenerating with new seeds, the hires fix's second pass, every tile of an SD upscale) is not encoded again.

A prompt's conditioning depends on more than its text: the model's text encoders, the LoRAs active on them (and
their text-encoder weights), the embeddings the encoder knows, clip skip and emphasis. :class:`CachedEncoder` keys
each entry on all of them (the caller says what the encoder's state is), so a cached tensor is exactly what encoding
again would give. Entries are evicted least recently used first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from imagegen.prompts.encoding import Conditioning, PromptEncoder

__all__ = ["CachedEncoder", "ConditioningCache"]


class ConditioningCache:
    """At most ``max_entries`` conditionings by key, least recently used evicted; thread-safe. ``hits`` and
    ``misses`` count lookups (for tests and benchmarks)."""

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be at least 0, got {max_entries}")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, Conditioning] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, encode: Callable[[], Conditioning]) -> Conditioning:
        """The conditioning stored under ``key``, else ``encode()``'s (stored)."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        conditioning = encode()  # outside the lock: encoding takes the text encoders' time
        with self._lock:
            if self.max_entries:
                self._entries[key] = conditioning
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return conditioning

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class CachedEncoder:
    """A :class:`PromptEncoder` whose results are kept in ``cache`` under ``state`` + the text. ``state`` must hold
    everything the conditioning depends on besides the text (model, active LoRAs, embeddings, clip skip, emphasis)."""

    def __init__(self, encoder: PromptEncoder, cache: ConditioningCache, state: Hashable) -> None:
        self.encoder = encoder
        self.cache = cache
        self.state = state

    def encode(self, text: str) -> Conditioning:
        return self.cache.get((self.state, text), lambda: self.encoder.encode(text))
