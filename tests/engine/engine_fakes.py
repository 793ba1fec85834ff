"""Fakes for the engine unit tests.

Two worlds live here:

* a deterministic fake of llama.cpp (``FakeMemory`` + ``FakeRunner``) for the
  scheduler unit tests. The fake keeps a mirror of what llama.cpp would hold
  in each sequence id's KV and derives every "sampled" token from that KV
  content, so a sequence whose KV was lost, mixed with another one or
  recomputed wrongly produces a different output than the same request run
  alone (``reference``);
* (the real embedded model is a fixture in conftest.py).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from clawlan.engine.engine import Engine
from clawlan.engine.kv_cache import KVCache
from clawlan.engine.request import Event, Request, SamplingParams
from clawlan.engine.scheduler import PENDING, Chunk, Scheduler, Step
from clawlan.engine.sequence import Sequence, Status

EOG = 1  # the fake vocabulary's end-of-generation token


def next_token(context: list[int]) -> int:
    """The fake model: the next token is a hash of the whole KV content (never EOG)."""
    h = 17
    for t in context:
        h = (h * 31 + t) % 1_000_003
    return 100 + h % 50


def repetitive_token(context: list[int]) -> int:
    """A fake model that mostly repeats itself (as answers quoting their context do), so
    prompt-lookup drafts are often right and sometimes wrong."""
    h = next_token(context)
    return context[-3] if h % 4 and len(context) >= 3 else h


def reference(prompt: list[int], max_tokens: int, model=next_token) -> list[int]:
    """What a request produces when run alone with a perfect KV cache."""
    toks = list(prompt)
    for _ in range(max_tokens):
        toks.append(model(toks))
    return toks[len(prompt) :]


class FakeMemory:
    """MemoryOps that records every call and mirrors each sequence id's KV (tokens by position)."""

    def __init__(self, streams: bool = False) -> None:
        self.kv: dict[int, list[int]] = defaultdict(list)
        self.calls: list[tuple] = []
        self.streams = streams  # one stream per sequence id: llama.cpp copies only whole streams

    def seq_rm(self, seq_id: int, p0: int, p1: int) -> None:
        self.calls.append(("rm", seq_id, p0, p1))
        assert p1 == -1, "the cache only ever truncates a sequence's tail"
        del self.kv[seq_id][p0:]

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        self.calls.append(("cp", src, dst, p0, p1))
        assert src != dst
        assert len(self.kv[src]) >= p1, "copying positions the source does not hold"
        assert not self.kv[dst], "copying into a sequence id that still holds KV"
        if self.streams:
            assert (p0, p1) == (-1, -1), "llama.cpp copies only whole streams (GGML_ASSERT is_full)"
            self.kv[dst] = list(self.kv[src])
            return
        self.kv[dst] = list(self.kv[src][p0:p1])


    def seq_save(self, seq_id: int) -> list[int]:
        self.calls.append(("save", seq_id))
        return list(self.kv[seq_id])

    def seq_load(self, seq_id: int, data: list[int]) -> bool:
        self.calls.append(("load", seq_id))
        self.kv[seq_id] = list(data)
        return True


