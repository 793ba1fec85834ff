"""Padding decode steps to llama.cpp's fast micro-batch shapes: the planner alone, then on the real model."""

from __future__ import annotations

import numpy as np
import pytest

from clawlan.engine.microbatch import Part, first_microbatch, output_rows, pad, rounded_tokens


def decoders(ids: list[int], t: int) -> list[Part]:
    return [Part(s, 100, [7] * t, t) for s in ids]


def plan(parts: list[Part], n_seq: int = 8, cells: int = 1000, n_batch: int = 512, at: int = 40) -> list[Part]:
    return pad(parts, streams=True, n_seq=n_seq, n_ubatch=n_batch, next_pos=lambda s: at, stream_cells=cells)


def test_first_microbatch_is_a_run_of_consecutive_ids_with_equal_tokens() -> None:
    parts = [Part(0, 0, [1, 2], 2), Part(1, 0, [1] * 50, 1), Part(2, 0, [1, 2], 2), Part(4, 0, [1, 2], 2)]
    assert first_microbatch(parts, 512, streams=True) == ([0, 1, 2], 2)
    assert first_microbatch(parts, 4, streams=True) == ([0, 1, 2], 1)  # n_ubatch caps tokens per sequence
    assert first_microbatch(parts, 512, streams=False) == ([0, 1, 2, 4], 0)
    # the prompt chunk contributes its first two tokens, none of them an output row
    assert output_rows(parts, 512, streams=True) == 4
    assert output_rows(parts, 512, streams=False) == 7


def test_a_gap_between_decoders_gets_a_filler_and_the_rows_come_in_fours() -> None:
    out = plan(decoders([0, 1, 2, 4, 5, 6, 7], 2))
    assert [p.seq_id for p in out] == list(range(8))
    filler = out[3]
    assert filler.filler and filler.start == 40 and len(filler.tokens) == 2 and filler.n_head == 2
    assert first_microbatch(out, 512, streams=True) == (list(range(8)), 2)
    assert output_rows(out, 512, streams=True) == 16


def test_rows_are_rounded_with_prompt_tokens_before_edge_fillers() -> None:
    # 7 decoders and a prompt chunk in the run: 14 rows, rounded by two of the prompt's tokens
    parts = decoders([0, 1, 2, 3, 4, 5, 6], 2) + [Part(7, 0, [3] * 100, 1)]
    out = plan(parts)
    assert not any(p.filler for p in out)
    assert out[7].n_head == 2 and output_rows(out, 512, streams=True) == 16
    # 7 decoders alone: an eighth stream joins as a filler
    out = plan(decoders(list(range(7)), 1))
    assert [p.seq_id for p in out if p.filler] == [7]
    assert output_rows(out, 512, streams=True) == 8
    # ids 1..7: the filler goes below the run when there is no stream above it
    out = plan(decoders(list(range(1, 8)), 1))
    assert [p.seq_id for p in out if p.filler] == [0]


def test_padding_is_skipped_where_it_would_not_pay_or_not_fit() -> None:
    lone = decoders([0, 7], 1)  # two one-row micro-batches are cheaper than eight rows
    assert plan(lone) == lone
    uneven = decoders([0, 1], 2) + decoders([2], 3)  # unequal drafts split the step anyway
    assert plan(uneven) == uneven
    prompts = [Part(0, 0, [1] * 300, 1), Part(2, 0, [1] * 200, 0)]  # no decoder: nothing to gain
    assert plan(prompts) == prompts
    gap = decoders([0, 1, 2, 4, 5, 6, 7], 2)
    assert plan(gap, cells=41) == gap  # the free stream is full
    assert plan(gap, n_batch=15) == gap  # the batch has no room for the filler
    three = decoders([0, 1, 2], 3)  # 9 rows; rounding needs 3 filler tokens
    assert [p.seq_id for p in plan(three) if p.filler] == [3]
    five = decoders([0, 1, 2, 3, 4], 3)  # 15 rows; rounding would need 9 filler tokens: left alone
    assert plan(five) == five


def test_rounded_tokens_picks_draft_lengths_that_round_well() -> None:
    assert rounded_tokens(8, 2) == 2 and rounded_tokens(8, 3) == 3  # 8 sequences: always fours
    assert rounded_tokens(1, 9) == 8  # one decoder: 9 rows cost more than 8
    assert rounded_tokens(1, 3) == 3  # up to four rows the tiles do not matter
    assert rounded_tokens(5, 3) == 2  # 15 rows: no; 10 rows and one 2-token filler: 12
    assert rounded_tokens(6, 9) == 8
    assert all(rounded_tokens(n, 1) == 1 for n in range(1, 9))


@pytest.fixture
def streams_ctx(real_model):
    from clawlan.engine.llama import Context

    ctx = Context(real_model, n_ctx=8 * 128, n_batch=128, n_seq=8, threads=1, unified=False)
    yield ctx
    ctx.close()


def test_a_padded_step_gives_the_same_tokens_and_leaves_no_filler_behind(streams_ctx, real_model) -> None:
    import llama_cpp as L

    ctx = streams_ctx
    rng = np.random.default_rng(0)
    prompts = [[2] + rng.integers(1000, 20000, size=10 + s).tolist() for s in range(8)]
    for s, p in enumerate(prompts):
        assert ctx.decode([(s, 0, p, 1)])[0] == 0

    def probe(s: int) -> np.ndarray:
        """Stream s's logits for one more token, undone afterwards."""
        at = len(prompts[s])
        status, rows = ctx.decode([(s, at, [1234], 1)])
        assert status == 0
        out = ctx.logits(rows[0]).copy()
        L.llama_memory_seq_rm(ctx.memory, s, at, -1)
        return out

    before = probe(3)
    step = [(s, len(prompts[s]), [500, 600], 2) for s in range(8) if s != 3]  # stream 3 idle: a gap

    def run(padded: bool) -> tuple[int, list[np.ndarray]]:
        ctx.pad_steps = padded
        status, rows = ctx.decode(step)
        assert status == 0
        got = [ctx.logits(r).copy() for r in rows]
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
        status, rows = ctx.decode([(s, at, toks, 2)])
        assert status == 0
        alone += [ctx.logits(r).copy() for r in rows]
        L.llama_memory_seq_rm(ctx.memory, s, at, -1)
    shape_noise = max(float(np.abs(a - b).max()) for a, b in zip(plain, alone, strict=True))
    for a, b in zip(padded, plain, strict=True):
        assert int(np.argmax(a)) == int(np.argmax(b))
        assert float(np.abs(a - b).max()) <= max(2 * shape_noise, 1e-3)
    assert L.llama_memory_seq_pos_max(ctx.memory, 3) == len(prompts[3]) - 1  # the filler is gone
    np.testing.assert_array_equal(probe(3), before)  # and stream 3's own cells are untouched
