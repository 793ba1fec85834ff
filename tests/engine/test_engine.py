"""The real engine on the embedded Gemma 3 270M (loaded once per session, see conftest.py).

Batched numerics: llama.cpp's kernels reduce in a different order when a
decode carries several sequences (and a sequence's KV cells sit between
other sequences' cells), so a greedy output run in a batch can flip at a
near-tie compared with the same request run alone. A check of "identical
output" would then fail for no bug. :func:`assert_same_as_alone` therefore
compares token by token up to the first difference and requires that
difference to be a near-tie in the alone context's logits (both tokens
within ``TIE`` of the best logit). Swapped or mixed KV does not produce
near-ties: it changes the context, and the first wrong token is then far
from the alone argmax (the test of that claim is
``test_oracle_rejects_swapped_outputs``).
"""

from __future__ import annotations

import numpy as np
import pytest

from clawlan.engine.request import Request, SamplingParams

TIE = 0.75  # logits; the flips seen between batched and alone runs are ~0.1

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "1, 2, 3, 4, 5,",
    "The three primary colors are",
    "import numpy as np\n",
    "Monday, Tuesday, Wednesday,",
    "Water boils at a temperature of",
    "<html>\n<head>\n<title>",
]


def greedy(tokens: list[int], n: int, **kw) -> Request:
    return Request(list(tokens), SamplingParams(max_tokens=n, temperature=0, **kw))


def tokens_of(events) -> list[int]:
    return [t for ev in events for t in ev.token_ids]


def final(events):
    assert events and events[-1].finish_reason is not None
    assert all(ev.finish_reason is None for ev in events[:-1])
    return events[-1]


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def near_tie(reference_logits, context: list[int], a: int, b: int) -> bool:
    lg = reference_logits(context)
    best = float(np.max(lg))
    return best - float(lg[a]) < TIE and best - float(lg[b]) < TIE


def assert_same_as_alone(reference_logits, prompt, alone, got) -> int:
    """``got`` equals ``alone`` up to a divergence at a near-tie; return how many tokens agree."""
    k = first_difference(alone, got)
    if k == len(alone) == len(got):
        return k
    assert k < len(alone) and k < len(got), f"lengths differ without a token difference: {alone} {got}"
    assert near_tie(reference_logits, prompt + alone[:k], alone[k], got[k]), (
        f"output diverges from the same request run alone at token {k} where the model is confident: "
        f"alone {alone[k]} vs batched {got[k]} (cross-talk or a wrong KV)"
    )
    return k


def run_alone(make_real_engine, model, prompts, n):
    """Greedy outputs of ``prompts``, each run alone (batch of one, no prefix reuse)."""
    eng = make_real_engine(batch_size=1, kv_tokens=2048, max_seq_tokens=2048)
    out = []
    for p in prompts:
        (evs,) = eng.run(greedy(p, n))
        eng.engine.scheduler.kv.evict(eng.engine.scheduler.kv.n_cells)  # no prefix reuse between them
        out.append(tokens_of(evs))
    return out


@pytest.mark.parametrize("layout", ["unified", "streams"])
def test_eight_concurrent_requests_no_cross_talk(real_model, make_real_engine, reference_logits, layout):
    n = 24
    prompts = [real_model.tokenize(p) for p in PROMPTS]
    solo = run_alone(make_real_engine, real_model, prompts, n)
    assert len({tuple(s) for s in solo}) == 8, "the prompts must give distinct outputs"
    kv_tokens = 4096 if layout == "unified" else 8 * 2048  # streams: every sequence's context its own
    eng = make_real_engine(batch_size=8, kv_tokens=kv_tokens, max_seq_tokens=2048, kv_layout=layout)
    assert eng.engine.scheduler.kv.streams == (layout == "streams")
    results = eng.run(*(greedy(p, n) for p in prompts))
    assert max(eng.engine.stats.step_seqs) == 8, "the 8 requests never decoded in one batch"
    agreed = 0
    for p, s, evs in zip(prompts, solo, results, strict=True):
        fin = final(evs)
        assert fin.finish_reason == "length" and fin.completion_tokens == n
        assert fin.prompt_tokens == len(p) and fin.cached_tokens == 0
        got = tokens_of(evs)
        assert len(got) == n
        agreed += assert_same_as_alone(reference_logits, p, s, got)
        # Text events are the detokenized tokens, in order.
        assert "".join(ev.text for ev in evs) == real_model.detokenize(got)
    assert agreed >= 0.75 * 8 * n, f"only {agreed} of {8 * n} tokens agree with the alone runs"
    assert eng.engine.n_running == 0


