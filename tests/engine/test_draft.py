"""Prompt-lookup drafts (speculative decoding): the n-gram index, and the engine over the fakes.

The fake model here mostly repeats itself (``repetitive_token``), so drafts are
often right and sometimes wrong; every output must still equal the request run
alone without drafts, and the KV mirror (checked after every step by the
harness) must never keep a rejected draft token.
"""

from __future__ import annotations

import random

from engine_fakes import EOG, repetitive_token

from clawlan.engine.draft import NGRAM_MAX, NGRAM_MIN, NgramIndex


def naive_propose(tokens: list[int], k: int) -> list[int]:
    for n in range(NGRAM_MAX, NGRAM_MIN - 1, -1):
        if len(tokens) <= n:
            continue
        suffix = tokens[-n:]
        for at in range(len(tokens) - 1, n - 1, -1):  # latest earlier occurrence ending before the last token
            if tokens[at - n : at] == suffix and at < len(tokens):
                if at == len(tokens):
                    continue
                follow = tokens[at:]  # what followed the match, up to now; a loop repeats it
                return (follow * (k // len(follow) + 1))[:k]
    return []


def test_index_finds_the_latest_earlier_match():
    idx = NgramIndex()
    toks = [5, 6, 7, 8, 1, 6, 7, 9, 2, 6, 7]
    # "6 7" last occurred before the suffix at positions 5-6, followed by 9 2 6.
    assert idx.propose(toks, 3) == [9, 2, 6]
    assert idx.propose(toks, 1) == [9]
    assert idx.propose(toks, 5) == [9, 2, 6, 7, 9]  # past the end of the text: "9 2 6 7" repeats
    assert idx.propose(toks, 0) == []
    assert NgramIndex().propose([1, 2, 3, 4], 3) == []  # nothing repeats
    assert NgramIndex().propose([4], 3) == []


def test_a_loop_is_drafted_past_its_period():
    # "Word Study Word Study ...": the match is only two tokens back, yet the draft runs on.
    toks = [7, 1, 2, 1, 2, 1, 2]
    assert NgramIndex().propose(toks, 6) == [1, 2, 1, 2, 1, 2]
    toks = [3, 4, 5, 3, 4, 5, 3, 4]
    assert NgramIndex().propose(toks, 4) == [5, 3, 4, 5]


def test_index_prefers_the_longest_suffix():
    # "3 4" last occurred at 7-8 (then 0), but "2 3 4" occurred at 0-2 (then 9): the longer match wins.
    toks = [2, 3, 4, 9, 9, 9, 1, 3, 4, 0, 8, 2, 3, 4]
    assert NgramIndex().propose(toks, 1) == [9]


def test_incremental_index_equals_a_fresh_search():
    rng = random.Random(3)
    for _ in range(50):
        idx = NgramIndex()
        toks = [rng.randint(0, 5) for _ in range(3)]
        for _ in range(120):
            toks.append(rng.randint(0, 5))
            assert idx.propose(toks, 4) == naive_propose(toks, 4), toks


def prompt(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [2] + [rng.randint(200, 260) for _ in range(n - 1)]


def test_drafted_outputs_equal_the_reference(make_harness):
    h = make_harness(batch_size=4, draft_tokens=4, model=repetitive_token)
    rids = [h.submit(prompt(s, 20), max_tokens=40) for s in range(6)]
    h.run()
    for rid in rids:
        h.check_reference(rid, 40)
    s = h.sched
    assert s.accepted > 0, "the repetitive model's drafts never held"
    assert s.drafted > s.accepted, "no draft was ever rejected: the rejection path is untested"
    # Rows per step: decoders plus drafts never exceed the cap (2 x batch).
    for chunks in h.runner.steps:
        assert sum(n for _, _, n in chunks) <= s.token_budget
    # Several tokens per event when a draft held, and the events still carry every token in order.
    assert any(len(ev.token_ids) > 1 for rid in rids for ev in h.events[rid])


def test_drafts_save_steps(make_harness):
    def steps(draft_tokens: int) -> int:
        h = make_harness(batch_size=1, draft_tokens=draft_tokens, model=repetitive_token)
        rid = h.submit(prompt(11, 30), max_tokens=60)
        n = h.run()
        h.check_reference(rid, 60)
        return n

    plain, drafted = steps(0), steps(6)
    assert drafted < 0.8 * plain, (drafted, plain)


def test_draft_rows_are_capped(make_harness):
    h = make_harness(batch_size=4, draft_tokens=8, draft_rows=6, model=repetitive_token)
    rids = [h.submit(prompt(s, 12), max_tokens=30) for s in range(4)]
    rows_seen = []
    h.engine._drain()
    while h.sched.has_work():
        h.step()
        last = h.runner.steps[-1]
        decoders = [c for c in last if c[2] >= 1 and c[1] >= 12 - 1]
        rows_seen.append(sum(c[2] for c in decoders))
    for rid in rids:
        h.check_reference(rid, 30)
    assert max(rows_seen) <= 6
    assert h.sched.drafted > 0


def test_max_tokens_and_end_of_generation_inside_a_draft(make_harness):
    # A draft may run past max_tokens or hold an end-of-generation token; neither may leak out,
    # and the KV mirror must keep only what the answer contains (the harness checks it).
    def eog_at_10(context: list[int]) -> int:  # the 11th answer token ends generation
        return EOG if len(context) == 30 else repetitive_token(context)

    h = make_harness(batch_size=2, draft_tokens=6, model=eog_at_10)
    a = h.submit(prompt(5, 20), max_tokens=7)
    b = h.submit(prompt(6, 20), max_tokens=50)
    h.run()
    h.check_reference(a, 7)
    fin = h.final(b)
    assert fin.finish_reason == "stop" and fin.completion_tokens == 10
    assert EOG not in h.tokens(b)


def test_no_drafts_when_off(make_harness):
    h = make_harness(batch_size=2, draft_tokens=0, model=repetitive_token)
    rid = h.submit(prompt(1, 20), max_tokens=30)
    h.run()
    h.check_reference(rid, 30)
    assert h.sched.drafted == 0


def test_a_sequence_whose_drafts_fail_stops_drafting(make_harness):
    # The hash model does not repeat its context, but a long random prompt over the model's own
    # token range holds most 2-grams, so lookups find "drafts" that the model rejects. After a
    # few (4 + 2 + 1 + 1 tokens), the sequence stops drafting.
    h = make_harness(batch_size=1, draft_tokens=4, token_budget=4096)
    rng = random.Random(0)
    rid = h.submit([2] + [rng.randint(100, 149) for _ in range(3000)], max_tokens=80)
    h.run()
    h.check_reference(rid, 80)
    assert 8 <= h.sched.drafted <= 16, h.sched.drafted


def test_a_single_token_match_is_used_only_when_asked_for() -> None:
    # "5" occurred before, followed by 8: no 2-gram matches the suffix "3 5", a 1-gram does
    toks = [1, 5, 8, 9, 3, 5]
    assert NgramIndex().propose(toks, 2) == []
    assert NgramIndex().propose(toks, 2, shortest=1) == [8, 9]
    # a longer match still wins when there is one
    toks = [4, 5, 6, 1, 5, 7, 4, 5]
    assert NgramIndex().propose(toks, 1, shortest=1) == [6]
