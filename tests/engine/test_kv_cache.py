"""KV cell accounting and the prefix cache, against a recording fake of llama.cpp's memory calls."""

from __future__ import annotations

import random

from engine_fakes import FakeMemory

from clawlan.engine.kv_cache import KVCache, common_prefix


def test_common_prefix_matches_naive():
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(0, 300)
        a = [rng.randint(0, 3) for _ in range(n)]
        b = a[: rng.randint(0, n)] + [rng.randint(0, 3) for _ in range(rng.randint(0, 20))]
        naive = 0
        while naive < min(len(a), len(b)) and a[naive] == b[naive]:
            naive += 1
        assert common_prefix(a, b) == naive


def fill(kv: KVCache, mem: FakeMemory, prompt: list[int], now: float) -> int:
    """Admit ``prompt``, "compute" its uncached tokens and return the slot id."""
    seq_id, cached = kv.acquire(prompt, now)
    assert kv.allocate(seq_id, prompt[cached:])
    mem.kv[seq_id].extend(prompt[cached:])
    return seq_id


def test_allocate_and_release_account_cells():
    mem = FakeMemory()
    kv = KVCache(16, 2, mem)
    sid = fill(kv, mem, list(range(10)), now=1)
    assert kv.n_used == 10 and kv.n_free == 6
    assert not kv.allocate(sid, list(range(7))), "over-allocation must refuse"
    assert kv.n_used == 10 and len(kv.slots[sid].tokens) == 10  # and change nothing
    kv.release(sid, now=2)
    assert kv.slots[sid].tokens == list(range(10)) and sum(len(s.tokens) for s in kv.slots if not s.busy) == 10
    assert kv.idle_cells() == 10 and kv.reclaimable() == 16
    kv.release(sid, now=3, keep=False)
    assert kv.n_free == 16 and ("rm", sid, 0, -1) in mem.calls


def test_follow_up_extends_the_idle_slot_in_place():
    mem = FakeMemory()
    kv = KVCache(64, 4, mem)
    sid = fill(kv, mem, [1, 2, 3, 4, 5], now=1)
    kv.release(sid, now=2)
    sid2, cached = kv.acquire([1, 2, 3, 4, 5, 6, 7], now=3)
    assert (sid2, cached) == (sid, 5)
    assert not any(c[0] == "cp" for c in mem.calls)
    assert kv.hit_tokens == 5


def test_shared_prefix_is_copied_not_duplicated():
    mem = FakeMemory()
    kv = KVCache(64, 4, mem)
    system = list(range(100, 120))
    a = fill(kv, mem, system + [1, 2], now=1)
    kv.release(a, now=2)
    used = kv.n_used
    b, cached = kv.acquire(system + [3, 4], now=3)
    assert b != a and cached == 20
    assert ("cp", a, b, 0, 20) in mem.calls
    assert kv.n_used == used, "a shared prefix costs no cells"
    assert kv.slots[a].tokens == system + [1, 2], "the source entry is untouched"
    # Shared cells are freed only when both holders let go.
    kv.release(b, now=4, keep=False)
    assert kv.n_used == used
    kv.drop(a)
    assert kv.n_used == 0


def test_prompt_equal_to_cache_keeps_one_token_to_compute():
    mem = FakeMemory()
    kv = KVCache(64, 2, mem)
    a = fill(kv, mem, [5, 6, 7], now=1)
    kv.release(a, now=2)
    sid, cached = kv.acquire([5, 6, 7], now=3)
    assert cached == 2  # the last prompt token is recomputed to get logits


def test_shared_with_running_sequence():
    mem = FakeMemory()
    kv = KVCache(64, 4, mem)
    a = fill(kv, mem, list(range(30)), now=1)  # still running (busy)
    b, cached = kv.acquire(list(range(25)) + [99], now=2)
    assert b != a and cached == 25
    assert kv.slots[a].busy and kv.slots[b].busy
    # idle_cells never counts cells a running sequence still needs.
    kv.release(b, now=3)
    assert kv.idle_cells() == 0


def test_evict_lru_first_and_only_as_needed():
    mem = FakeMemory()
    kv = KVCache(40, 4, mem)
    a = fill(kv, mem, [1] * 10, now=1)
    b = fill(kv, mem, [2] * 10, now=2)
    c = fill(kv, mem, [3] * 10, now=3)
    for sid, t in ((b, 4), (a, 5), (c, 6)):  # release order makes B least recently used
        kv.release(sid, now=t)
    assert kv.evict(15)
    assert not kv.slots[b].tokens and kv.slots[a].tokens and kv.slots[c].tokens
    assert kv.evict(25)
    assert not kv.slots[a].tokens and kv.slots[c].tokens
    assert not kv.evict(41)


def test_evict_never_touches_running_slots():
    mem = FakeMemory()
    kv = KVCache(20, 2, mem)
    fill(kv, mem, [1] * 15, now=1)
    assert not kv.evict(10)
    assert kv.n_used == 15