def test_oracle_rejects_swapped_outputs(real_model, reference_logits):
    # The near-tie oracle must not excuse cross-talk: another request's continuation
    # (what swapped KV would produce) is rejected at its first token.
    a, b = real_model.tokenize(PROMPTS[0]), real_model.tokenize(PROMPTS[2])
    ta = [int(np.argmax(reference_logits(a)))]
    tb = [int(np.argmax(reference_logits(b)))]
    with pytest.raises(AssertionError, match="confident"):
        assert_same_as_alone(reference_logits, a, ta, tb)


@pytest.mark.parametrize("layout", ["unified", "streams"])
def test_prefix_reuse_skips_cached_tokens(real_model, make_real_engine, reference_logits, layout):
    kv_tokens = 4096 if layout == "unified" else 4 * 4096
    eng = make_real_engine(batch_size=4, kv_tokens=kv_tokens, max_seq_tokens=4096, kv_layout=layout)
    system = real_model.tokenize(
        "You are the office assistant of Example Ltd. Answer briefly and politely. " * 20
    )
    turn1 = system + real_model.tokenize("\nUser: What is two plus two?\nAssistant:", add_special=False)
    (ev1,) = eng.run(greedy(turn1, 8))
    gen1 = tokens_of(ev1)
    assert final(ev1).cached_tokens == 0
    assert eng.fed[ev1[0].request_id] == len(turn1) + len(gen1) - 1
    turn2 = turn1 + gen1 + real_model.tokenize("\nUser: And three plus three?\nAssistant:", add_special=False)
    (ev2,) = eng.run(greedy(turn2, 8))
    fin2 = final(ev2)
    # The whole previous turn is in KV except its last sampled token, which was never fed.
    assert fin2.cached_tokens == len(turn1) + len(gen1) - 1
    assert fin2.prompt_tokens == len(turn2)
    rid2 = ev2[0].request_id
    assert eng.fed[rid2] == len(turn2) - fin2.cached_tokens + len(tokens_of(ev2)) - 1
    # Cold, the same prompt feeds everything: the cached run did ~10x less prompt work.
    eng.engine.scheduler.kv.evict(eng.engine.scheduler.kv.n_cells)
    (ev3,) = eng.run(greedy(turn2, 8))
    assert final(ev3).cached_tokens == 0
    assert eng.fed[ev3[0].request_id] == len(turn2) + len(tokens_of(ev3)) - 1
    assert eng.fed[rid2] * 5 < eng.fed[ev3[0].request_id]
    assert_same_as_alone(reference_logits, turn2, tokens_of(ev3), tokens_of(ev2))
    # A different conversation with the same system prompt shares only the system prompt.
    other = system + real_model.tokenize("\nUser: Where is the printer?\nAssistant:", add_special=False)
    (ev4,) = eng.run(greedy(other, 4))
    common = next(i for i, (x, y) in enumerate(zip(other, turn2, strict=False)) if x != y)
    assert final(ev4).cached_tokens == common >= len(system)


def test_stop_strings(real_model, make_real_engine):
    eng = make_real_engine(batch_size=2, kv_tokens=2048, max_seq_tokens=2048)
    p = real_model.tokenize("1, 2, 3, 4, 5,")
    (free,) = eng.run(greedy(p, 16))
    text = "".join(ev.text for ev in free)
    assert text.startswith(" 6, 7, 8, 9")
    stop = ", 9"  # spans several tokens: ",", " ", "9"
    (evs,) = eng.run(greedy(p, 16, stop=[stop, "zzz"]))
    fin = final(evs)
    assert fin.finish_reason == "stop"
    got = "".join(ev.text for ev in evs)
    assert got == text[: text.index(stop)] == " 6, 7, 8"
    # Nothing of the stop string leaked into any event (it is held until resolved).
    assert not any("9" in ev.text for ev in evs)


