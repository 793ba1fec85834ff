"""Turns one scheduled step into one ``llama_decode`` and samples the next tokens."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from clawlan.engine.llama import Context, Model, Sampler
from clawlan.engine.scheduler import Step
from clawlan.engine.sequence import Sequence
from clawlan.errors import EngineError


class Runner(Protocol):
    """What the engine needs from a model runner; the unit tests use a fake one.

    ``run`` returns, per sequence that samples this step, the tokens sampled in
    order: one, or for a drafted chunk every token up to and including the first
    that differs from the draft (so all but the last equal the draft).
    """

    def run(self, step: Step) -> tuple[int, dict[Sequence, list[int]]]: ...

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

    def run(self, step: Step) -> tuple[int, dict[Sequence, list[int]]]:
        if step.n_tokens > self.ctx.n_batch:
            # Writing past llama_batch corrupts memory and llama.cpp aborts the process; fail the step.
            raise EngineError(f"a step of {step.n_tokens} tokens exceeds the batch of {self.ctx.n_batch}")
        parts = []
        for c in step.chunks:
            assert c.seq.seq_id is not None
            parts.append((c.seq.seq_id, c.start, c.tokens, c.n_logits))
        status, rows = self.ctx.decode(parts)
        if status != 0:
            return status, {}
        sampled: dict[Sequence, list[int]] = {}
        k = 0
        for c in step.chunks:
            if not c.n_logits:
                continue
            mine, k = rows[k : k + c.n_logits], k + c.n_logits
            # Row j holds the logits after the draft's first j tokens: sample each in turn while
            # the draft holds. Sampling row by row is exact for any sampler (the chain, grammar
            # included, sees the same tokens as without a draft), not only for greedy.
            got = sampled[c.seq] = []
            for j, row in enumerate(mine):
                token = self._sample(c.seq, row)
                got.append(token)
                if j == len(c.draft) or token != c.draft[j]:
                    break
        return 0, sampled

    def _sample(self, seq: Sequence, row: int) -> int:
        if seq.sampler is None:
            return int(np.argmax(self.ctx.logits(row)))
        return int(seq.sampler.sample(self.ctx, row))

    def piece(self, token: int) -> bytes:
        return self.model.piece(token)

    def is_eog(self, token: int) -> bool:
        return self.model.is_eog(token)
