"""Overlap: step N+1 is scheduled between launching step N and reading it (policy.py, point 9 of
scheduler.py). Over the fake llama.cpp, whose ``calls`` record what the engine asked in order;
on the real model, the same greedy outputs with and without overlap."""

from __future__ import annotations

import pytest
from engine_fakes import reference
from test_scheduler import prompt

from clawlan.engine.engine import EngineConfig, build_engine
from clawlan.engine.policy import choose
from clawlan.engine.request import Request, SamplingParams
from clawlan.engine.scheduler import PENDING


def test_the_gpu_policy_overlaps_without_drafts_only():
    assert choose(True, -1, gpu_capable=True, draft_tokens=0).overlap
    assert not choose(True, -1, gpu_capable=True, draft_tokens=8).overlap  # a draft needs N's tokens
    assert not choose(True, 0, gpu_capable=True, draft_tokens=0).overlap  # a CPU decode is synchronous
    assert not choose(True, -1, gpu_capable=False, draft_tokens=0).overlap
    with pytest.raises(ValueError, match="draft_tokens 0"):
        build_engine(object(), EngineConfig(overlap=True, draft_tokens=4))


def decodes(h, rid: str) -> list[int]:
    """The decode steps (by number) that fed ``rid``."""
    return [k for k, chunks in enumerate(h.runner.steps) if any(r == rid for r, _, _ in chunks)]


def prepared(h, rid: str) -> bool:
    return h.sched.prepared is not None and any(c.seq.request_id == rid for c in h.sched.prepared.chunks)


def test_the_next_step_is_prepared_between_launch_and_read(make_harness):
    h = make_harness(batch_size=2, overlap=True)
    a, b = h.submit(prompt(1, 6), max_tokens=5), h.submit(prompt(2, 7), max_tokens=5)
    h.run()
    calls = h.runner.calls
    stages = [i for i, c in enumerate(calls) if c[0] == "stage"]
    assert len(stages) == len(h.runner.steps) - 1  # every step but the last prepared its successor
    for i in stages:
        # launch N, prepare N+1, then read N: the staged step's decoders wait for their token
        assert calls[i - 1][0] == "decode" and calls[i + 1][0] == "sample"
        staged = calls[i][1]
        assert staged and all(toks[-1] == PENDING for _, _, toks in staged)
        # the step decoded next is the staged one, its tokens filled in after the read
        n = next(c for c in calls[i:] if c[0] == "decode")[1]
        assert [(r, s) for r, s, _ in h.runner.steps[n]] == [(r, s) for r, s, _ in staged]
    h.check_reference(a, 5)
    h.check_reference(b, 5)


def test_same_outputs_with_and_without_overlap(make_harness):
    """Staggered arrivals, a KV budget that forces preemption, and out-of-memory retries."""

    def run(overlap: bool, **kw) -> tuple[list[list[int]], int]:
        h = make_harness(n_cells=96, batch_size=3, n_slots=4, token_budget=24, overlap=overlap, **kw)
        rids = []
        for i in range(6):
            rids.append(h.submit(prompt(i, 8 + 3 * i), max_tokens=4 + 2 * i))
            h.step()
        h.run()
        for i, rid in enumerate(rids):
            h.check_reference(rid, 4 + 2 * i)
        return [h.tokens(r) for r in rids], sum(1 for c in h.runner.calls if c[0] == "stage")

    plain, none = run(False)
    assert none == 0
    got, staged = run(True)
    assert got == plain and staged > 0
    got, _ = run(True, oom=lambda step: len(step.chunks) > 2)  # a prepared step can fail too
    assert got == plain


def test_preparing_never_preempts(make_harness):
    h = make_harness(n_cells=40, batch_size=3, n_slots=3, token_budget=32, overlap=True)
    rids = [h.submit(prompt(i, 10), max_tokens=12) for i in range(3)]
    preempt = h.sched.preempt

    def checked(seq, keep=True):
        # its victim could be in the step computing: it would be sampled while waiting
        assert not h.sched._preparing, "preempted while preparing"
        preempt(seq, keep)

    h.sched.preempt = checked
    h.run()
    assert h.sched.preemptions > 0  # the cache is too small for all three
    assert h.sched.unprepared > 0  # each preemption waited for the read of the step computing
    for rid in rids:
        h.check_reference(rid, 12)


def test_a_stop_token_at_step_n_leaves_the_prepared_step(make_harness):
    h = make_harness(batch_size=2, overlap=True)
    p = prompt(1, 6)
    ref = reference(p, 12)
    k = next(i for i in range(2, 12) if ref[i] not in ref[:i])  # the first sampling of this token
    a = h.submit(p, max_tokens=12, stop_token_ids=[ref[k]])
    b = h.submit(prompt(2, 6), max_tokens=12)
    h.engine._drain()
    while not any(ev.finish_reason for ev in h.events[a]):
        h.step()
    assert h.final(a).finish_reason == "stop" and h.tokens(a) == ref[:k]
    assert prepared(h, a)  # scheduled before its stop token was read ...
    last = len(h.runner.steps) - 1
    h.step()
    assert decodes(h, a)[-1] == last  # ... and not decoded after it
    assert h.runner.fed[a] == len(p) + k  # the stop token itself was never fed
    h.run()
    h.check_reference(b, 12)