def test_slot_shortage_reuses_lru_idle_slot():
    mem = FakeMemory()
    kv = KVCache(100, 2, mem)
    a = fill(kv, mem, [1, 1, 1], now=1)
    b = fill(kv, mem, [2, 2, 2], now=2)
    kv.release(b, now=3)
    kv.release(a, now=4)
    sid, cached = kv.acquire([9, 9], now=5)
    assert sid == b and cached == 0, "the least recently used idle slot is reused"
    assert kv.slots[a].tokens == [1, 1, 1]
    assert kv.acquire([7], now=6) == (a, 0)  # a is idle, so it can be taken
    assert kv.acquire([8], now=7) is None, "every slot busy: no slot"


def test_trim_frees_tail_cells_in_llama_too():
    mem = FakeMemory()
    kv = KVCache(16, 1, mem)
    sid = fill(kv, mem, list(range(10)), now=1)
    kv.trim(sid, 4)
    assert kv.slots[sid].tokens == [0, 1, 2, 3] and kv.n_used == 4
    assert mem.kv[sid] == [0, 1, 2, 3]


def test_streams_copy_a_whole_stream_and_cut_it_back():
    # One KV stream per sequence id: llama.cpp copies only a whole stream, so sharing a prefix is
    # a copy (the cells are the copy's own) followed by a trim to the shared length.
    mem = FakeMemory(streams=True)
    kv = KVCache(512, 4, mem, streams=True)
    system = list(range(100, 170))  # 70 tokens: above the shortest prefix worth a copy (64)
    a = fill(kv, mem, system + [1, 2], now=1)  # still running
    used = kv.n_used
    b, cached = kv.acquire(system + [3, 4], now=2)
    assert b != a and cached == 70
    i = mem.calls.index(("cp", a, b, -1, -1))
    assert mem.calls[i + 1] == ("rm", b, 70, -1)
    assert mem.kv[b] == system and kv.slots[b].tokens == system
    assert kv.n_used == used + 70, "a copied prefix occupies cells of its own"
    kv.release(b, now=3, keep=False)
    assert kv.n_used == used and kv.slots[a].tokens == system + [1, 2]
    # A prompt sharing only its first tokens (every prompt's BOS) computes them: no stream copy.
    calls = len(mem.calls)
    assert kv.cached_len(system[:5] + [9, 9, 9]) == 0  # the probe agrees with acquire
    c, cached = kv.acquire(system[:5] + [9, 9, 9], now=4)
    assert cached == 0 and not any(x[0] == "cp" for x in mem.calls[calls:])


def test_streams_keep_idle_entries_until_their_stream_is_taken():
    from clawlan.engine.host_cache import HostCache

    mem = FakeMemory(streams=True)
    kv = KVCache(64, 2, mem, HostCache(1 << 20), streams=True)
    a = fill(kv, mem, list(range(10, 30)), now=1)
    kv.release(a, now=2)
    kv.offload_idle([])  # in its own stream an idle entry slows no one: it stays
    assert kv.slots[a].tokens and len(kv.host) == 0
    b = fill(kv, mem, list(range(40, 50)), now=3)  # the empty stream first
    assert b != a and kv.slots[a].tokens
    kv.release(b, now=4)
    # A third prompt needs a stream: the least recently used entry goes to host RAM, then the stream.
    c, cached = kv.acquire(list(range(60, 70)), now=5)
    assert c == a and cached == 0 and ("save", a) in mem.calls
    assert [e.tokens for e in kv.host.entries] == [list(range(10, 30))]
    # ... and comes back from RAM when its conversation continues.
    kv.release(c, now=6, keep=False)
    d, cached = kv.acquire(list(range(10, 30)) + [1, 2], now=7)
    assert cached == 20 and mem.kv[d] == list(range(10, 30))


def test_streams_new_work_keeps_running_ids_contiguous():
    # llama.cpp runs each run of consecutive stream ids as a micro-batch of its own, so a new
    # prompt fills the gap between running sequences, even over an empty stream at the end.
    from clawlan.engine.host_cache import HostCache

    mem = FakeMemory(streams=True)
    kv = KVCache(512, 4, mem, HostCache(1 << 20), streams=True)
    a, b, c = (fill(kv, mem, [t] * 10 + [1], now=t) for t in (1, 2, 3))
    assert (a, b, c) == (0, 1, 2)
    kv.release(b, now=4)  # running: 0 and 2, with b's entry idle between them
    d, cached = kv.acquire([9] * 10, now=5)
    assert d == b and cached == 0, "stream 3 would leave running ids 0 | 2, 3"
    assert ("save", b) in mem.calls  # b's entry went to host RAM first


def test_streams_reuse_the_entry_holding_the_prefix_when_no_other_stream_is_free():
    # Regression: the stream chooser emptied the very entry whose prefix was being reused, and the
    # request then started at a position its stream no longer held (llama_decode returned -1).
    mem = FakeMemory(streams=True)
    kv = KVCache(512, 2, mem, streams=True)
    system = list(range(100, 170))
    a = fill(kv, mem, system + [1, 2, 3], now=1)
    kv.release(a, now=2)
    b = fill(kv, mem, [7] * 20, now=3)  # the other stream is running
    c, cached = kv.acquire(system + [4, 5], now=4)
    assert c == a and cached == 70
    assert mem.kv[c] == system + [4, 5][:0] and kv.slots[c].tokens == system  # KV holds what is "cached"
    assert kv.slots[b].busy