def test_utf8_streaming_chinese(real_model, make_real_engine):
    eng = make_real_engine(batch_size=2, kv_tokens=2048, max_seq_tokens=2048)
    # Rare characters are byte-fallback tokens: each character spans three tokens.
    prompt = real_model.tokenize("生僻字练习：龘靐齉爩䨻，龘靐齉爩䨻，龘靐齉爩䨻，龘靐")
    (evs,) = eng.run(greedy(prompt, 40))
    toks = tokens_of(evs)
    split = [t for t in toks if _not_utf8(real_model.piece(t))]
    assert split, "the test must stream characters split across tokens"
    for ev in evs[:-1]:
        assert "\ufffd" not in ev.text, "a character split across tokens was emitted half-done"
        ev.text.encode("utf-8")  # valid: no lone surrogates
    streamed = "".join(ev.text for ev in evs)
    assert streamed == real_model.detokenize(toks)
    # max_tokens may cut the last character in the middle: only then does the final event
    # end in one replacement character (as the non-streamed decode does).
    complete = _not_utf8(b"".join(real_model.piece(t) for t in toks)) is False
    assert ("\ufffd" in streamed) == (not complete)
    assert "\ufffd" not in streamed[:-1]
    assert any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in streamed)


def _not_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_cancellation_frees_the_sequence(real_model, make_real_engine):
    import asyncio

    eng = make_real_engine(batch_size=2, kv_tokens=2048, max_seq_tokens=2048)
    engine = eng.engine
    p = real_model.tokenize("Once upon a time")

    async def scenario():
        req = greedy(p, 1000, ignore_eos=True)
        seen = []
        async for ev in engine.submit(req):
            seen.append(ev)
            if len(seen) == 3:
                engine.cancel(req.request_id)
        assert seen[-1].finish_reason == "cancelled"
        assert len(seen) < 50
        # Leaving the async for early cancels too.
        req2 = greedy(p, 1000, ignore_eos=True)
        stream = engine.submit(req2)
        n = 0
        async for _ in stream:
            n += 1
            if n == 3:
                break
        await stream.aclose()  # what a server does when the client disconnects
        # A later request runs after the engine drained the cancel; it completes normally.
        tail = [ev async for ev in engine.submit(greedy(p, 2))]
        return tail

    tail = asyncio.run(scenario())
    assert final(tail).finish_reason == "length"
    assert engine.n_running == 0 and engine.n_waiting == 0
    assert not any(s.busy for s in engine.scheduler.kv.slots), "a cancelled sequence still holds its slot"
    assert len(engine._live) == 0


def test_preemption_under_tiny_kv_budget(real_model, make_real_engine, reference_logits):
    n = 64
    texts = [
        "The history of the printing press begins in",
        "A good password policy for a small office should",
        "Photosynthesis is the process by which plants",
        "The rules of chess are simple: each player",
    ]
    # ~100-token prompts: 4 x (100 + 64) tokens need more than the 512 cells.
    prompts = [real_model.tokenize((t + " ") * 10)[:100] for t in texts]
    assert sum(len(p) + n for p in prompts) > 512
    solo = run_alone(make_real_engine, real_model, prompts, n)
    eng = make_real_engine(batch_size=4, kv_tokens=512, max_seq_tokens=512, token_budget=128)
    results = eng.run(*(greedy(p, n) for p in prompts))
    sched = eng.engine.scheduler
    assert sched.preemptions > 0, "the budget was never exceeded: the test proves nothing"
    assert sched.kv.n_cells == 512
    for p, s, evs in zip(prompts, solo, results, strict=True):
        fin = final(evs)
        assert fin.finish_reason == "length" and fin.error is None
        got = tokens_of(evs)
        assert len(got) == n == fin.completion_tokens
        assert_same_as_alone(reference_logits, p, s, got)


