"""The server's default context and KV cache, sized to the model (model/memory.py)."""

from __future__ import annotations

import pytest

from clawlan.errors import ConfigError
from clawlan.model import memory

GB = 1e9


def test_default_fits_the_model_not_the_machine(model_info) -> None:
    size = memory.size_context(model_info, 8, budget_bytes=100 * GB)  # a huge machine changes nothing
    assert (size.max_context, size.kv_tokens) == (32768, 8 * 4096)  # one request may use the whole pool
    assert size.kv_bytes == 32768 * 18432  # every layer kept whole (swa_full): 604 MB


def test_short_trained_context_gets_one_stream_per_sequence(model_info) -> None:
    model_info = type(model_info)(**{**model_info.__dict__, "context_length": 2048})
    size = memory.size_context(model_info, 64, budget_bytes=100 * GB)
    assert (size.max_context, size.kv_tokens) == (2048, 64 * 2048)  # batch x context: streams fit


def test_budget_caps_the_default(model_info) -> None:
    budget = 100 * (1 << 20)  # 100 MiB: 5,632 cells of 18,432 bytes
    size = memory.size_context(model_info, 8, budget_bytes=budget)
    assert size.kv_tokens == 5632 and size.kv_bytes <= budget and size.max_context == 5632
    with pytest.raises(ConfigError, match="memory_budget_mb: 1 MB holds only 56 KV tokens for 8 sequences"):
        memory.size_context(model_info, 8, budget_bytes=1 << 20)


def test_explicit_settings_win(model_info) -> None:
    size = memory.size_context(model_info, 4, budget_bytes=1 << 30, max_context_tokens=4096)
    assert (size.max_context, size.kv_tokens) == (4096, 4 * 4096)
    size = memory.size_context(model_info, 4, budget_bytes=1 << 30, max_context_tokens=65536, kv_tokens=9000)
    assert size.warning and "trained 32768" in size.warning
    assert (size.max_context, size.kv_tokens) == (9216, 9216)  # padded to 256; one request at most the cache


def test_a_small_batch_still_holds_one_trained_length_request(model_info) -> None:
    # batch 2 x 4,096 would refuse an OpenClaw-sized turn (~15k tokens): the pool is at least the
    # trained context, up to 32k.
    size = memory.size_context(model_info, 2, budget_bytes=2 * GB)
    assert (size.max_context, size.kv_tokens) == (32768, 32768)
