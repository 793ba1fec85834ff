"""The loaded model behind the HTTP API: model file, engine, template, limits.

Loading happens on a background thread after the HTTP server is listening,
so ``/health`` can answer 503 while the model loads and 200 once it is ready.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

from clawlan.config import Settings
from clawlan.errors import ClawlanError, ConfigError
from clawlan.model.memory import DEFAULT_RAM_SHARE, size_context
from clawlan.model.metadata import ModelInfo
from clawlan.model.store import EMBEDDED_ID, resolve
from clawlan.server.chat_template import ChatTemplate, load_template

if TYPE_CHECKING:
    from clawlan.engine.engine import EngineConfig

log = logging.getLogger(__name__)
MB = 1 << 20
TOOL_CALL_MARKERS = ["<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "<|python_tag|>"]


@dataclass
class ContextPlan:
    max_context: int  # one request's prompt + output
    kv_tokens: int  # KV cells shared by all sequences
    kv_bytes: int
    budget_bytes: int


def plan_context(info: ModelInfo, settings: Settings, available: int | None = None) -> ContextPlan:
    """The context and KV cache for batch_size sequences, sized to the model (model/memory.py),
    capped by memory_budget_mb (default: a share of free RAM). `clawlan plan` prints the same."""
    s = settings.server
    if available is None:
        available = psutil.virtual_memory().available
    budget = s.memory_budget_mb * MB if s.memory_budget_mb else int(available * DEFAULT_RAM_SHARE)
    size = size_context(info, s.batch_size, budget, s.max_context_tokens, s.kv_tokens)
    if size.warning:
        log.warning("%s", size.warning)
    return ContextPlan(size.max_context, size.kv_tokens, size.kv_bytes, size.budget_bytes)


def check_engine_settings(settings: Settings) -> Settings:
    """Settings that are each valid but do not go together: one line, before the server listens."""
    s = settings.server
    if s.overlap == "on" and s.draft_tokens:
        raise ConfigError(f"server.overlap = on needs server.draft_tokens = 0 (it is {s.draft_tokens}): a draft is "
                          "looked up from the tokens the step being overlapped has not yet sampled")
    return settings


def engine_config(settings: Settings, info: ModelInfo, plan: ContextPlan) -> EngineConfig:
    """The engine's configuration from the server's settings and its context plan: the one place
    a ``server`` setting reaches the engine (the server and bench/serve.py's in-process run)."""
    from clawlan.engine.engine import EngineConfig

    s = check_engine_settings(settings).server
    return EngineConfig(
        batch_size=s.batch_size,
        max_wait_ms=s.max_wait_ms,
        kv_tokens=plan.kv_tokens,
        max_seq_tokens=plan.max_context,
        token_budget=s.prefill_chunk,
        draft_tokens=s.draft_tokens,
        host_cache_mb=s.cache_ram_mb,
        kv_layout=s.kv_layout,
        threads=s.threads or psutil.cpu_count(logical=False) or 1,
        output_type=info.output_type,
        overlap={"auto": None, "on": True, "off": False}[s.overlap],
    )


class Backend:
    """Owns the model and engine; ``ready`` once both are loaded."""

    def __init__(self, settings: Settings, model: Any = None, info: ModelInfo | None = None) -> None:
        self.settings = settings
        self.on_step: Any = None  # metrics hook, called on the engine thread after each decode
        self.ready = False
        self.error: str | None = None
        self.info: ModelInfo | None = info
        self.model = model  # a preloaded clawlan.engine.llama.Model (tests share one)
        self.engine: Any = None
        self.template: ChatTemplate | None = None
        self.plan: ContextPlan | None = None
        self.devices: Any = None  # engine.devices.BackendInfo of the loaded library
        self.model_id = settings.server.model_alias or EMBEDDED_ID
        self.loaded = threading.Event()
        self.end_of_turn: list[int] = []

    def load(self) -> None:
        """Resolve, check and load the model, then start the engine (blocking)."""
        try:
            self._load()
            self.ready = True
        except ClawlanError as exc:
            self.error = str(exc)
            log.error("%s", exc)
        except Exception as exc:  # a native failure must not leave /health saying "loading" forever
            self.error = f"loading failed: {exc}"
            log.exception("loading failed")
        finally:
            self.loaded.set()

    def _load(self) -> None:
        from clawlan.engine.devices import backend_info, gpu_layers, load_model
        from clawlan.engine.engine import build_engine

        s = self.settings.server
        if self.info is None:
            self.info = resolve(s.model, s.model_sha256)
        info = self.info
        if not s.model_alias and s.model:
            self.model_id = info.path.stem
        self.plan = plan = plan_context(info, self.settings)
        layers = gpu_layers(s.gpu_layers, info.n_layers)  # 0 on a CPU-only build, -1 past the model's layers
        if self.model is None:
            self.model = load_model(info.path, layers)
        self.devices = backend_info()
        m = self.model
        cfg = engine_config(self.settings, info, plan)
        self.engine = build_engine(m, cfg)
        self.engine.on_step = self.on_step
        self.engine.start()
        # The vocabulary's own texts (Gemma: <bos>/<eos>, Llama 2: <s>/</s>) for templates that
        # write bos_token/eos_token; detokenizing would give "" for these control tokens.
        bos = m.token_text(m.bos) or "<bos>"
        eos = m.token_text(m.eos) or "</s>"
        self.template = load_template(m.chat_template() or info.chat_template, info.architecture, bos, eos)
        ids = (m.token_id(marker) for marker in self.template.stop_markers)
        self.end_of_turn = [i for i in ids if i is not None]
        # Models whose tool-call markers are single special tokens (Qwen's <tool_call>, Mistral's
        # [TOOL_CALLS], Llama's <|python_tag|>) must show them, or the parser never sees a call.
        m.keep_special(TOOL_CALL_MARKERS)
        log.info(
            "model %s (%s, %.0f MB) loaded; context %d tokens per request, KV cache %d tokens = %.0f MB "
            "(budget %.0f MB, %s), batch %d, %d threads, chat template: %s%s",
            self.model_id,
            info.architecture,
            info.file_size / MB,
            plan.max_context,
            plan.kv_tokens,
            plan.kv_bytes / MB,
            plan.budget_bytes / MB,
            "one stream per sequence" if self.engine.scheduler.kv.streams else "unified",
            s.batch_size,
            cfg.threads,
            self.template.family,
            "" if self.template.from_model else " (built in)",
        )

    def tokenize_segments(self, pieces: list[tuple[str, bool]]) -> list[int]:
        """Tokenize a rendered chat prompt piece by piece: special tokens only where ``special``."""
        m = self.model
        toks: list[int] = []
        for text, special in pieces:
            toks += m.tokenize(text, add_special=False, parse_special=special)
        if m.add_bos and (not toks or toks[0] != m.bos):
            toks.insert(0, m.bos)
        return toks

    def tokenize_prompt(self, text: str) -> list[int]:
        """Tokenize a rendered chat prompt (it carries its own BOS) or a raw completion prompt."""
        m = self.model
        toks = m.tokenize(text, add_special=False, parse_special=True)
        if m.add_bos and (not toks or toks[0] != m.bos):
            toks.insert(0, m.bos)
        return toks

    def close(self) -> None:
        if self.engine is not None:
            self.engine.stop()
