"""The scheduler and engine loop over a deterministic fake llama.cpp (see conftest.py).

Every test drives ``engine._drain()`` / ``engine.step()`` on the test's own
thread with an injected clock: no threads, no sleeps. The fake derives each
token from the sequence's whole KV content, so comparing an output with
``reference`` (the same request alone) catches lost, mixed or mis-resumed KV.
"""

from __future__ import annotations

import math

from engine_fakes import EOG, reference


def prompt(seed: int, n: int) -> list[int]:
    return [2] + [(seed * 7919 + i * 104729) % 90 + 200 for i in range(n - 1)]


def test_single_request_matches_reference(make_harness):
    h = make_harness()
    rid = h.submit(prompt(1, 10), max_tokens=12)
    h.run()
    h.check_reference(rid, 12)
    fin = h.final(rid)
    assert fin.prompt_tokens == 10 and fin.cached_tokens == 0
    assert "".join(ev.text for ev in h.events[rid]) == "".join(f"<{t}>" for t in h.tokens(rid))
    assert h.engine.n_running == 0 and h.engine.n_waiting == 0
    assert rid in h.runner.prepared and rid in h.runner.released


def test_fcfs_admission_and_batch_cap(make_harness):
    h = make_harness(batch_size=2)
    rids = [h.submit(prompt(i, 6 + i), max_tokens=5 + i) for i in range(5)]
    admitted: list[str] = []
    h.engine._drain()
    while h.sched.has_work():
        h.step()
        assert len(h.sched.running) <= 2
        for s in h.sched.running:
            if s.request_id not in admitted:
                admitted.append(s.request_id)
        # FCFS: the waiting queue keeps arrival order, and nobody overtakes it.
        waiting = [s.request_id for s in h.sched.waiting]
        assert waiting == sorted(waiting, key=rids.index)
        assert all(rids.index(r) < rids.index(w) for r in admitted for w in waiting)
    assert admitted == rids
    assert max(len(s) for s in h.runner.steps) == 2
    for i, rid in enumerate(rids):
        h.check_reference(rid, 5 + i)


def test_chunked_prefill_never_freezes_decoders(make_harness):
    budget = 16
    h = make_harness(batch_size=4, token_budget=budget)
    short = h.submit(prompt(1, 5), max_tokens=60)
    h.step()  # prefill the short prompt; it samples its first token
    h.step()
    long_prompt = prompt(2, 100)
    long = h.submit(long_prompt, max_tokens=4)
    prefill_steps = 0
    while not h.tokens(long):
        before = len(h.events[short])
        h.step()
        chunks = {rid: (start, n) for rid, start, n in h.runner.steps[-1]}
        assert sum(n for _, n in chunks.values()) <= budget
        # The decoder gets exactly one token in every step of the long prefill...
        assert chunks[short][1] == 1
        assert len(h.events[short]) == before + 1
        # ...and the prompt takes the rest of the budget.
        assert chunks[long][1] == min(budget - 1, 100 - chunks[long][0])
        prefill_steps += 1
    assert prefill_steps == math.ceil(100 / (budget - 1))
    h.run()
    h.check_reference(short, 60)
    h.check_reference(long, 4)


def test_unmixed_steps_alternate_decoders_and_prompt_chunks(make_harness):
    h = make_harness(batch_size=4, token_budget=16, mix_prefill=False)
    short = h.submit(prompt(1, 5), max_tokens=60)
    h.step()
    h.step()
    long = h.submit(prompt(2, 100), max_tokens=4)
    kinds = []
    while not h.tokens(long):
        h.step()
        chunks = h.runner.steps[-1]
        kinds.append({"decode" if rid == short else "prompt" for rid, _, _ in chunks})
    # Never both kinds in one step; the decoder waits at most one step for its next token.
    assert all(len(k) == 1 for k in kinds)
    assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False))
    h.run()
    h.check_reference(short, 60)
    h.check_reference(long, 4)


def test_step_respects_token_budget_with_many_prompts(make_harness):
    h = make_harness(batch_size=8, token_budget=32)
    rids = [h.submit(prompt(i, 20 + 3 * i), max_tokens=6) for i in range(8)]
    h.run()
    assert all(sum(n for _, _, n in s) <= 32 for s in h.runner.steps)
    # Oldest prompt first: request 0 finishes prefilling before request 7 starts.
    first_seen = {}
    for i, s in enumerate(h.runner.steps):
        for rid, _, _ in s:
            first_seen.setdefault(rid, i)
    assert [first_seen[r] for r in rids] == sorted(first_seen[r] for r in rids)
    for rid in rids:
        h.check_reference(rid, 6)


