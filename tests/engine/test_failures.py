"""Failures: out of memory lowers the batch and loses nothing; any other failure ends only the
requests it belongs to. Over the fake llama.cpp (conftest.py), and on the real model where
llama.cpp itself can be made to fail (a KV budget it cannot hold)."""

from __future__ import annotations

import logging

from test_scheduler import prompt


def test_out_of_memory_lowers_effective_batch_and_loses_nothing(make_harness):
    # "llama_decode" finds no room whenever a step carries more than 2 sequences.
    h = make_harness(batch_size=4, token_budget=64, oom=lambda step: len(step.chunks) > 2)
    rids = [h.submit(prompt(i, 6), max_tokens=8) for i in range(4)]
    h.run()
    assert h.runner.oom_steps >= 1
    assert h.sched.oom_events == h.runner.oom_steps
    assert h.sched.effective_batch == 2  # lowered step by step, one at a time, from 4
    assert all(len(s) <= 2 for s in h.runner.steps)
    for rid in rids:
        h.check_reference(rid, 8)


def test_out_of_memory_lowers_by_one_per_event(make_harness):
    h = make_harness(batch_size=4, oom=lambda step: len(step.chunks) > 3)
    for i in range(4):
        h.submit(prompt(i, 6), max_tokens=3)
    h.engine._drain()
    h.engine.step()
    assert h.sched.effective_batch == 3
    assert len(h.sched.running) == 3 and len(h.sched.waiting) == 1
    h.run()
    assert h.sched.effective_batch == 3


def test_out_of_memory_with_one_sequence_fails_cleanly(make_harness):
    h = make_harness(batch_size=2, oom=lambda step: True)
    a = h.submit(prompt(1, 6), max_tokens=3)
    h.run(max_steps=20)
    fin = h.final(a)
    assert fin.finish_reason == "error" and "room" in fin.error
    assert h.engine.n_running == 0


def test_decode_error_status_ends_the_step_requests(make_harness):
    h = make_harness(batch_size=2, status=-1)
    a = h.submit(prompt(1, 6), max_tokens=3)
    h.run(max_steps=20)
    fin = h.final(a)
    assert fin.finish_reason == "error" and "-1" in fin.error
    assert not any(s.busy for s in h.kv.slots)



def test_device_out_of_memory_halves_the_batch_and_loses_nothing(make_harness, caplog):
    # "CUDA out of memory: lower batch_size from 8": llama_decode's -2 (the backend could not
    # allocate the step) whenever a step carries more than 2 sequences
    h = make_harness(batch_size=8, token_budget=64, oom=lambda step: len(step.chunks) > 2, oom_status=-2)
    rids = [h.submit(prompt(i, 6), max_tokens=8) for i in range(8)]
    with caplog.at_level(logging.WARNING, logger="clawlan.engine.scheduler"):
        h.run()
    assert h.sched.effective_batch == 2 and h.sched.oom_events == h.runner.oom_steps == 2  # 8 -> 4 -> 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["llama_decode out of memory (status -2): batch lowered to 4",
                     "llama_decode out of memory (status -2): batch lowered to 2"]  # fmt: skip
    assert all(len(s) <= 2 for s in h.runner.steps)
    for rid in rids:
        h.check_reference(rid, 8)


def test_device_out_of_memory_alone_halves_the_prompt_chunk(make_harness):
    h = make_harness(batch_size=1, token_budget=64, oom=lambda step: step.n_tokens > 16, oom_status=-2)
    rid = h.submit(prompt(3, 40), max_tokens=5)
    h.run()
    assert h.sched.token_budget == 16 and h.runner.oom_steps == 2  # 64 -> 32 -> 16
    h.check_reference(rid, 5)
    # one token that still cannot be allocated: the request ends with an error, the engine lives
    h = make_harness(batch_size=1, oom=lambda step: True, oom_status=-2)
    a = h.submit(prompt(1, 6), max_tokens=3)
    h.run(max_steps=20)
    assert h.final(a).finish_reason == "error" and h.engine.n_running == 0


def test_a_failing_sampler_fails_only_its_own_request(make_harness):
    h = make_harness(batch_size=4, draft_tokens=2)
    rids = [h.submit(prompt(i, 8), max_tokens=6) for i in range(4)]
    bad = rids[1]
    h.runner.fail_sampling = lambda seq: seq.request_id == bad
    h.run()
    fin = h.final(bad)
    assert fin.finish_reason == "error" and "sampling" in fin.error
    for rid in rids:
        if rid != bad:
            h.check_reference(rid, 6)
    assert not any(s.busy for s in h.kv.slots)


def test_a_failing_decode_fails_only_the_step_requests(make_harness):
    # batch of one: the second request waits while the first one's step raises
    h = make_harness(batch_size=1)
    a = h.submit(prompt(1, 8), max_tokens=4)
    b = h.submit(prompt(2, 8), max_tokens=4)
    decode = h.runner.decode

    def broken(step):
        if any(c.seq.request_id == a for c in step.chunks):
            raise RuntimeError("the backend fell over")
        return decode(step)

    h.runner.decode = broken
    h.run()
    assert h.final(a).finish_reason == "error" and "fell over" in h.final(a).error
    h.check_reference(b, 4)


def test_a_kv_budget_llama_cpp_cannot_hold_lowers_the_batch(real_model, make_real_engine, reference_logits):
    """The real model: the engine is told of 2048 KV cells, llama.cpp holds 256. llama_decode
    answers 1 (no KV slot) once the four sequences outgrow them; the batch comes down until they
    fit, and every output is still the one the request gives alone."""
    import asyncio

    from test_engine import assert_same_as_alone, final, greedy, run_alone, tokens_of

    from clawlan.engine.engine import Engine
    from clawlan.engine.kv_cache import KVCache
    from clawlan.engine.llama import Context
    from clawlan.engine.policy import cpu_policy
    from clawlan.engine.runner import LlamaRunner
    from clawlan.engine.scheduler import Scheduler

    texts = ["The history of the printing press", "A good password policy", "Photosynthesis is", "Chess rules:"]
    prompts = [real_model.tokenize((t + " ") * 6)[:48] for t in texts]
    n = 40
    assert sum(len(p) + n for p in prompts) > 256
    solo = run_alone(make_real_engine, real_model, prompts, n)
    ctx = Context(real_model, n_ctx=256, n_batch=256, n_seq=8, threads=1, unified=True)
    assert ctx.n_ctx == 256
    policy = cpu_policy(streams=False)
    sched = Scheduler(KVCache(2048, 8, ctx), 4, 256, 0.0, 2048, policy=policy)
    engine = Engine(sched, LlamaRunner(real_model, ctx, policy))
    engine.start()
    try:

        async def one(p):
            return [ev async for ev in engine.submit(greedy(p, n))]

        async def all_():
            return await asyncio.gather(*(one(p) for p in prompts))

        results = asyncio.run(all_())
    finally:
        engine.stop()
        ctx.close()
    assert sched.oom_events > 0 and sched.effective_batch < 4, "llama.cpp never ran out: the test proves nothing"
    for p, alone, evs in zip(prompts, solo, results, strict=True):
        fin = final(evs)
        assert fin.finish_reason == "length" and fin.error is None
        assert_same_as_alone(reference_logits, p, alone, tokens_of(evs))

