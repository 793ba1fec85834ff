"""Shared fixtures for the engine tests: the fake-engine harness and the real model (loaded once)."""

from __future__ import annotations

import pytest
from engine_fakes import FakeClock, FakeMemory, FakeRunner, Harness

from clawlan.engine.engine import Engine
from clawlan.engine.kv_cache import KVCache
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
        **runner_kw,
    ) -> Harness:
        mem = FakeMemory()
        kv = KVCache(n_cells, n_slots or 2 * batch_size, mem)
        sched = Scheduler(kv, batch_size, token_budget, max_wait_s, max_seq_tokens)
        runner = FakeRunner(mem, **runner_kw)
        clock = FakeClock()
        return Harness(Engine(sched, runner, clock=clock), sched, kv, mem, runner, clock)

    return make


# -- the real embedded model ---------------------------------------------------


@pytest.fixture(scope="session")
def real_model():
    """The embedded Gemma 3 270M, loaded once for the whole session."""
    from clawlan.engine.llama import Model
    from clawlan.model.store import resolve

    model = Model(resolve(None).path)
    yield model
    model.close()
