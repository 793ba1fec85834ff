"""Greedy argmax inside llama.cpp's graph (``llama_set_sampler``; the GPU policy's way to keep
vocabulary-sized logits on the device), run on the CPU build: same tokens as the host's argmax."""

from __future__ import annotations

import numpy as np
from test_engine import PROMPTS, assert_same_as_alone, final, greedy, run_alone, tokens_of

from clawlan.engine.request import Request, SamplingParams


def test_device_greedy_gives_the_host_argmax(real_model):
    from clawlan.engine.llama import Context
    from clawlan.engine.microbatch import Part

    ctx = Context(real_model, n_ctx=1024, n_batch=128, n_seq=4, threads=1, unified=False)
    try:
        prompts = [real_model.tokenize(t) for t in ("One two three", "The sky is", "def f(x):")]
        assert ctx.device_greedy(0, True) and ctx.device_greedy(2, True)
        status, rows = ctx.decode([Part(s, 0, p, 1) for s, p in enumerate(prompts)])
        assert status == 0
        device = [ctx.sampled(r) for r in rows]
        assert device[1] == -1  # sequence 1 samples on the host: its logits came back instead
        host = int(np.argmax(ctx.logits(rows[1])))
        assert not ctx.device_greedy(0, False) and ctx.device_greedy(2, True)
        # the same prompts again, sequence 0 now on the host: the argmax agrees with the device's
        for s in (0, 1):
            ctx.seq_rm(s, 0, -1)
        status, again = ctx.decode([Part(s, 0, p, 1) for s, p in enumerate(prompts) if s != 2])
        assert status == 0
        assert int(np.argmax(ctx.logits(again[0]))) == device[0]
        assert int(np.argmax(ctx.logits(again[1]))) == host
    finally:
        ctx.close()


def test_an_engine_with_device_greedy_gives_the_alone_outputs(real_model, make_real_engine, reference_logits):
    n = 16
    prompts = [real_model.tokenize(p) for p in PROMPTS[:6]]
    solo = run_alone(make_real_engine, real_model, prompts, n)
    eng = make_real_engine(batch_size=8, kv_tokens=8 * 1024, max_seq_tokens=1024, draft_tokens=0, device_greedy=True)
    ctx = eng.engine.context
    calls = []
    sampled = ctx.sampled
    ctx.sampled = lambda i: calls.append(i) or sampled(i)
    # a seeded sampling request beside them takes the host path in the same steps
    party = real_model.tokenize("Ideas for the office party:")
    seeded = Request(party, SamplingParams(max_tokens=n, temperature=1.0, seed=3))
    *results, other = eng.run(*(greedy(p, n) for p in prompts), seeded)
    assert len(calls) >= 6 * n - 6, "the greedy requests did not sample on the device"
    assert final(other).finish_reason == "length" and len(tokens_of(other)) == n
    for p, s, evs in zip(prompts, solo, results, strict=True):
        assert final(evs).finish_reason == "length"
        assert_same_as_alone(reference_logits, p, s, tokens_of(evs))