class FakeRunner:
    """The Runner protocol over :class:`FakeMemory`, fully deterministic.

    ``oom`` decides, per step, whether "llama_decode" reports no room (status ``oom_status``,
    1: no KV slot, -2: the device could not allocate); on that status nothing is written, as in
    llama.cpp. ``fail_sampling`` decides, per sequence, that its sampling raises.
    """

    def __init__(self, mem: FakeMemory, oom=None, status=None, model=next_token, oom_status=1, fail_sampling=None) -> None:
        self.mem = mem
        self.model = model
        self.oom = oom
        self.oom_status = oom_status
        self.status = status  # a fixed non-zero status to return, for error tests
        self.fail_sampling = fail_sampling
        self.steps: list[list[tuple[str, int, int]]] = []  # (request_id, start, n) per chunk
        self.fed: dict[str, int] = defaultdict(int)  # tokens fed per request
        self.prepared: set[str] = set()
        self.released: set[str] = set()
        self.oom_steps = 0
        self._sampled: dict[Sequence, list[int]] = {}
        # What the engine asked, in order: ("decode", step number), ("stage", [(request_id,
        # start, tokens)] as known at that moment), ("sample", request_id)
        self.calls: list[tuple] = []

    def stage(self, step: Step) -> None:
        self.calls.append(("stage", [(c.seq.request_id, c.start, c.tokens) for c in step.chunks]))

    def decode(self, step: Step) -> int:
        self.calls.append(("decode", len(self.steps)))
        self._sampled = {}
        if self.status is not None:
            return self.status
        if self.oom is not None and self.oom(step):
            self.oom_steps += 1
            return self.oom_status
        self.steps.append([(c.seq.request_id, c.start, c.n) for c in step.chunks])
        ids = [c.seq.seq_id for c in step.chunks]
        assert len(ids) == len(set(ids)), "a sequence id appears twice in one batch"
        for c in step.chunks:
            kv = self.mem.kv[c.seq.seq_id]
            assert len(kv) == c.start, f"{c.seq}: chunk at {c.start} but its KV holds {len(kv)} positions"
            kv.extend(c.tokens)
            self.fed[c.seq.request_id] += c.n
            first_row = c.start + c.n - c.n_logits  # row j sees the KV up to this position + j
            got = []
            for j in range(c.n_logits):
                got.append(self.model(kv[: first_row + 1 + j]))
                if j == len(c.draft) or got[-1] != c.draft[j]:
                    break
            if got:
                self._sampled[c.seq] = got
        return 0

    def sample(self, chunk: Chunk) -> list[int]:
        self.calls.append(("sample", chunk.seq.request_id))
        if self.fail_sampling is not None and self.fail_sampling(chunk.seq):
            raise RuntimeError(f"sampling {chunk.seq.request_id} failed")
        return self._sampled[chunk.seq]

    def prepare(self, seq: Sequence) -> None:
        self.prepared.add(seq.request_id)

    def release(self, seq: Sequence) -> None:
        self.released.add(seq.request_id)

    def piece(self, token: int) -> bytes:
        return f"<{token}>".encode()

    def is_eog(self, token: int) -> bool:
        return token == EOG


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@dataclass
class Harness:
    """An Engine over the fakes, driven step by step on the test's thread."""

    engine: Engine
    sched: Scheduler
    kv: KVCache
    mem: FakeMemory
    runner: FakeRunner
    clock: FakeClock
    events: dict[str, list[Event]] = field(default_factory=dict)
    prompts: dict[str, list[int]] = field(default_factory=dict)

    def submit(self, prompt: list[int], max_tokens: int = 8, **params) -> str:
        req = Request(list(prompt), SamplingParams(max_tokens=max_tokens, temperature=0, **params))
        self.events[req.request_id] = []
        self.prompts[req.request_id] = list(prompt)
        self.engine.add(req, self.events[req.request_id].append)
        return req.request_id

    def step(self) -> None:
        self.engine._drain()
        self.engine.step()
        self.clock.advance(0.01)
        # The accounting never hands out more cells than exist, and mirrors llama.cpp exactly,
        # but for the cells a prepared step reserved (overlap): those hold its tokens, all known.
        assert 0 <= self.kv.n_used <= self.kv.n_cells
        ahead = {c.seq.seq_id: c for c in self.sched.prepared.chunks} if self.sched.prepared else {}
        for slot in self.kv.slots:
            c = ahead.get(slot.seq_id)
            if c is not None and c.seq.status is Status.RUNNING:
                assert self.mem.kv[slot.seq_id] == slot.tokens[: c.start], f"slot {slot.seq_id} accounting != KV"
                assert slot.tokens[c.start :] == c.tokens and PENDING not in c.tokens
            else:
                assert self.mem.kv[slot.seq_id] == slot.tokens, f"slot {slot.seq_id} accounting != KV"

    def run(self, max_steps: int = 10_000) -> int:
        n = 0
        self.engine._drain()
        while self.sched.has_work():
            self.step()
            n += 1
            assert n < max_steps, "the engine did not finish"
        return n

    def tokens(self, rid: str) -> list[int]:
        return [t for ev in self.events[rid] for t in ev.token_ids]

    def final(self, rid: str) -> Event:
        evs = self.events[rid]
        finals = [ev for ev in evs if ev.finish_reason is not None]
        assert len(finals) == 1, f"{rid}: {len(finals)} final events"
        assert evs[-1] is finals[0], f"{rid}: events after the final one"
        return finals[0]

    def check_reference(self, rid: str, max_tokens: int) -> None:
        assert self.tokens(rid) == reference(self.prompts[rid], max_tokens, self.runner.model), (
            f"{rid} output differs from alone"
        )
        fin = self.final(rid)
        assert fin.finish_reason == "length"
        assert fin.completion_tokens == max_tokens