def test_kv_budget_preempts_newest_and_resumes_identically(make_harness):
    # 3 requests of 10 + 30 tokens need 120 cells; the cache has 64.
    h = make_harness(n_cells=64, batch_size=3, n_slots=3, token_budget=32)
    rids = [h.submit(prompt(i, 10), max_tokens=30) for i in range(3)]
    preempted: list[str] = []
    orig = h.sched.preempt

    def spy(seq):
        # The victim is always the newest running sequence.
        assert seq.order == max(s.order for s in h.sched.running)
        preempted.append(seq.request_id)
        orig(seq)

    h.sched.preempt = spy
    h.run()
    assert preempted, "the budget was never exceeded"
    assert h.sched.preemptions == len(preempted)
    assert rids[0] not in preempted  # the oldest is never the one to yield
    for rid in rids:
        h.check_reference(rid, 30)
    # Every event stream is clean: tokens only once, one final event.
    assert sum(len(h.tokens(r)) for r in rids) == 90


def test_preempted_sequence_reuses_its_surviving_kv(make_harness):
    # After preemption the victim's KV stays as an idle entry; if nothing evicts it, readmission
    # reuses it instead of recomputing from position 0. (Preemption for KV cells evicts the
    # victim's entry at once, since those cells are what is needed; a device out of memory
    # preempts to shrink the step and keeps it: that path is the one taken here.)
    big_step = lambda step: len(step.chunks) > 1 and any(c.start >= 12 for c in step.chunks)  # noqa: E731
    h = make_harness(batch_size=2, n_slots=4, token_budget=64, oom=big_step, oom_status=-2)
    a = h.submit(prompt(1, 8), max_tokens=12)
    b = h.submit(prompt(2, 8), max_tokens=12)
    at_preemption: dict[str, int] = {}
    preempt = h.sched.preempt

    def spy(seq, keep=True):
        at_preemption[seq.request_id] = seq.n_computed
        preempt(seq, keep)

    h.sched.preempt = spy
    acquired: list[tuple[int, int] | None] = []
    acquire = h.kv.acquire
    h.kv.acquire = lambda tokens, now: acquired.append(acquire(tokens, now)) or acquired[-1]
    h.run()
    h.check_reference(a, 12)
    h.check_reference(b, 12)
    assert list(at_preemption) == [b] and at_preemption[b] == 12 and h.sched.preemptions == 1
    readmitted = acquired[2]
    assert readmitted is not None and readmitted[1] == 12  # all 12 computed tokens came back from KV
    assert h.runner.fed[b] == 8 + 12 - 1  # every prompt and sampled token fed once: nothing recomputed


def test_admission_waits_for_kv_instead_of_thrashing(make_harness):
    h = make_harness(n_cells=50, batch_size=4, n_slots=4, token_budget=64)
    big = h.submit(prompt(1, 30), max_tokens=10)
    small = h.submit(prompt(2, 30), max_tokens=10)
    h.step()
    # The second prompt (30 tokens) does not fit beside the first: it is not admitted.
    assert [s.request_id for s in h.sched.running] == [big]
    assert [s.request_id for s in h.sched.waiting] == [small]
    h.run()
    h.check_reference(big, 10)
    h.check_reference(small, 10)
    assert h.sched.preemptions == 0


def test_request_larger_than_the_cache_ends_instead_of_hanging(make_harness):
    h = make_harness(n_cells=32, batch_size=2, token_budget=16)
    rid = h.submit(prompt(1, 40), max_tokens=4)
    ok = h.submit(prompt(2, 8), max_tokens=4)
    h.run(max_steps=200)
    fin = h.final(rid)
    assert fin.finish_reason == "length" and fin.error
    h.check_reference(ok, 4)


def test_idle_cache_evicted_lru_before_preempting(make_harness):
    h = make_harness(n_cells=64, batch_size=1, n_slots=4, token_budget=64)
    a = h.submit(prompt(1, 20), max_tokens=4)
    h.run()
    h.clock.advance(1)
    b = h.submit(prompt(2, 20), max_tokens=4)
    h.run()
    slot_of = {tuple(s.tokens[:20]): s for s in h.kv.slots if s.tokens}
    sa, sb = slot_of[tuple(prompt(1, 20))], slot_of[tuple(prompt(2, 20))]
    assert len(sa.tokens) == 23 and len(sb.tokens) == 23  # prompt + generated - last sampled
    assert sa.last_used < sb.last_used
    # 40 new cells are needed, 64 - 46 = 18 are free: evicting A (least recently used) is enough.
    c = h.submit(prompt(3, 36), max_tokens=4)
    h.run()
    h.check_reference(c, 4)
    assert not sa.tokens, "the LRU idle entry was not evicted"
    assert len(sb.tokens) == 23, "a more recently used entry was evicted first"
    assert h.sched.preemptions == 0
    del a, b


