"""Turns one scheduled step into one ``llama_decode`` and samples the next tokens."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from clawlan.engine.llama import Context, Model, Sampler
from clawlan.engine.scheduler import Step
from clawlan.engine.sequence import Sequence
from clawlan.errors import EngineError


class Runner(Protocol):
    """What the engine needs from a model runner; the unit tests use a fake one."""

    def run(self, step: Step) -> tuple[int, dict[Sequence, int]]: ...

    def prepare(self, seq: Sequence) -> None: ...

    def release(self, seq: Sequence) -> None: ...

    def piece(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...


class LlamaRunner:
    def __init__(self, model: Model, ctx: Context) -> None:
        self.model = model
        self.ctx = ctx

    def prepare(self, seq: Sequence) -> None:
        """Build the sequence's sampler chain; plain greedy needs none (argmax is cheaper)."""
        if not seq.params.plain_greedy and seq.sampler is None:
            seq.sampler = Sampler(self.model, seq.params)

    def release(self, seq: Sequence) -> None:
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None

    def run(self, step: Step) -> tuple[int, dict[Sequence, int]]:
        if step.n_tokens > self.ctx.n_batch:
            # Writing past llama_batch corrupts memory and llama.cpp aborts the process; fail the step.
            raise EngineError(f"a step of {step.n_tokens} tokens exceeds the batch of {self.ctx.n_batch}")
        parts = []
        for c in step.chunks:
            assert c.seq.seq_id is not None
            parts.append((c.seq.seq_id, c.start, c.tokens, c.wants_logits))
        status, rows = self.ctx.decode(parts)
        if status != 0:
            return status, {}
        sampled: dict[Sequence, int] = {}
        k = 0
        for c in step.chunks:
            if not c.wants_logits:
                continue
            row = rows[k]
            k += 1
            seq = c.seq
            if seq.sampler is None:
                sampled[seq] = int(np.argmax(self.ctx.logits(row)))
            else:
                sampled[seq] = seq.sampler.sample(self.ctx, row)
        return 0, sampled

    def piece(self, token: int) -> bytes:
        return self.model.piece(token)

    def is_eog(self, token: int) -> bool:
        return self.model.is_eog(token)
