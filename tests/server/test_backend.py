"""server/backend.py: the engine's configuration from the settings."""

from __future__ import annotations

import dataclasses
from typing import Any

import psutil
import pytest

from clawlan.config.settings import ServerSection, Settings
from clawlan.engine.engine import EngineConfig
from clawlan.errors import ConfigError
from clawlan.server.backend import ContextPlan, engine_config

# Engine fields no server setting decides: the engine's own defaults stand.
ENGINE_ONLY = {"mix_prefill", "cache_slots", "device_greedy"}


def test_every_server_setting_reaches_the_engine(model_info: Any) -> None:
    # Every value differs from EngineConfig's default, so a field engine_config forgets shows up.
    s = ServerSection(
        batch_size=3,
        max_wait_ms=7,
        prefill_chunk=96,
        draft_tokens=2,
        cache_ram_mb=5,
        kv_layout="unified",
        threads=5,
        overlap="off",
    )
    cfg = engine_config(
        Settings(server=s),
        dataclasses.replace(model_info, output_type="F16"),
        ContextPlan(max_context=640, kv_tokens=1280, kv_bytes=1, budget_bytes=1),
    )
    assert cfg == EngineConfig(
        batch_size=3, max_wait_ms=7, kv_tokens=1280, max_seq_tokens=640, token_budget=96, draft_tokens=2,
        host_cache_mb=5, kv_layout="unified", threads=5, output_type="F16", overlap=False,
    )  # fmt: skip
    default = EngineConfig()
    unset = {
        f.name for f in dataclasses.fields(EngineConfig) if getattr(cfg, f.name) == getattr(default, f.name)
    }
    assert unset == ENGINE_ONLY


def test_defaults_match_the_engine_and_threads_default_to_physical_cores(model_info: Any) -> None:
    # The server's defaults are the engine's (bench/serve.py's in-process run relied on it), but threads.
    cfg = engine_config(
        Settings(), model_info, ContextPlan(max_context=4096, kv_tokens=8192, kv_bytes=1, budget_bytes=1)
    )
    assert cfg.threads == (psutil.cpu_count(logical=False) or 1)
    assert dataclasses.replace(cfg, threads=EngineConfig().threads) == EngineConfig()


def test_overlap_on_with_drafts_is_one_config_error(model_info: Any) -> None:
    plan = ContextPlan(max_context=640, kv_tokens=1280, kv_bytes=1, budget_bytes=1)
    with pytest.raises(ConfigError, match="server.overlap = on needs server.draft_tokens = 0"):
        engine_config(Settings(server=ServerSection(overlap="on", draft_tokens=8)), model_info, plan)
    assert engine_config(Settings(server=ServerSection(overlap="on", draft_tokens=0)), model_info, plan).overlap
