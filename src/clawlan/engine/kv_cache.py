"""KV cell accounting and the prefix cache.

llama.cpp runs one *unified* KV cache: every cell holds one token's K and V
and may belong to several sequence ids at once. ``llama_memory_seq_cp`` on a
unified cache only tags existing cells with another id, so sharing a prefix
costs no memory and no copy. This module mirrors that state exactly: each
llama.cpp sequence id is a :class:`Slot` holding the tokens in its KV and the
cells they occupy; a refcount per cell tells when a cell is really free.

Prefix-cache policy
-------------------
* A finished request's slot keeps its KV as an *idle* cache entry.
* A new prompt is matched against every slot, running or idle; the longest
  common prefix wins. If the winner is idle and its whole content is a prefix
  of the prompt (the previous turn of the same conversation), the request
  takes the slot over. Otherwise it gets a free slot and the shared prefix is
  copied into it (cells shared, not duplicated), so a system prompt used by
  many sessions stays cached for all of them.
* When slot ids or cells run short, idle entries are evicted least recently
  used first. Only then does the scheduler preempt running sequences.
* With a :class:`~clawlan.engine.host_cache.HostCache`, idle entries leave the
  KV cache when new work starts (``offload_idle``): each is saved to host RAM,
  with the beginnings other prompts may want (the request's own prompt, and
  any prefix shared with another known sequence) saved as entries of their
  own, and restored when a prompt starts with one of them.

Streams (``streams=True``)
--------------------------
When the cache holds every sequence's whole context (``kv_tokens >= batch x
context``), the engine gives each sequence id a KV *stream* of its own
instead, llama-server's layout: attention never scans other sequences'
cells, which makes prompts ~8% cheaper. Then there is one slot per stream (no
spare ids), a prefix shared with another slot is copied when it is long enough
to be worth it (llama.cpp copies a whole stream, then the copy is cut back),
new work takes the free stream that keeps running ids contiguous, idle entries
cost the running sequences nothing and stay where they are, and an idle entry
is saved to host RAM only when its stream is taken for another prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from clawlan.engine.host_cache import HostCache, Saved
from clawlan.engine.policy import contiguous_runs

MIN_SHARED = 64  # a shared beginning shorter than this recomputes in well under 100 ms: not worth saving


class MemoryOps(Protocol):
    """The llama.cpp memory calls the cache needs (a fake in unit tests)."""

    def seq_rm(self, seq_id: int, p0: int, p1: int) -> None: ...

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None: ...

    def seq_save(self, seq_id: int) -> Any: ...  # the sequence's state, or None

    def seq_load(self, seq_id: int, data: Any) -> bool: ...


@dataclass
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)
    cells: list[int] = field(default_factory=list)
    busy: bool = False  # a running sequence owns it
    last_used: float = 0.0
    marks: set[int] = field(default_factory=set)  # prefix lengths worth saving on their own (a prompt's end)
    # The slot's KV may be cut back to ``floor`` tokens or more, not fewer: a state restored from
    # host RAM brings sliding-window layers only their last window, so their older history is gone.
    floor: int = 0


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix; slices compare in C, so binary search is fast for long prompts."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class KVCache:
    def __init__(
        self, n_cells: int, n_slots: int, ops: MemoryOps, host: HostCache | None = None, streams: bool = False
    ) -> None:
        self.n_cells = n_cells
        self.ops = ops
        self.host = host
        self.streams = streams
        self.refs = np.zeros(n_cells, dtype=np.int32)
        self._free: list[int] = list(range(n_cells - 1, -1, -1))
        self.slots = [Slot(i) for i in range(n_slots)]
        self.hit_tokens = 0  # prompt tokens served from the cache, for metrics

    # -- accounting -----------------------------------------------------
    @property
    def n_free(self) -> int:
        return len(self._free)

    @property
    def n_used(self) -> int:
        return self.n_cells - len(self._free)

    def idle_cells(self) -> int:
        """Cells that only idle cache entries hold: usable after eviction."""
        busy = np.zeros(self.n_cells, dtype=bool)
        for s in self.slots:
            if s.busy and s.cells:
                busy[np.asarray(s.cells, dtype=np.int64)] = True
        return int(np.count_nonzero((self.refs > 0) & ~busy))

    def reclaimable(self) -> int:
        return self.n_free + self.idle_cells()

    def _release_cells(self, cells: list[int]) -> None:
        if not cells:
            return
        idx = np.asarray(cells, dtype=np.int64)
        self.refs[idx] -= 1  # a slot never holds a cell twice, so fancy indexing is exact
        freed = idx[self.refs[idx] == 0]
        self._free.extend(freed.tolist())

    # -- slots ----------------------------------------------------------
    def acquire(self, prompt: list[int], now: float) -> tuple[int, int] | None:
        """Give ``prompt`` a slot; return (seq_id, tokens already in its KV) or None if none is free."""
        best, best_len = self._best_slot(prompt)
        saved = self._best_saved(prompt)
        if saved is not None and len(saved.tokens) > best_len:
            got = self._restore(saved.tokens, saved.data, now)
            if got is not None:
                saved.last_used = now
                return got
        if best is not None and not best.busy and best_len == len(best.tokens):
            target = best  # the previous turn of this conversation: extend it in place
        elif self.streams:
            # The stream that keeps running ones contiguous, never the entry holding our prefix
            # (emptying it would lose what we are about to reuse); that one only as a last resort.
            spare = self._spare_slot(keep=best)
            if spare is not None:
                target = spare
            elif best is not None and not best.busy:
                target = best
            else:
                return None
        elif (empty := self._empty_slot()) is not None:
            target = empty
        elif best is not None and not best.busy:
            target = best
        else:
            spare = self._spare_slot()
            if spare is None:
                return None
            target = spare
        if target is best:
            self.trim(target.seq_id, best_len)
        elif best is not None and best_len >= self._min_copy() and self.streams:
            # Across streams llama.cpp copies a whole stream (it refuses part of one); cut it back.
            self.trim(target.seq_id, 0)
            self.ops.seq_cp(best.seq_id, target.seq_id, -1, -1)
            self.ops.seq_rm(target.seq_id, best_len, -1)
            self.allocate(target.seq_id, best.tokens[:best_len])
            target.floor = best.floor  # the copy has the same gaps
        elif best is not None and best_len > 0 and not self.streams:
            self.trim(target.seq_id, 0)
            self.ops.seq_cp(best.seq_id, target.seq_id, 0, best_len)
            target.tokens = best.tokens[:best_len]
            target.cells = best.cells[:best_len]
            target.floor = best.floor  # the copy has the same gaps
            self.refs[np.asarray(target.cells, dtype=np.int64)] += 1
        else:
            self.trim(target.seq_id, 0)
            best_len = 0
        target.busy = True
        target.last_used = now
        self.hit_tokens += best_len
        return target.seq_id, best_len

    def _min_copy(self) -> int:
        """Shortest shared prefix worth a stream copy. llama.cpp copies a whole stream (~18 KB a
        cell on the embedded model, every cell of the stream whether used or not); recomputing a
        token costs about as much as copying ~256 cells, so a prompt sharing only its first few
        tokens (the BOS of every prompt) computes them instead."""
        return max(MIN_SHARED, (self.n_cells // len(self.slots)) // 256)

    def _usable(self, slot: Slot, prompt: list[int]) -> int:
        """Tokens of ``prompt`` that ``slot``'s KV can serve (0 if the match ends below its floor).
        At least one prompt token is left to compute, to get logits for the first sample."""
        if not slot.tokens:
            return 0
        n = min(common_prefix(slot.tokens, prompt), len(prompt) - 1)
        return n if n >= slot.floor else 0

    def _best_slot(self, prompt: list[int]) -> tuple[Slot | None, int]:
        """The slot whose KV serves the most of ``prompt``, and how much (None, 0 if none does).
        With streams, a partial match too short to copy a stream for counts as none: it is
        computed instead, and the entry holding it stays whole (``acquire`` and ``cached_len``
        both see it so)."""
        best, best_len = None, 0
        for s in self.slots:
            n = self._usable(s, prompt)
            if n > best_len:
                best, best_len = s, n
        if self.streams and best is not None and best_len < min(self._min_copy(), len(best.tokens)):
            return None, 0
        return best, best_len

    def _best_saved(self, prompt: list[int]) -> Saved | None:
        return self.host.best(prompt) if self.host is not None else None

    def _empty_slot(self) -> Slot | None:
        return next((s for s in self.slots if not s.busy and not s.tokens), None)

    def _spare_slot(self, keep: Slot | None = None) -> Slot | None:
        """An empty slot, else the least recently used idle one emptied; None if all are busy.

        With streams, first the one that leaves the running sequences in the fewest runs of
        consecutive ids (:func:`clawlan.engine.policy.contiguous_runs`). ``keep`` is never chosen."""
        if self.streams:
            free = [s for s in self.slots if not s.busy and s is not keep]
            if not free:
                return None
            target = min(free, key=lambda s: (self._runs_with(s.seq_id), bool(s.tokens), s.last_used))
            if target.tokens:
                if self.host is not None:
                    self._save(target, len(target.tokens), None)  # its stream is needed: keep the entry in RAM
                self.drop(target.seq_id)
            return target
        empty = self._empty_slot()
        if empty is not None:
            return empty
        idle = [s for s in self.slots if not s.busy]
        if not idle:
            return None
        target = min(idle, key=lambda s: s.last_used)
        self.drop(target.seq_id)
        return target

    def _runs_with(self, seq_id: int) -> int:
        """Runs of consecutive busy ids if ``seq_id`` became busy too (the placement rule is policy.py's)."""
        return contiguous_runs([s.busy or s.seq_id == seq_id for s in self.slots])

    def cached_len(self, prompt: list[int]) -> int:
        """How many of ``prompt``'s tokens ``acquire`` would find cached (a read-only probe)."""
        _, n = self._best_slot(prompt)
        saved = self._best_saved(prompt)
        return max(n, len(saved.tokens)) if saved is not None else n

    def allocate(self, seq_id: int, tokens: list[int]) -> bool:
        """Reserve cells for ``tokens`` appended to the slot; False (and no change) if too few are free."""
        if len(tokens) > len(self._free):
            return False
        slot = self.slots[seq_id]
        if len(tokens) == 1:  # a decoder's token, once per sequence and step: no numpy round trip
            cell = self._free.pop()
            self.refs[cell] += 1
            slot.cells.append(cell)
            slot.tokens.append(tokens[0])
            return True
        new = [self._free.pop() for _ in range(len(tokens))]
        self.refs[np.asarray(new, dtype=np.int64)] += 1
        slot.cells.extend(new)
        slot.tokens.extend(tokens)
        return True

    def fill(self, seq_id: int, pos: int, token: int) -> None:
        """The token at ``pos`` is known now (it was reserved as PENDING while it was sampled)."""
        slot = self.slots[seq_id]
        if pos < len(slot.tokens):
            slot.tokens[pos] = token

    def trim(self, seq_id: int, keep: int) -> None:
        """Keep the first ``keep`` tokens of a slot; free the rest here and in llama.cpp."""
        slot = self.slots[seq_id]
        if keep == 0:
            slot.marks.clear()
            slot.floor = 0
        if keep >= len(slot.tokens):
            return
        assert keep == 0 or keep >= slot.floor, f"cutting slot {seq_id} to {keep} tokens, below its floor {slot.floor}"
        self.ops.seq_rm(seq_id, keep, -1)
        self._release_cells(slot.cells[keep:])
        del slot.cells[keep:]
        del slot.tokens[keep:]

    def release(self, seq_id: int, now: float, keep: bool = True, mark: int | None = None) -> None:
        """A request is done with its slot; its KV stays as an idle cache entry unless ``keep`` is False.

        ``mark`` is a prefix length worth caching on its own (the request's prompt: the next
        turn of a chat re-renders the answer, and its tokens may not match the generated ones).
        """
        slot = self.slots[seq_id]
        slot.busy = False
        slot.last_used = now
        if mark:
            slot.marks.add(mark)
        if not keep:
            self.trim(seq_id, 0)

    # -- host RAM -------------------------------------------------------
    def _restore(self, tokens: list[int], data: Any, now: float) -> tuple[int, int] | None:
        """Load a saved state into a free slot; (seq_id, tokens restored) or None if it does not fit."""
        need = len(tokens)
        self.evict(need)
        target = self._spare_slot()
        if target is None or self.n_free < need or not self.ops.seq_load(target.seq_id, data):
            return None
        self.allocate(target.seq_id, tokens)
        target.floor = max(0, need - 1)  # a query at need - 1 still finds its whole window
        target.busy = True
        target.last_used = now
        self.hit_tokens += need
        assert self.host is not None
        self.host.restored_tokens += need
        return target.seq_id, need

    def _save(self, slot: Slot, n: int, scratch: Slot | None) -> None:
        """Save the first ``n`` tokens of an idle slot to host RAM (a prefix goes through ``scratch``)."""
        assert self.host is not None
        prefix = slot.tokens[:n]
        if n < slot.floor or self.host.has(prefix):
            return  # below the floor the sliding-window history is missing: such a save would be wrong
        if n == len(slot.tokens):
            data = self.ops.seq_save(slot.seq_id)
        elif scratch is not None:
            # The saved state must end at n: llama.cpp keeps only the last window of sliding-window
            # layers, counted back from the sequence's end. A prefix copy shares the cells (free).
            self.ops.seq_cp(slot.seq_id, scratch.seq_id, 0, n)
            data = self.ops.seq_save(scratch.seq_id)
            self.ops.seq_rm(scratch.seq_id, 0, -1)
        else:
            return
        if data is not None:
            self.host.put(prefix, data, slot.last_used)

    def _own_cells(self, slot: Slot) -> int:
        """Cells no other slot holds: what dropping this slot would take out of the scan."""
        return int(np.count_nonzero(self.refs[np.asarray(slot.cells, dtype=np.int64)] == 1))

    def offload_idle(self, others: list[list[int]]) -> None:
        """Move every idle entry to host RAM, with the beginnings worth keeping on their own.

        Those are the entry's marks (its request's prompt) and the longest and shortest
        beginnings of at least ``MIN_SHARED`` tokens it shares with another known token list:
        other slots, host entries and ``others`` (prompts still waiting).
        """
        if self.host is None or self.streams:
            return  # in its own stream an idle entry widens no one's scan; it leaves when the stream is needed
        # Only entries that widen the scan go: one whose cells a running sequence mostly shares
        # (the previous turn of a conversation now continuing) costs the scan almost nothing,
        # and saving it would copy its whole state (12k tokens: ~45 MB on the embedded model) for no gain.
        idle = [s for s in self.slots if not s.busy and s.tokens and self._own_cells(s) * 4 >= len(s.cells)]
        if not idle:
            return
        scratch = self._empty_slot()
        for slot in idle:
            n = len(slot.tokens)
            shared = {
                common_prefix(slot.tokens, t)
                for t in [s.tokens for s in self.slots if s is not slot] + [e.tokens for e in self.host.entries] + others
            }
            shared = {k for k in shared if MIN_SHARED <= k < n}
            points = {k for k in slot.marks if MIN_SHARED <= k < n}
            if shared:
                points |= {min(shared), max(shared)}
            self._save(slot, n, scratch)
            for k in sorted(points):
                self._save(slot, k, scratch)
            self.drop(slot.seq_id)

    def drop(self, seq_id: int) -> None:
        self.trim(seq_id, 0)

    def evict(self, need: int) -> bool:
        """Evict idle entries, least recently used first, until ``need`` cells are free."""
        if self.n_free >= need:
            return True  # the common case, once per decoder and step: no sort of the slots
        for slot in sorted((s for s in self.slots if not s.busy and s.tokens), key=lambda s: s.last_used):
            if self.n_free >= need:
                break
            self.drop(slot.seq_id)
        return self.n_free >= need
