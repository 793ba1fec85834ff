"""Prefix-cache entries kept in host RAM, outside llama.cpp's KV cache.

Why: the KV cache is unified, so every decode's attention scans all occupied
cells, idle ones included; finished conversations left in it slow down every
running one (about 7% for eight idle 300-token entries on the embedded model).
So when new work starts, idle entries move here (``llama_state_seq_get_data``)
and come back on a hit (``llama_state_seq_set_data``), as llama-server's
``--cache-ram`` does. A copy costs milliseconds; recomputing costs about a
millisecond per token.

An entry restores a sequence that can be *continued at its end*, and only
there: llama.cpp saves the sliding-window layers' last window only, so a
restored entry cannot be cut back to an earlier position. A prompt uses an
entry only if the entry's tokens are a prefix of it. To serve prompts that
share just a beginning (many sessions with one system prompt), the KV cache
also saves that shared beginning as an entry of its own (see
:meth:`clawlan.engine.kv_cache.KVCache.offload_idle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Saved:
    tokens: list[int]
    data: Any  # the bytes llama_state_seq_get_data wrote (a numpy uint8 array)
    last_used: float

    @property
    def nbytes(self) -> int:
        return int(getattr(self.data, "nbytes", 0) or len(self.data))


class HostCache:
    """Saved sequence states, least recently used evicted beyond ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: list[Saved] = []
        self.nbytes = 0
        self.restored_tokens = 0  # prompt tokens served from here (hit_tokens counts them too)

    def __len__(self) -> int:
        return len(self.entries)

    def has(self, tokens: list[int]) -> bool:
        return any(e.tokens == tokens for e in self.entries)

    def put(self, tokens: list[int], data: Any, now: float) -> None:
        entry = Saved(list(tokens), data, now)
        if entry.nbytes > self.capacity:
            return
        self.entries = [e for e in self.entries if e.tokens != entry.tokens]
        self.entries.append(entry)
        self.nbytes = sum(e.nbytes for e in self.entries)
        while self.nbytes > self.capacity:
            old = min(self.entries, key=lambda e: e.last_used)
            self.entries.remove(old)
            self.nbytes -= old.nbytes

    def best(self, prompt: list[int]) -> Saved | None:
        """The longest entry whose tokens begin ``prompt``, leaving at least one token to compute."""
        best: Saved | None = None
        for e in self.entries:
            n = len(e.tokens)
            if n < len(prompt) and (best is None or n > len(best.tokens)) and prompt[:n] == e.tokens:
                best = e
        return best