def test_a_sequence_at_max_tokens_is_not_prepared(make_harness):
    h = make_harness(batch_size=2, overlap=True)
    a = h.submit(prompt(1, 6), max_tokens=3)
    b = h.submit(prompt(2, 6), max_tokens=8)
    h.engine._drain()
    while not any(ev.finish_reason for ev in h.events[a]):
        h.step()
        assert h.sched.prepared is not None
    assert not prepared(h, a)  # its third token was its last: no cell reserved, nothing to drop
    assert h.runner.fed[a] == 6 + 2
    h.run()
    h.check_reference(a, 3)
    h.check_reference(b, 8)


def test_a_cancel_between_steps_leaves_the_prepared_step(make_harness):
    h = make_harness(batch_size=2, overlap=True)
    a = h.submit(prompt(1, 6), max_tokens=20)
    b = h.submit(prompt(2, 6), max_tokens=8)
    for _ in range(3):
        h.step()
    assert prepared(h, a)
    last = len(h.runner.steps) - 1
    h.engine.cancel(a)
    h.step()
    assert h.final(a).finish_reason == "cancelled"
    assert decodes(h, a)[-1] == last
    assert not any(s.busy for s in h.kv.slots if s.tokens == h.prompts[a])  # its slot is idle again
    h.run()
    h.check_reference(b, 8)


def test_a_failed_sampling_leaves_the_prepared_step(make_harness):
    h = make_harness(batch_size=2, overlap=True, fail_sampling=lambda seq: seq.n_generated == 3 and seq.n_prompt == 6)
    a = h.submit(prompt(1, 6), max_tokens=20)
    b = h.submit(prompt(2, 7), max_tokens=8)
    h.engine._drain()
    while not any(ev.finish_reason for ev in h.events[a]):
        h.step()
    assert h.final(a).finish_reason == "error"
    assert h.final(a).completion_tokens == 3  # the token being sampled is not counted
    assert prepared(h, a)
    last = len(h.runner.steps) - 1
    h.run()
    assert decodes(h, a)[-1] == last
    h.check_reference(b, 8)


def test_a_failed_decode_prepares_nothing(make_harness):
    h = make_harness(batch_size=2, overlap=True, status=-1)
    a = h.submit(prompt(1, 6), max_tokens=3)
    h.run(max_steps=5)
    assert h.final(a).finish_reason == "error"
    assert not any(c[0] in ("stage", "sample") for c in h.runner.calls)
    assert h.sched.prepared is None and not any(s.busy for s in h.kv.slots)


# -- the real model ---------------------------------------------------------------------------

PROMPTS = ["The capital of France is", "def fibonacci(n):", "1, 2, 3, 4, 5,", "Monday, Tuesday, Wednesday,"]


@pytest.mark.parametrize("layout", ["streams", "unified"])
def test_real_model_same_outputs_with_and_without_overlap(real_model, make_real_engine, layout):
    """Greedy on the device (the GPU policy's), and on the host where a request needs its logits
    (logprobs, a seeded sampler chain). All are admitted at once, so each step holds the same
    sequences either way (llama.cpp's sums depend a little on a step's shape)."""

    def run(overlap: bool) -> list[tuple[list[int], str, str | None]]:
        eng = make_real_engine(
            batch_size=8, kv_tokens=8 * 512, max_seq_tokens=512, kv_layout=layout, draft_tokens=0,
            device_greedy=True, overlap=overlap,
        )  # fmt: skip
        assert eng.engine.overlap is overlap
        greedy = [SamplingParams(max_tokens=6 + 5 * i, temperature=0) for i in range(len(PROMPTS))]
        other = [
            SamplingParams(max_tokens=30, temperature=0, stop=["elif"]),  # a stop string mid-batch
            SamplingParams(max_tokens=12, temperature=0, logprobs=2),
            SamplingParams(max_tokens=12, temperature=0.8, seed=7),
        ]
        reqs = [Request(real_model.tokenize(p), sp) for p, sp in zip(PROMPTS + PROMPTS[1:], greedy + other, strict=True)]
        out = []
        for evs in eng.run(*reqs):
            lps = [(lp.token, round(lp.logprob, 4)) for ev in evs for lp in ev.logprobs or []]
            out.append(([t for ev in evs for t in ev.token_ids], "".join(ev.text for ev in evs) + str(lps), evs[-1].finish_reason))
        return out

    plain, overlapped = run(False), run(True)
    assert overlapped == plain
    assert plain[4][2] == "stop" and "(" in plain[5][1]  # the stop string ended one; logprobs came
