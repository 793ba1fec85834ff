"""Padding decode steps to llama.cpp's fast micro-batch shapes: the planner alone, then on the real model."""

from __future__ import annotations

import numpy as np
import pytest

from clawlan.engine.microbatch import Part, pad, rounded_tokens

# -- an oracle: llama.cpp's split_equal (llama-batch.cpp), first micro-batch only ------------------


def first_microbatch(parts: list[Part], n_ubatch: int) -> tuple[list[int], int]:
    """Sequence ids of the first micro-batch and tokens taken from each: a run of consecutive ids
    from the first part on, the same count from each."""
    run = [parts[0]]
    for p in parts[1:]:
        if p.seq_id != run[-1].seq_id + 1:
            break
        run.append(p)
    return [p.seq_id for p in run], max(1, min(min(len(p.tokens) for p in run), n_ubatch // len(run)))


def output_rows(parts: list[Part], n_ubatch: int = 512) -> int:
    ids, per_seq = first_microbatch(parts, n_ubatch)
    rows = 0
    for p in parts:
        if p.seq_id in ids:
            flagged = set(range(p.n_head)) | set(range(len(p.tokens) - p.n_logits, len(p.tokens)))
            rows += sum(1 for i in flagged if i < per_seq)
    return rows


def decoders(ids: list[int], t: int) -> list[Part]:
    return [Part(s, 100, [7] * t, t) for s in ids]


def plan(parts: list[Part], n_seq: int = 8, cells: int = 1000, n_batch: int = 512, at=40) -> list[Part]:
    pos = at if callable(at) else (lambda s: at)
    return pad(parts, streams=True, n_seq=n_seq, n_ubatch=512, n_batch=n_batch, next_pos=pos, stream_cells=cells)


def test_a_gap_between_decoders_gets_a_filler_and_the_rows_come_in_fours() -> None:
    out = plan(decoders([0, 1, 2, 4, 5, 6, 7], 2))
    assert [p.seq_id for p in out] == list(range(8))
    filler = out[3]
    assert filler.filler and filler.start == 40 and len(filler.tokens) == 2
    assert first_microbatch(out, 512) == (list(range(8)), 2)
    assert output_rows(out) == 16  # 14 rows, rounded up by the filler's own 2
    # already in fours: the filler's rows are not bought
    out = plan(decoders([0, 1, 3, 4, 5, 6], 2))
    assert out[2].filler and out[2].n_head == 0 and output_rows(out) == 12


def test_rows_are_rounded_with_prompt_tokens_before_edge_fillers() -> None:
    # 7 decoders and a prompt chunk in the run: 14 rows, rounded by two of the prompt's tokens
    parts = decoders([0, 1, 2, 3, 4, 5, 6], 2) + [Part(7, 0, [3] * 100, 1)]
    out = plan(parts)
    assert not any(p.filler for p in out)
    assert out[7].n_head == 2 and output_rows(out) == 16
    # 7 decoders alone: an eighth stream joins as a filler
    out = plan(decoders(list(range(7)), 1))
    assert [p.seq_id for p in out if p.filler] == [7]
    assert output_rows(out) == 8
    # ids 1..7: the filler goes below the run when there is no stream above it, or it is full
    assert [p.seq_id for p in plan(decoders(list(range(1, 8)), 1)) if p.filler] == [0]
    out = plan(decoders(list(range(1, 8)), 1), n_seq=9, at=lambda s: 1000 if s == 8 else 40)
    assert [p.seq_id for p in out if p.filler] == [0]
    # parts out of order are put in id order (llama.cpp's runs follow the batch order)
    out = plan(decoders([4, 5, 6, 0, 1, 2], 2))
    assert [p.seq_id for p in out] == list(range(7)) and output_rows(out) == 12


def test_padding_is_skipped_where_it_would_not_pay_or_not_fit() -> None:
    lone = decoders([0, 7], 1)  # two one-row micro-batches are cheaper than eight rows
    assert plan(lone) == lone
    uneven = decoders([0, 1], 2) + decoders([2], 3)  # unequal drafts split the step anyway
    assert plan(uneven) == uneven
    prompts = [Part(0, 0, [1] * 300, 1), Part(2, 0, [1] * 200, 0)]  # no decoder: nothing to gain
    assert plan(prompts) == prompts
    gap = decoders([0, 1, 2, 4, 5, 6, 7], 2)
    assert plan(gap, cells=41) == gap  # the free stream is full
    assert plan(gap, cells=42)[3].filler  # ... and just fits
    crowded = gap + [Part(8, 0, [1] * 496, 1)]  # 510 tokens in a batch of 512: no room for 2 more
    assert plan(crowded, n_seq=9, n_batch=511) == crowded and plan(crowded, n_seq=9)[3].filler
    # a stream holding a long idle conversation: a filler there would stretch every decoder's
    # attention over it (llama.cpp sizes a micro-batch's attention by its longest stream)
    assert plan(gap, cells=16384, at=lambda s: 12_000 if s == 3 else 40) == gap
    three = decoders([0, 1, 2], 3)  # 9 rows; rounding needs 3 filler tokens
    assert [p.seq_id for p in plan(three) if p.filler] == [3]
    five = decoders([0, 1, 2, 3, 4], 3)  # 15 rows: one 3-token filler with one output row
    out = plan(five)
    assert [(p.seq_id, p.n_head) for p in out if p.filler] == [(5, 1)] and output_rows(out) == 16
    long = decoders([0, 1, 2], 5)  # 15 rows, but a filler of 5 tokens passes the edge limit of 4
    assert plan(long) == long
    # gaps are filled between decoders only: a prompt chunk past a gap needs its own micro-batch anyway
    beyond = decoders(list(range(7)), 1) + [Part(10, 0, [1] * 200, 1)]
    out = plan(beyond, n_seq=16)
    assert [p.seq_id for p in out if p.filler] == [7] and output_rows(out) == 8


def test_unified_steps_round_their_rows_with_prompt_tokens() -> None:
    parts = decoders([0, 1, 2], 2) + [Part(5, 0, [1] * 50, 1)]  # 7 rows, one micro-batch
    out = pad(parts, streams=False, n_seq=64, n_ubatch=512, next_pos=lambda s: 0, stream_cells=4096)
    assert [p.n_head for p in out] == [0, 0, 0, 1] and not any(p.filler for p in out)


def test_rounded_tokens_picks_draft_lengths_that_round_well() -> None:
    assert rounded_tokens(8, 2, 0) == 2 and rounded_tokens(8, 3, 0) == 3  # 8 sequences: always fours
    assert rounded_tokens(1, 9, 7) == 8  # one decoder: 9 rows cost more than 8
    assert rounded_tokens(1, 3, 7) == 3  # up to four rows the tiles do not matter
    assert rounded_tokens(5, 3, 3) == 3  # 15 rows and one filler row: 16
    assert rounded_tokens(6, 3, 0) == 2  # 18 rows and no free stream for a filler: 12 rows
    assert rounded_tokens(5, 3, 0) == 3  # nothing rounds without a filler: the draft still pays
    assert rounded_tokens(3, 5, 5) == 4  # 15 rows would need a 5-token filler; 12 rows
    assert rounded_tokens(6, 9, 2) == 8
    assert all(rounded_tokens(n, 1, 0) == 1 for n in range(1, 9))


@pytest.fixture
def streams_ctx(real_model):
    """Eight streams of 128 cells on the real model."""
    from clawlan.engine.llama import Context

    ctx = Context(real_model, n_ctx=8 * 128, n_batch=128, n_seq=8, threads=1, unified=False)
    yield ctx
    ctx.close()


def test_a_padded_step_gives_the_same_tokens_and_leaves_no_filler_behind(streams_ctx, real_model) -> None:
    import llama_cpp as L

    from clawlan.engine.policy import cpu_policy, gpu_policy
    from clawlan.engine.runner import decode_shaped

    ctx = streams_ctx
    rng = np.random.default_rng(0)
    prompts = [[2] + rng.integers(1000, 20000, size=10 + s).tolist() for s in range(8)]
    for s, p in enumerate(prompts):
        assert ctx.decode([Part(s, 0, p, 1)])[0] == 0

    def probe(s: int) -> np.ndarray:
        """Stream s's logits for one more token, undone afterwards."""
        at = len(prompts[s])
        status, rows = ctx.decode([Part(s, at, [1234], 1)])
        assert status == 0
        out = ctx.logits(rows[0]).copy()
        L.llama_memory_seq_rm(ctx.memory, s, at, -1)
        return out

    before = probe(3)
    step = [(s, len(prompts[s]), [500, 600], 2) for s in range(8) if s != 3]  # stream 3 idle: a gap

    def run(padded: bool) -> tuple[int, list[np.ndarray]]:
        # the CPU policy pads (fillers, rows in fours); the GPU policy decodes the step as it is
        policy = cpu_policy(streams=True) if padded else gpu_policy(streams=True)
        parts = [Part(s, at, toks, n, index=k) for k, (s, at, toks, n) in enumerate(step)]
        status, rows = decode_shaped(ctx, policy, parts)
        assert status == 0
        got = [ctx.logits(r).copy() for k in range(len(step)) for r in rows[k]]
        n = ctx.batch.n_tokens
        for s, at, _, _ in step:
            L.llama_memory_seq_rm(ctx.memory, s, at, -1)
        return n, got

    n_padded, padded = run(True)
    n_plain, plain = run(False)
    assert (n_padded, n_plain) == (16, 14)  # two filler tokens kept the step one micro-batch
    assert len(padded) == len(plain) == 14
    # llama.cpp's results depend a little on a batch's shape anyway (kernels by row count, float
    # sums in another order): padding may move logits no further than decoding alone does.
    alone = []
    for s, at, toks, _ in step:
        status, rows = ctx.decode([Part(s, at, toks, 2)])
        assert status == 0
        alone += [ctx.logits(r).copy() for r in rows]
        L.llama_memory_seq_rm(ctx.memory, s, at, -1)
    shape_noise = max(float(np.abs(a - b).max()) for a, b in zip(plain, alone, strict=True))
    for a, b in zip(padded, plain, strict=True):
        assert int(np.argmax(a)) == int(np.argmax(b))
        assert float(np.abs(a - b).max()) <= max(2 * shape_noise, 1e-3)
    assert L.llama_memory_seq_pos_max(ctx.memory, 3) == len(prompts[3]) - 1  # the filler is gone
    np.testing.assert_array_equal(probe(3), before)  # and stream 3's own cells are untouched
