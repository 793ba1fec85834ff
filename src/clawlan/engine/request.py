"""What a caller asks of the engine, and the events it gets back."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

_ids = itertools.count(1)


@dataclass
class SamplingParams:
    """Per-request sampling. ``temperature == 0`` means greedy."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    grammar: str | None = None  # GBNF whose root rule is ``root``
    # With triggers the grammar is lazy: free text until the output matches one of these regexes.
    grammar_triggers: list[str] = field(default_factory=list)
    # None: no log probabilities; k >= 0: each output token's, with the k most likely beside it.
    # Asking for them turns device-side greedy off (the logits row must come to the host).
    logprobs: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing that needs llama.cpp's sampler chain (argmax is enough)."""
        return (
            self.greedy
            and self.grammar is None
            and self.repeat_penalty == 1.0
            and self.presence_penalty == 0.0
            and self.frequency_penalty == 0.0
        )


@dataclass
class TokenLogprob:
    """One output token's log probability under the model (log-softmax of the raw logits row it
    was sampled from, before temperature, penalties or grammar), and the ``top`` most likely
    tokens of that row as (token, logprob), most likely first."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Request:
    prompt_tokens: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = field(default_factory=lambda: f"req-{next(_ids)}")


@dataclass
class Event:
    """One step's output for one request. The last event has ``finish_reason`` set.

    ``finish_reason`` is ``stop`` (end of generation or a stop string),
    ``length`` (max_tokens or the context), ``cancelled`` or ``error``.
    """

    request_id: str
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None  # one per token in token_ids, when the request asked
