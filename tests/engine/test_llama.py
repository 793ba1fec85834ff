"""The llama.cpp wrapper: special tokens shown only when asked for; output rows read in one view."""

from __future__ import annotations

from clawlan.engine.llama import Model


def test_keep_special_renders_marker_tokens(model_info):
    # A model of its own: keep_special changes rendering for every user of the instance.
    m = Model(model_info.path)
    try:
        turn = m.token_id("<start_of_turn>")
        assert turn is not None and m.piece(turn) == b""  # control tokens render as nothing by default
        assert m.keep_special(["<start_of_turn>", "<tool_call>"]) == [turn]  # <tool_call> is no single token here
        assert m.piece(turn) == b"<start_of_turn>"
        assert m.piece(m.token_id("<end_of_turn>")) == b""  # others unchanged
    finally:
        m.close()


def test_logits_rows_are_the_rows_logits_gives_one_by_one(real_model):
    # The runner's greedy path reads a chunk's rows as one view of llama_get_logits; it must be
    # the rows llama_get_logits_ith gives, also behind padding rows and with chunks out of id order.
    import numpy as np

    from clawlan.engine.llama import Context
    from clawlan.engine.microbatch import Part

    ctx = Context(real_model, n_ctx=1024, n_batch=128, n_seq=4, threads=1, unified=False)
    try:
        prompts = [real_model.tokenize(t) for t in ("One two three", "The sky is", "def f(x):")]
        parts = [Part(2, 0, prompts[2], 3), Part(0, 0, prompts[0], 1, n_head=2), Part(1, 0, prompts[1], 2)]
        status, rows = ctx.decode(parts)
        assert status == 0 and len(rows) == 6
        k = 0
        for p in parts:
            view = ctx.logits_rows(rows[k], p.n_logits)
            assert view.shape == (p.n_logits, real_model.n_vocab)
            for j in range(p.n_logits):
                np.testing.assert_array_equal(view[j], ctx.logits(rows[k + j]))
            k += p.n_logits
    finally:
        ctx.close()
