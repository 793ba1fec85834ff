"""Turns one scheduled step into one ``llama_decode``, shaped by the backend's policy, and
samples each chunk's next tokens."""

from __future__ import annotations

from typing import Protocol

from clawlan.engine.llama import Context, Model, Sampler
from clawlan.engine.microbatch import Part
from clawlan.engine.policy import StepPolicy
from clawlan.engine.scheduler import Chunk, Step
from clawlan.engine.sequence import Sequence
from clawlan.errors import EngineError


class Runner(Protocol):
    """What the engine needs from a model runner; the unit tests use a fake one.

    ``decode`` runs the step and returns llama_decode's status (0: done). After a 0, ``sample``
    gives, per chunk that samples, the tokens sampled in order: one, or for a drafted chunk
    every token up to and including the first that differs from the draft (so all but the last
    equal the draft). Sampling is per chunk so that a failure is its sequence's alone.
    """

    def decode(self, step: Step) -> int: ...

    def sample(self, chunk: Chunk) -> list[int]: ...

    def prepare(self, seq: Sequence) -> None: ...

    def release(self, seq: Sequence) -> None: ...

    def piece(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...


class LlamaRunner:
    def __init__(self, model: Model, ctx: Context, policy: StepPolicy) -> None:
        self.model = model
        self.ctx = ctx
        self.policy = policy
        self._rows: dict[Sequence, list[int]] = {}  # the last decode's output rows per sequence
        self._device: dict[Sequence, bool] = {}  # sampled on the device in the last decode

    def prepare(self, seq: Sequence) -> None:
        """Build the sequence's sampler chain; plain greedy needs none (argmax is cheaper)."""
        if not seq.params.plain_greedy and seq.sampler is None:
            seq.sampler = Sampler(self.model, seq.params)

    def release(self, seq: Sequence) -> None:
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None

    def decode(self, step: Step) -> int:
        self._rows = {}
        self._device = {}
        if step.n_tokens > self.ctx.n_batch:
            # Writing past llama_batch corrupts memory and llama.cpp aborts the process; fail the step.
            raise EngineError(f"a step of {step.n_tokens} tokens exceeds the batch of {self.ctx.n_batch}")
        parts = []
        for k, c in enumerate(step.chunks):
            assert c.seq.seq_id is not None
            parts.append(Part(c.seq.seq_id, c.start, c.tokens, c.n_logits, index=k))
            if self.policy.device_greedy and c.n_logits:
                # plain greedy with one row: argmax on the device; anything else needs the logits
                on = c.seq.sampler is None and c.n_logits == 1
                self._device[c.seq] = self.ctx.device_greedy(c.seq.seq_id, on)
        status, rows = decode_shaped(self.ctx, self.policy, parts)
        self._rows = {step.chunks[k].seq: r for k, r in rows.items()}
        return status

    def sample(self, chunk: Chunk) -> list[int]:
        # Row j holds the logits after the draft's first j tokens: sample each in turn while the
        # draft holds. Sampling row by row is exact for any sampler (the chain, grammar included,
        # sees the same tokens as without a draft), not only for greedy.
        rows = self._rows[chunk.seq]
        if self._device.get(chunk.seq):
            token = self.ctx.sampled(rows[0])
            if token < 0:
                raise EngineError("llama.cpp sampled no token on the device")
            return [token]
        sampler = chunk.seq.sampler
        if sampler is None:  # plain greedy: one argmax over the chunk's rows, no copy
            picks = self.ctx.logits_rows(rows[0], len(rows)).argmax(axis=1).tolist()
        got: list[int] = []
        for j, row in enumerate(rows):
            token = picks[j] if sampler is None else int(sampler.sample(self.ctx, row))
            got.append(token)
            if j == len(chunk.draft) or token != chunk.draft[j]:
                break
        return got

    def piece(self, token: int) -> bytes:
        return self.model.piece(token)

    def is_eog(self, token: int) -> bool:
        return self.model.is_eog(token)


def decode_shaped(ctx: Context, policy: StepPolicy, parts: list[Part]) -> tuple[int, dict[int, list[int]]]:
    """Decode ``parts`` shaped by ``policy`` (fillers removed from their streams again right
    after); llama_decode's status and, after a 0, each part's output rows under its ``index``."""
    plan = policy.shape(
        parts, n_seq=ctx.n_seq, n_batch=ctx.n_batch, next_pos=lambda s: ctx.seq_pos_max(s) + 1,
        # a filler may stretch attention no further than its stream holds (microbatch.py)
        stream_cells=ctx.n_ctx // ctx.n_seq if not ctx.unified else ctx.n_ctx,
    )  # fmt: skip
    try:
        status, flat = ctx.decode(plan)
    finally:
        for p in plan:
            if p.filler:  # not a sequence's tokens: out of the stream again
                ctx.seq_rm(p.seq_id, p.start, -1)
    rows: dict[int, list[int]] = {}
    if status == 0:
        k = 0
        for p in plan:
            if p.n_logits:
                rows[p.index] = flat[k : k + p.n_logits]
                k += p.n_logits
    return status, rows
