"""Idle prefix-cache entries in host RAM: the HostCache itself, the KV cache's offload and
restore over the recording fake, and a follow-up turn through the real engine."""

from __future__ import annotations

from engine_fakes import FakeMemory

from clawlan.engine.host_cache import HostCache
from clawlan.engine.kv_cache import MIN_SHARED, KVCache


def test_best_entry_must_begin_the_prompt_and_leave_a_token():
    host = HostCache(1 << 20)
    host.put([1, 2, 3], b"abc", now=1)
    host.put([1, 2, 3, 4, 5], b"abcde", now=2)
    host.put([1, 9], b"x", now=3)
    assert host.best([1, 2, 3, 4, 5, 6]).tokens == [1, 2, 3, 4, 5]
    assert host.best([1, 2, 3, 4, 7]).tokens == [1, 2, 3], "an entry that diverges inside is unusable"
    assert host.best([1, 2, 3]) is None, "a prompt equal to an entry keeps a token to compute"
    assert host.best([7]) is None


def test_capacity_evicts_least_recently_used():
    host = HostCache(10)
    host.put([1], b"aaaa", now=1)
    host.put([2], b"bbbb", now=2)
    host.best([1, 5]).last_used = 3  # a hit refreshes [1]
    host.put([3], b"cccc", now=4)
    assert sorted(e.tokens for e in host.entries) == [[1], [3]] and host.nbytes == 8
    host.put([4], b"x" * 11, now=5)  # larger than the whole cache: not kept, nothing evicted
    assert len(host) == 2
    host.put([3], b"cc", now=6)  # the same tokens again replace the old state
    assert len(host) == 2 and host.nbytes == 6


def fill(kv: KVCache, mem: FakeMemory, prompt: list[int], now: float) -> int:
    seq_id, cached = kv.acquire(prompt, now)
    assert kv.allocate(seq_id, prompt[cached:])
    mem.kv[seq_id].extend(prompt[cached:])
    return seq_id


def mirror_ok(kv: KVCache, mem: FakeMemory) -> None:
    for slot in kv.slots:
        assert mem.kv[slot.seq_id] == slot.tokens


def test_offload_saves_entry_prompt_and_shared_beginning_then_frees_the_cells():
    mem = FakeMemory()
    kv = KVCache(4096, 8, mem, HostCache(1 << 30))
    system = list(range(1000, 1000 + MIN_SHARED + 20))
    conv = system + list(range(5000, 5100))  # prompt (180 tokens) ...
    a = fill(kv, mem, conv, now=1)
    assert kv.allocate(a, [7, 8, 9]) and mem.kv[a].extend([7, 8, 9]) is None  # ... and its answer
    kv.release(a, now=2, mark=len(conv))
    b = fill(kv, mem, system + [42] * 10, now=3)  # another session, same system prompt, still running
    kv.offload_idle(others=[])
    mirror_ok(kv, mem)
    saved = sorted(len(e.tokens) for e in kv.host.entries)
    assert saved == [len(system), len(conv), len(conv) + 3]
    assert not kv.slots[a].tokens and kv.n_used == len(system) + 10, "only the running sequence holds cells"
    assert kv.slots[b].busy and kv.slots[b].tokens  # running work is never offloaded
    # The next turn of the conversation comes back from host RAM, whole.
    kv.release(b, now=4, keep=False)
    sid, cached = kv.acquire(conv + [7, 8, 9] + [11, 12], now=5)
    assert cached == len(conv) + 3 and ("load", sid) in mem.calls
    assert kv.slots[sid].busy and kv.n_used == cached
    mirror_ok(kv, mem)
    # A re-tokenized answer (different tokens after the prompt) still reuses the prompt.
    kv.release(sid, now=6, keep=False)
    sid, cached = kv.acquire(conv + [70, 80], now=7)
    assert cached == len(conv)
    # A new session with the same system prompt gets the shared beginning.
    kv.release(sid, now=8, keep=False)
    sid, cached = kv.acquire(system + [3, 3, 3], now=9)
    assert cached == len(system)
    assert kv.host.restored_tokens == len(conv) + 3 + len(conv) + len(system)
    assert kv.hit_tokens == kv.host.restored_tokens + len(system)  # b's beginning was shared in KV