def test_prefix_reuse_follow_up_turn(make_harness):
    h = make_harness(batch_size=2)
    p1 = prompt(1, 40)
    a = h.submit(p1, max_tokens=10)
    h.run()
    h.check_reference(a, 10)
    # The next turn: the whole previous conversation plus new tokens.
    p2 = p1 + h.tokens(a) + prompt(9, 15)[1:]
    b = h.submit(p2, max_tokens=10)
    h.run()
    h.check_reference(b, 10)
    fin = h.final(b)
    # Everything that was in KV is reused: the prompt and all generated tokens but the last
    # (it was sampled, never fed).
    assert fin.cached_tokens == 40 + 10 - 1
    assert h.runner.fed[b] == len(p2) - fin.cached_tokens + 9  # uncached prompt + 9 decode feeds
    assert not any(c[0] == "cp" for c in h.mem.calls), "the previous turn's slot is extended in place"


def test_prefix_reuse_shared_system_prompt(make_harness):
    h = make_harness(batch_size=2, n_slots=4)
    system = prompt(5, 50)
    a = h.submit(system + [300, 301, 302], max_tokens=5)
    h.run()
    before = [list(s.tokens) for s in h.kv.slots]
    b = h.submit(system + [310, 311], max_tokens=5)
    h.run()
    h.check_reference(a, 5)
    h.check_reference(b, 5)
    assert h.final(b).cached_tokens == 50
    assert h.runner.fed[b] == 2 + 4
    assert any(c[0] == "cp" and c[4] == 50 for c in h.mem.calls)
    # A's entry survives untouched, so its own follow-up turn still hits in full.
    assert any(tokens and tokens in [list(s.tokens) for s in h.kv.slots] for tokens in before)
    c = h.submit(system + [300, 301, 302] + h.tokens(a) + [320], max_tokens=3)
    h.run()
    h.check_reference(c, 3)
    assert h.final(c).cached_tokens == 53 + 4
    assert h.engine.stats.cached_tokens == 50 + 57


def test_identical_prompt_still_samples(make_harness):
    # A prompt equal to a cached entry must still compute its last token to get logits.
    h = make_harness(batch_size=2)
    p = prompt(3, 12)
    a = h.submit(p, max_tokens=1)
    h.run()
    b = h.submit(p, max_tokens=6)
    h.run()
    h.check_reference(a, 1)
    h.check_reference(b, 6)
    assert h.final(b).cached_tokens == 11


def test_cancel_running_frees_the_slot(make_harness):
    h = make_harness(batch_size=1, n_slots=2)
    a = h.submit(prompt(1, 8), max_tokens=1000)
    b = h.submit(prompt(2, 8), max_tokens=5)
    for _ in range(5):
        h.step()
    assert [s.request_id for s in h.sched.running] == [a]
    seq_id = h.sched.running[0].seq_id
    h.engine.cancel(a)
    h.step()  # drains the cancel, then admits b into the freed place
    fin = h.final(a)
    assert fin.finish_reason == "cancelled"
    assert a in h.runner.released
    assert not h.kv.slots[seq_id].busy or h.sched.running[0].request_id == b
    assert [s.request_id for s in h.sched.running] == [b]
    h.run()
    h.check_reference(b, 5)
    assert h.engine.n_running == 0
    assert not any(s.busy for s in h.kv.slots)
    # The cancelled tokens stayed consistent: what a produced before the cancel is its reference prefix.
    got = h.tokens(a)
    assert got == reference(h.prompts[a], len(got))


def test_cancel_waiting_request(make_harness):
    h = make_harness(batch_size=1)
    a = h.submit(prompt(1, 8), max_tokens=5)
    b = h.submit(prompt(2, 8), max_tokens=5)
    h.step()
    assert [s.request_id for s in h.sched.waiting] == [b]
    h.engine.cancel(b)
    h.run()
    assert h.final(b).finish_reason == "cancelled" and not h.tokens(b)
    h.check_reference(a, 5)
    assert not h.sched.waiting


def test_cancel_unknown_or_finished_is_harmless(make_harness):
    h = make_harness()
    a = h.submit(prompt(1, 8), max_tokens=3)
    h.run()
    h.engine.cancel(a)
    h.engine.cancel("no-such-request")
    h.engine._drain()
    assert len([e for e in h.events[a] if e.finish_reason]) == 1