def test_small_token_budget_with_full_batch(real_model, make_real_engine):
    # A token budget below batch_size, or below the number of sequence ids (batch + cache
    # slots = 16 here), used to make llama.cpp abort the whole process.
    eng = make_real_engine(batch_size=8, token_budget=4, kv_tokens=1024, max_seq_tokens=1024)
    assert eng.engine.context.n_batch >= 16
    results = eng.run(*(greedy(real_model.tokenize(f"{i} apples and"), 12) for i in range(8)))
    for evs in results:
        assert final(evs).finish_reason == "length" and final(evs).error is None
    assert max(eng.engine.stats.step_seqs) == 8


@pytest.mark.parametrize("layout", ["unified", "streams"])
def test_shared_prefix_copied_from_a_running_sequence(real_model, make_real_engine, reference_logits, layout):
    # B arrives while A (same system prompt) is decoding: B's prefix comes from A's live KV
    # through llama_memory_seq_cp (unified: both then append to cells they share; streams: A's
    # whole stream is copied into B's and cut back), and neither output may change because of it.
    import asyncio

    system = real_model.tokenize("Notes from the weekly office meeting about printers and coffee. " * 8)
    qa = system + real_model.tokenize(" Summary: the printer", add_special=False)
    qb = system + real_model.tokenize(" Summary: the coffee", add_special=False)
    solo = run_alone(make_real_engine, real_model, [qa, qb], 16)
    kv_tokens = 2048 if layout == "unified" else 4 * 2048
    eng = make_real_engine(batch_size=4, kv_tokens=kv_tokens, max_seq_tokens=2048, kv_layout=layout)
    engine = eng.engine

    async def scenario():
        a_events = []

        async def run_a():
            async for ev in engine.submit(greedy(qa, 16)):
                a_events.append(ev)
                if len(a_events) == 2:
                    started.set()
            return a_events

        started = asyncio.Event()
        task = asyncio.create_task(run_a())
        await started.wait()  # A has finished its prefill and is decoding
        b_events = [ev async for ev in engine.submit(greedy(qb, 16))]
        return await task, b_events

    a_events, b_events = asyncio.run(scenario())
    common = next(i for i, (x, y) in enumerate(zip(qa, qb, strict=False)) if x != y)
    assert final(b_events).cached_tokens == common > len(system) - 2
    assert final(a_events).cached_tokens == 0
    assert_same_as_alone(reference_logits, qa, solo[0], tokens_of(a_events))
    assert_same_as_alone(reference_logits, qb, solo[1], tokens_of(b_events))


def test_seeded_sampling_is_reproducible_in_a_batch(real_model, make_real_engine, reference_logits):
    eng = make_real_engine(batch_size=4, kv_tokens=2048, max_seq_tokens=2048)
    p = real_model.tokenize("Ideas for the office party:")

    def sampled(seed):
        return Request(list(p), SamplingParams(max_tokens=16, temperature=1.0, top_k=40, seed=seed))

    (a,) = eng.run(sampled(7))
    # The same seed again, now batched beside other requests, with the prompt in the prefix cache.
    b, c, _ = eng.run(sampled(7), sampled(8), greedy(real_model.tokenize("Other work"), 16))
    ta, tb = tokens_of(a), tokens_of(b)
    k = first_difference(ta, tb)
    if k < len(ta):
        # Batched numerics move the sampling distribution's cumulative boundaries a little; where
        # it is flat (a base model at temperature 1) the same random draw can then land on a
        # neighbouring token of about the same probability. Wrong KV would not stay that close.
        lg = reference_logits(p + ta[:k])
        assert k >= 2 and abs(float(lg[ta[k]]) - float(lg[tb[k]])) < TIE, (k, ta, tb)
    assert tokens_of(c) != ta


@pytest.mark.parametrize("layout", ["unified", "streams"])
def test_prompt_lookup_drafts_give_plain_decoding_output(real_model, make_real_engine, reference_logits, layout):
    # Code that repeats itself: the drafts come from the prompt and hold often.
    p = real_model.tokenize("def add(a, b):\n    return a + b\n\n" * 4 + "def add(")
    kv_tokens = 2048 if layout == "unified" else 2 * 2048
    plain = make_real_engine(batch_size=2, kv_tokens=kv_tokens, max_seq_tokens=2048, draft_tokens=0, kv_layout=layout)
    (a,) = plain.run(greedy(p, 48))
    eng = make_real_engine(batch_size=2, kv_tokens=kv_tokens, max_seq_tokens=2048, draft_tokens=4, kv_layout=layout)
    (b,) = eng.run(greedy(p, 48))
    assert final(b).completion_tokens == 48
    assert assert_same_as_alone(reference_logits, p, tokens_of(a), tokens_of(b)) >= 24
    sched = eng.engine.scheduler
    assert sched.accepted >= 24, f"only {sched.accepted} of {sched.drafted} draft tokens held"
    assert plain.engine.scheduler.drafted == 0
    assert eng.engine.stats.steps < 0.6 * plain.engine.stats.steps
    assert eng.engine.scheduler.kv.n_used == len(p) + 47  # no rejected draft left in the cache