def test_without_a_host_cache_idle_entries_stay():
    mem = FakeMemory()
    kv = KVCache(256, 4, mem)
    a = fill(kv, mem, list(range(100)), now=1)
    kv.release(a, now=2)
    kv.offload_idle(others=[])
    assert kv.slots[a].tokens == list(range(100)) and not any(c[0] == "save" for c in mem.calls)


def test_restore_that_does_not_fit_falls_back_to_computing():
    mem = FakeMemory()
    kv = KVCache(128, 4, mem, HostCache(1 << 30))
    a = fill(kv, mem, list(range(100)), now=1)
    kv.release(a, now=2)
    kv.offload_idle(others=[])
    fill(kv, mem, list(range(500, 560)), now=3)  # running: only 68 cells stay free
    sid, cached = kv.acquire(list(range(100)) + [1], now=4)
    assert cached == 0 and not any(c[0] == "load" for c in mem.calls)
    mirror_ok(kv, mem)


def test_follow_up_after_other_sessions_comes_from_host_through_the_engine(make_harness):
    h = make_harness(batch_size=2, host_bytes=1 << 30)
    conv = [2] + list(range(300, 400))
    a = h.submit(conv, max_tokens=6)
    h.run()
    # Three other sessions start: the conversation's entry leaves the KV cache.
    others = [h.submit([2] + [900 + i] * 50, max_tokens=4) for i in range(3)]
    h.run()
    assert h.kv.host is not None and len(h.kv.host) >= 1
    assert not any(s.tokens == conv + h.tokens(a)[:-1] for s in h.kv.slots), "entry still in KV"
    follow = conv + h.tokens(a) + [5, 6, 7]
    b = h.submit(follow, max_tokens=6)
    h.run()
    h.check_reference(b, 6)
    assert h.final(b).cached_tokens == len(conv) + len(h.tokens(a)) - 1
    for rid in [a, *others]:
        assert h.final(rid).finish_reason == "length"


def test_a_restored_entry_is_never_cut_back_below_what_it_restored():
    # llama.cpp restores sliding-window layers with their last window only, so a restored
    # sequence may be continued at its end but not cut back and continued earlier.
    mem = FakeMemory()
    kv = KVCache(4096, 8, mem, HostCache(1 << 30))
    conv = list(range(1000, 1300))
    a = fill(kv, mem, conv, now=1)
    kv.release(a, now=2)
    b = fill(kv, mem, [5] * 80, now=3)  # new work: the conversation moves to host RAM
    kv.offload_idle(others=[])
    kv.release(b, now=4, keep=False)
    sid, cached = kv.acquire(conv + [1, 2, 3], now=5)
    assert cached == len(conv) and kv.slots[sid].floor == len(conv) - 1
    assert kv.allocate(sid, [1, 2, 3]) and mem.kv[sid].extend([1, 2, 3]) is None
    kv.release(sid, now=6)
    # A prompt that leaves the restored conversation inside it finds no usable KV prefix...
    assert kv.cached_len(conv[:200] + [9, 9]) == 0
    sid2, cached = kv.acquire(conv[:200] + [9, 9], now=7)
    assert cached == 0 and sid2 != sid
    # ...while its end, or beyond, is still served in place.
    kv.release(sid2, now=8, keep=False)
    sid3, cached = kv.acquire(conv + [1, 2, 3, 4], now=9)
    assert (sid3, cached) == (sid, len(conv) + 3)
    mirror_ok(kv, mem)


def test_an_entry_a_running_sequence_mostly_shares_stays_in_kv():
    # The previous turn of a conversation that continues in a new slot shares almost all its
    # cells with it: moving it out would cost a full copy and shrink the scan by a few cells.
    mem = FakeMemory()
    kv = KVCache(4096, 8, mem, HostCache(1 << 30))
    turn1 = list(range(1000, 1400))
    a = fill(kv, mem, turn1 + [1, 2], now=1)
    kv.release(a, now=2)
    b = fill(kv, mem, turn1 + [7, 7, 7], now=3)  # diverges near the end: shares 400 of 402 cells
    kv.offload_idle(others=[])
    assert kv.slots[a].tokens == turn1 + [1, 2] and len(kv.host) == 0
    assert kv.slots[b].busy
    # Once the sharer is gone, the entry widens the scan on its own and does move.
    kv.release(b, now=4, keep=False)
    kv.offload_idle(others=[])
    assert not kv.slots[a].tokens and kv.host.has(turn1 + [1, 2])