def test_max_wait_window(make_harness):
    h = make_harness(batch_size=4, max_wait_s=0.05)
    sched = h.sched
    assert sched.wait_time(h.clock()) == 0.0  # nothing waiting
    h.submit(prompt(1, 10), max_tokens=3)
    h.engine._drain()
    t0 = h.clock()
    assert math.isclose(sched.wait_time(t0), 0.05)
    h.clock.advance(0.02)
    assert math.isclose(sched.wait_time(h.clock()), 0.03)
    h.submit(prompt(2, 10), max_tokens=3)
    h.submit(prompt(3, 10), max_tokens=3)
    h.engine._drain()
    # The window is measured from the first arrival, not extended by later ones.
    assert math.isclose(sched.wait_time(h.clock()), 0.03)
    h.clock.advance(0.031)
    assert sched.wait_time(h.clock()) == 0.0
    # All three arrivals prefill together in the first step.
    h.engine.step()
    assert len(h.runner.steps[0]) == 3
    # While sequences run there is no waiting.
    h.submit(prompt(4, 10), max_tokens=3)
    h.engine._drain()
    assert sched.wait_time(h.clock()) == 0.0


def test_no_wait_for_a_cached_follow_up_or_a_full_prompt_step(make_harness):
    h = make_harness(batch_size=4, max_wait_s=0.05, token_budget=64)
    first = h.submit(prompt(1, 40), max_tokens=3)
    h.engine._drain()
    assert h.sched.wait_time(h.clock()) > 0  # a fresh 40-token prompt waits for company
    h.clock.advance(0.05)
    h.run()
    # The next turn of that conversation has 43 of 46 tokens cached: it starts at once.
    h.submit(prompt(1, 40) + h.tokens(first) + [7, 8, 9], max_tokens=3)
    h.engine._drain()
    assert h.sched.wait_time(h.clock()) == 0.0
    h.run()
    # A prompt of a whole step (the token budget) has nothing to share a step with.
    h.submit(prompt(2, 64), max_tokens=3)
    h.engine._drain()
    assert h.sched.wait_time(h.clock()) == 0.0


def test_max_wait_ends_with_a_full_batch_or_disabled(make_harness):
    h = make_harness(batch_size=2, max_wait_s=0.05)
    h.submit(prompt(1, 10))
    h.engine._drain()
    assert h.sched.wait_time(h.clock()) > 0
    h.submit(prompt(2, 10))
    h.engine._drain()
    assert h.sched.wait_time(h.clock()) == 0.0  # a full batch is waiting
    h0 = make_harness(batch_size=2, max_wait_s=0.0)
    h0.submit(prompt(1, 10))
    h0.engine._drain()
    assert h0.sched.wait_time(h0.clock()) == 0.0


def test_end_of_generation_and_stop_token_ids(make_harness):
    h = make_harness()
    p = prompt(1, 8)
    ref = reference(p, 10)
    a = h.submit(p, max_tokens=10, stop_token_ids=[ref[4]])
    h.run()
    fin = h.final(a)
    assert fin.finish_reason == "stop"
    assert h.tokens(a) == ref[:4]  # the stop token itself is not output
    assert EOG not in h.tokens(a)


def test_stop_string_through_the_engine(make_harness):
    h = make_harness()
    p = prompt(1, 8)
    ref = reference(p, 10)
    stop = f"<{ref[3]}><{ref[4]}>"
    # The stop string spans two tokens; text is cut before it and never half-emitted.
    a = h.submit(p, max_tokens=10, stop=[stop])
    h.run()
    text = "".join(ev.text for ev in h.events[a])
    expected = "".join(f"<{t}>" for t in ref)
    expected = expected[: expected.index(stop)]
    assert text == expected
    assert h.final(a).finish_reason == "stop"


def test_empty_prompt_does_not_hang_the_engine(make_harness):
    h = make_harness()
    a = h.submit([], max_tokens=3)
    b = h.submit(prompt(1, 5), max_tokens=3)
    h.run(max_steps=50)
    assert h.final(a).finish_reason == "error"
    h.check_reference(b, 3)


def test_token_budget_below_batch_size_still_fits_every_decoder(make_harness):
    # prefill_chunk 4 with batch 8: each step must still hold 8 decoders, and never more.
    h = make_harness(batch_size=8, token_budget=4)
    assert h.sched.token_budget == 8
    rids = [h.submit(prompt(i, 5), max_tokens=20) for i in range(8)]
    h.run()
    assert max(sum(n for _, _, n in s) for s in h.runner.steps) <= 8
    assert max(len(s) for s in h.runner.steps) == 8
    for rid in rids:
        h.check_reference(rid, 20)


def test_step_stats_stay_bounded(make_harness):
    # Nothing has to read stats.step_seqs; it must not grow for the server's lifetime.
    h = make_harness()
    assert h.engine.stats.step_seqs.maxlen is not None
    rid = h.submit(prompt(1, 4), max_tokens=5)
    h.run()
    assert list(h.engine.stats.step_seqs)[-1] == 1 and h.engine.stats.steps == len(h.runner.steps)
    h.check_reference(rid, 5)
