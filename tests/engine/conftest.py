"""Shared fixtures for the engine tests: the fake-engine harness and the real model (loaded once)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from engine_fakes import FakeClock, FakeMemory, FakeRunner, Harness

from clawlan.engine.engine import Engine
from clawlan.engine.host_cache import HostCache
from clawlan.engine.kv_cache import KVCache
from clawlan.engine.policy import cpu_policy, gpu_policy
from clawlan.engine.scheduler import Scheduler


@pytest.fixture
def make_harness():
    def make(
        n_cells: int = 4096,
        batch_size: int = 4,
        n_slots: int | None = None,
        token_budget: int = 64,
        max_wait_s: float = 0.0,
        max_seq_tokens: int = 100_000,
        draft_tokens: int = 0,
        draft_rows: int | None = None,
        host_bytes: int = 0,
        mix_prefill: bool = True,
        streams: bool = False,
        gpu: bool = False,
        overlap: bool = False,
        **runner_kw,
    ) -> Harness:
        mem = FakeMemory(streams)
        host = HostCache(host_bytes) if host_bytes else None
        slots = n_slots or (batch_size if streams else 2 * batch_size)
        kv = KVCache(n_cells, slots, mem, host, streams=streams)
        rows = 2 * batch_size if draft_rows is None else draft_rows
        policy = gpu_policy(streams) if gpu else cpu_policy(streams)
        policy = replace(policy, overlap=overlap)
        sched = Scheduler(
            kv, batch_size, token_budget, max_wait_s, max_seq_tokens, draft_tokens, rows, mix_prefill, policy
        )
        runner = FakeRunner(mem, **runner_kw)
        clock = FakeClock()
        return Harness(Engine(sched, runner, clock=clock), sched, kv, mem, runner, clock)

    return make


# -- the real embedded model ---------------------------------------------------


@pytest.fixture(scope="session")
def real_model(llama_model):
    """The embedded Gemma 3 270M: tests/conftest.py's session model, so it loads once per run."""
    return llama_model


class RealEngine:
    """A real engine on its own thread, with tokens fed per request counted at each decode."""

    def __init__(self, model, **cfg) -> None:
        from collections import defaultdict

        from clawlan.engine.engine import EngineConfig, build_engine

        # One thread: llama.cpp's threads spin at barriers, so on a busy 2-core machine two threads
        # stall each other's steps (a test took 98 s with 2 threads and 6.5 s with 1, same load).
        cfg.setdefault("threads", 1)
        cfg.setdefault("max_wait_ms", 0)
        self.model = model
        self.engine = build_engine(model, EngineConfig(**cfg))
        self.fed: dict[str, int] = defaultdict(int)
        self.engine.on_step = self._count
        self.engine.start()

    def _count(self, step, seconds) -> None:
        # Tokens that stayed in the KV cache: a draft's rejected tail was fed but trimmed again.
        for c in step.chunks:
            self.fed[c.seq.request_id] += c.seq.n_computed - c.start

    def run(self, *requests):
        """Run requests concurrently; return each one's list of events."""
        import asyncio

        async def one(req):
            return [ev async for ev in self.engine.submit(req)]

        async def all_():
            return await asyncio.gather(*(one(r) for r in requests))

        return asyncio.run(all_())

    def close(self) -> None:
        self.engine.stop()
        self.engine.context.close()


@pytest.fixture
def make_real_engine(real_model):
    made: list[RealEngine] = []

    def make(**cfg) -> RealEngine:
        eng = RealEngine(real_model, **cfg)
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng.close()


@pytest.fixture(scope="session")
def reference_logits(real_model):
    """Logits after ``tokens`` from a fresh single-sequence context (the "run alone" oracle)."""
    from clawlan.engine.llama import Context
    from clawlan.engine.microbatch import Part

    ctx = Context(real_model, n_ctx=2048, n_batch=2048, n_seq=1, threads=1)

    def logits(tokens: list[int]):
        ctx.clear()
        status, rows = ctx.decode([Part(0, 0, tokens, 1)])
        assert status == 0
        return ctx.logits(rows[0]).copy()

    yield logits
    ctx.close()