def test_drafts_keep_seeded_sampling_reproducible(real_model, make_real_engine):
    # Each drafted row is sampled in turn through the same chain, so a seed gives the same
    # answer with drafts as without (up to batched numerics, as above).
    p = real_model.tokenize("Monday, Tuesday, Wednesday, Thursday, Friday, Monday, Tuesday,")

    def sampled():
        return Request(list(p), SamplingParams(max_tokens=24, temperature=0.7, top_k=40, seed=3))

    (a,) = make_real_engine(batch_size=1, kv_tokens=2048, max_seq_tokens=2048, draft_tokens=0).run(sampled())
    eng = make_real_engine(batch_size=1, kv_tokens=2048, max_seq_tokens=2048, draft_tokens=4)
    (b,) = eng.run(sampled())
    assert eng.engine.scheduler.drafted > 0
    assert tokens_of(a) == tokens_of(b) or first_difference(tokens_of(a), tokens_of(b)) >= 8


def test_follow_up_turns_restored_from_host_ram(real_model, make_real_engine, reference_logits):
    # Longer than Gemma's 512-token sliding window, so a restore must bring back the right window.
    system = real_model.tokenize("You are the office assistant of Example Ltd. Answer briefly. " * 50)
    assert len(system) > 600
    turn1 = system + real_model.tokenize("\nUser: What is two plus two?\nAssistant:", add_special=False)
    eng = make_real_engine(batch_size=2, kv_tokens=4096, max_seq_tokens=4096)  # host cache on by default
    (ev1,) = eng.run(greedy(turn1, 8))
    gen1 = tokens_of(ev1)
    # Two other sessions start: the conversation leaves the KV cache for host RAM.
    eng.run(greedy(real_model.tokenize("Other session one"), 4), greedy(real_model.tokenize("Second one"), 4))
    kv = eng.engine.scheduler.kv
    assert kv.host is not None and len(kv.host) >= 2  # the conversation, and its prompt
    assert kv.n_used < len(turn1) and not any(s.tokens[:10] == turn1[:10] for s in kv.slots)
    cold = make_real_engine(batch_size=1, kv_tokens=4096, max_seq_tokens=4096, host_cache_mb=0)

    def check(turn2, cached):
        (warm,) = eng.run(greedy(turn2, 16))
        assert final(warm).cached_tokens == cached
        (ref,) = cold.run(greedy(turn2, 16))
        cold.engine.scheduler.kv.evict(cold.engine.scheduler.kv.n_cells)
        assert final(ref).cached_tokens == 0
        # A missing window changes what the sliding-window layers see: the answer drifts early.
        assert assert_same_as_alone(reference_logits, turn2, tokens_of(ref), tokens_of(warm)) >= 12

    # The next turn continues the saved conversation: all of it but the never-fed last token.
    follow = real_model.tokenize("\nUser: And three plus three?\nAssistant:", add_special=False)
    check(turn1 + gen1 + follow, len(turn1) + len(gen1) - 1)
    restored = kv.host.restored_tokens
    assert restored == len(turn1) + len(gen1) - 1
    # An answer re-rendered with other tokens still finds the saved prompt (the request's mark).
    # The restored conversation, idle in KV, also begins with turn1 but cannot be cut back to it
    # (its sliding-window layers hold only the last window): the host entry serves it instead.
    edited = real_model.tokenize(" Four, of course.\nUser: Thanks!\nAssistant:", add_special=False)
    check(turn1 + edited, len(turn1))
    assert kv.host.restored_tokens == restored + len(turn1)
