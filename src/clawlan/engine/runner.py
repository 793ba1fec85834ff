"""Turns one scheduled step into one ``llama_decode``, shaped by the backend's policy, and
samples each chunk's next tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from clawlan.engine.llama import Batch, Context, Model, Sampler
from clawlan.engine.microbatch import Part
from clawlan.engine.policy import StepPolicy
from clawlan.engine.request import TokenLogprob
from clawlan.engine.scheduler import Chunk, Step
from clawlan.engine.sequence import Sequence
from clawlan.errors import EngineError


class Runner(Protocol):
    """What the engine needs from a model runner; the unit tests use a fake one.

    ``decode`` launches the step and returns llama_decode's status (0: done, or on a GPU queued).
    After a 0, ``sample`` gives, per chunk that samples, the tokens sampled in order: one, or
    for a drafted chunk every token up to and including the first that differs from the draft
    (so all but the last equal the draft). Sampling is per chunk so that a failure is its
    sequence's alone. ``stage`` (overlap only) is called between a step's ``decode`` and its
    ``sample``s with the next step, whose tokens being sampled are still PENDING: it may write
    what else of that batch is known; ``decode`` of that step then fills in the tokens.
    """

    def decode(self, step: Step) -> int: ...

    def stage(self, step: Step) -> None: ...

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
        self._staged: Staged | None = None  # the next step's batch, written while the last computed

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
        staged, self._staged = self._staged, None
        if staged is not None and _same(staged.chunks, step.chunks):
            for p in staged.plan:  # the tokens sampled meanwhile replace PENDING
                if not p.filler:
                    p.tokens = step.chunks[p.index].tokens
            self.ctx.write_tokens(staged.plan)
            plan, batch = staged.plan, staged.batch
        else:  # not staged, or a sequence left it after the read: write it whole
            plan = shape(self.ctx, self.policy, self._parts(step))
            batch = self.ctx.write(plan)
        if self.policy.device_greedy:
            for c in step.chunks:
                if c.n_logits:
                    # plain greedy with one row: argmax on the device; anything else needs the
                    # logits (and no logprobs: they need the row on the host)
                    on = c.seq.sampler is None and c.n_logits == 1 and c.seq.params.logprobs is None
                    self._device[c.seq] = self.ctx.device_greedy(c.seq.seq_id, on)  # type: ignore[arg-type]
        status, rows = run_plan(self.ctx, plan, batch)
        self._rows = {step.chunks[k].seq: r for k, r in rows.items()}
        return status

    def stage(self, step: Step) -> None:
        plan = shape(self.ctx, self.policy, self._parts(step))
        self._staged = Staged(list(step.chunks), plan, self.ctx.write(plan))

    @staticmethod
    def _parts(step: Step) -> list[Part]:
        parts = []
        for k, c in enumerate(step.chunks):
            assert c.seq.seq_id is not None
            parts.append(Part(c.seq.seq_id, c.start, c.tokens, c.n_logits, index=k))
        return parts

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
        n_top = chunk.seq.params.logprobs
        got: list[int] = []
        for j, row in enumerate(rows):
            # log-softmax before sampling: the row is the model's, whatever the sampler does next
            lp = None if n_top is None else log_softmax(self.ctx.logits_rows(row, 1)[0])
            token = picks[j] if sampler is None else int(sampler.sample(self.ctx, row))
            got.append(token)
            if lp is not None:
                chunk.seq.logprobs.append(token_logprob(lp, token, n_top or 0))
            if j == len(chunk.draft) or token != chunk.draft[j]:
                break
        return got

    def piece(self, token: int) -> bytes:
        return self.model.piece(token)

    def is_eog(self, token: int) -> bool:
        return self.model.is_eog(token)


def log_softmax(row: np.ndarray) -> np.ndarray:
    """log p over the vocabulary from one logits row, in float64 (a new array; the row is untouched)."""
    x = row.astype(np.float64)
    x -= x.max()
    x -= np.log(np.exp(x).sum())
    return x


def token_logprob(lp: np.ndarray, token: int, n_top: int) -> TokenLogprob:
    """``token``'s log probability and the ``n_top`` most likely tokens, most likely first."""
    top: list[tuple[int, float]] = []
    if n_top > 0:
        k = min(n_top, lp.shape[0])
        idx = np.argpartition(lp, -k)[-k:]
        idx = idx[np.argsort(-lp[idx], kind="stable")]
        top = [(int(i), float(lp[i])) for i in idx]
    return TokenLogprob(token, float(lp[token]), top)


@dataclass
class Staged:
    """A step's batch written ahead of its tokens: the chunks it was made of, its plan, the batch."""

    chunks: list[Chunk]
    plan: list[Part]
    batch: Batch


def _same(a: list[Chunk], b: list[Chunk]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def shape(ctx: Context, policy: StepPolicy, parts: list[Part]) -> list[Part]:
    """``parts`` as ``policy`` decodes them on ``ctx`` (in id order, padded where it pays)."""
    return policy.shape(
        parts, n_seq=ctx.n_seq, n_batch=ctx.n_batch, next_pos=lambda s: ctx.seq_pos_max(s) + 1,
        # a filler may stretch attention no further than its stream holds (microbatch.py)
        stream_cells=ctx.n_ctx // ctx.n_seq if not ctx.unified else ctx.n_ctx,
    )  # fmt: skip


def run_plan(ctx: Context, plan: list[Part], batch: Batch) -> tuple[int, dict[int, list[int]]]:
    """Launch ``batch`` (written from ``plan``), take the fillers out of their streams again;
    llama_decode's status and, after a 0, each part's output rows under its ``index``."""
    try:
        status = ctx.launch(batch)
    finally:
        for p in plan:
            if p.filler:  # not a sequence's tokens: out of the stream again
                ctx.seq_rm(p.seq_id, p.start, -1)
    rows: dict[int, list[int]] = {}
    if status == 0:
        k = 0
        for p in plan:
            if p.n_logits:
                rows[p.index] = batch.rows[k : k + p.n_logits]
                k += p.n_logits
    return status, rows


def decode_shaped(ctx: Context, policy: StepPolicy, parts: list[Part]) -> tuple[int, dict[int, list[int]]]:
    """Decode ``parts`` shaped by ``policy`` (fillers removed from their streams again right
    after); llama_decode's status and, after a 0, each part's output rows under its ``index``."""
    plan = shape(ctx, policy, parts)
    return run_plan(ctx, plan, ctx.write(plan))
