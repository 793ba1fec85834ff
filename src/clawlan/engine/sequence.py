"""One request's state inside the engine."""

from __future__ import annotations

import enum
import itertools
from typing import Any

from clawlan.engine.request import Request
from clawlan.engine.text import TextStream

_order = itertools.count()


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """Prompt plus generated tokens, and how much of that is already in the KV cache.

    ``tokens[:n_computed]`` is in the KV cache under ``seq_id``; the rest is
    fed in coming steps. While decoding exactly one token is pending (the one
    just sampled). A preempted sequence keeps its tokens, loses its KV and is
    recomputed when readmitted, so nothing it produced is lost.
    """

    def __init__(self, request: Request, arrival: float) -> None:
        self.request = request
        self.params = request.params
        self.tokens: list[int] = list(request.prompt_tokens)
        self.n_prompt = len(self.tokens)
        self.arrival = arrival
        self.order = next(_order)  # FCFS tie-break and "newest" for preemption
        self.status = Status.WAITING
        self.seq_id: int | None = None
        self.n_computed = 0
        self.n_cached: int | None = None  # prompt tokens reused from the prefix cache at first admission
        self.preemptions = 0
        self.finish_reason: str | None = None
        self.sampler: Any = None  # owned by the runner
        self.text = TextStream(request.params.stop)
        self.first_token_time: float | None = None
        self.ngrams: Any = None  # the scheduler's NgramIndex over tokens, built on the first draft
        self.draft_len: int | None = None  # longest draft worth trying now (adapts to acceptance)
        self.draft_tries = 0  # draft tokens fed for this sequence
        self.draft_hits = 0  # of them, accepted

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def n_generated(self) -> int:
        return len(self.tokens) - self.n_prompt

    @property
    def n_pending(self) -> int:
        return len(self.tokens) - self.n_computed

    @property
    def decoding(self) -> bool:
        return self.n_pending == 1 and self.n_generated > 0

    def __repr__(self) -> str:
        return f"Sequence({self.request_id}, {self.status.value}, seq={self.seq_id}, {self.n_computed}/{len(self.tokens)})"
