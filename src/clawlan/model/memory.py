"""Model arithmetic: what llama.cpp allocates for a model's KV cache and buffers, and the
default context the server gives a model.

Pure arithmetic on :class:`~clawlan.model.metadata.ModelInfo`; the server (``server/backend.py``)
and the planner (``ops/planner.py``) both import it, so ``clawlan plan`` prints what
``clawlan serve`` allocates.

KV cache: ``layers x KV heads x (K head dim + V head dim) x bytes x cells``. Global-attention
layers hold every cell. Sliding-window layers hold only ``window x sessions + ubatch`` cells
when llama.cpp's ``swa_full`` is off (llama-server's default); clawlan's engine turns it on so
that a cached prefix longer than the window stays reusable, and then windowed layers cost as
much as global ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clawlan.errors import ConfigError
from clawlan.model.metadata import ModelInfo

MiB = 1 << 20
PAD = 256  # llama.cpp pads KV cache sizes to 256 cells
DEFAULT_UBATCH = 512
KV_TYPES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}

# The server's default sizing, fitted to the model rather than to the machine. One KV pool that
# every sequence shares (as llama-server's default unified cache), of
#   max(batch_size x DEFAULT_CELLS_PER_SEQUENCE, min(trained context, DEFAULT_CONTEXT)) cells,
# and one request may use up to min(trained context, pool) of it:
# - DEFAULT_CELLS_PER_SEQUENCE is Ollama's default num_ctx (4,096) for each batch slot;
# - DEFAULT_CONTEXT: llama-server's default pool is the trained context; capped at 32k here, as a
#   128k-trained 8B model would otherwise take 16 GB of KV by default. OpenClaw turns reach ~15k
#   tokens and Open WebUI's page chats ~6.5k, so a 4k or 8k cap per request would refuse them.
# Where batch x context fits the pool (a model trained on <= 4k tokens), every sequence gets its
# own stream. The embedded Gemma 3 270M at batch 8: 32,768 cells x 18 kB = 604 MB of KV and
# ~1.1 GB of RSS in all, where a quarter of free RAM (the former default) gave ~4.8 GB.
DEFAULT_CONTEXT = 32768
DEFAULT_CELLS_PER_SEQUENCE = 4096
OUTPUT_ROWS_PER_SEQUENCE = 9  # logits rows a decoding sequence asks for: its token and the default 8 drafts
DEFAULT_RAM_SHARE = 0.25  # without memory_budget_mb, the KV cache may take at most this share of free RAM


def kv_elem_bytes(kv_type: str) -> float:
    try:
        return KV_TYPES[kv_type.lower()]
    except KeyError:
        raise ConfigError(f"--kv-type {kv_type!r} is not supported; use one of {', '.join(KV_TYPES)}") from None


def pad(n: float, to: int = PAD) -> int:
    return int(math.ceil(n / to) * to)


@dataclass
class KVCache:
    cells: int  # cells in global-attention layers (context x sessions)
    swa_cells: int  # cells in sliding-window layers
    global_layers: int
    swa_layers: int
    bytes_per_cell_layer: float  # one token on one layer, K and V
    bytes: float

    @property
    def per_token(self) -> float:
        """KV bytes one token costs across all layers (no window): the textbook figure."""
        return self.bytes_per_cell_layer * (self.global_layers + self.swa_layers)


def kv_cache(
    info: ModelInfo,
    ctx: int,
    sessions: int = 1,
    kv_type: str = "f16",
    ubatch: int = DEFAULT_UBATCH,
    swa_full: bool = False,
) -> KVCache:
    """The KV cache llama.cpp allocates for ``sessions`` sequences of ``ctx`` tokens each."""
    per = info.n_kv_heads * (info.head_dim_k + info.head_dim_v) * kv_elem_bytes(kv_type)
    cells = pad(ctx * sessions)
    swa = info.swa_layers
    swa_cells = cells
    if swa and not swa_full and info.sliding_window:
        # A unified cache needs each sequence's window plus one micro-batch in flight.
        swa_cells = min(cells, pad(info.sliding_window * sessions + ubatch))
    glob = info.n_layers - swa
    return KVCache(cells, swa_cells, glob, swa, per, per * (glob * cells + swa * swa_cells))


def compute_bytes(info: ModelInfo, ubatch: int = DEFAULT_UBATCH) -> float:
    """llama.cpp's reserved compute graph: logits for a whole micro-batch dominate.

    With flash attention (llama.cpp's default on CPU) there is no KQ matrix, so the peak is the
    f32 logits ``ubatch x vocab`` plus the hidden states they are computed from (llama.cpp logs
    514.50 MiB for Gemma 3 270M at ubatch 512; this formula gives 514.49 MiB).
    """
    return 4.0 * ubatch * (info.vocab_size + 2 * info.n_embd)


def compute_resident_bytes(info: ModelInfo, ubatch: int, out_rows: int) -> float:
    """The part of the compute buffer a step writes, so the part that counts in RSS.

    llama.cpp reserves logits for every token of a micro-batch, but the engine asks for logits
    only on rows that sample (one per sequence plus its draft tokens), so most of the reserved
    pages are never touched. Measured on the embedded model: RSS 1.04-1.09 GB against 1.50 GB
    allocated, the difference being these untouched logits rows.
    """
    return 4.0 * (min(out_rows, ubatch) * info.vocab_size + 2 * ubatch * info.n_embd)


def output_bytes(info: ModelInfo, sessions: int) -> float:
    return 4.0 * info.vocab_size * sessions


def _largest(fits: object, hi: int) -> int:
    """The largest n in [0, hi] with fits(n) true, for a monotonic ``fits`` (bisection)."""
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):  # type: ignore[operator]
            lo = mid
        else:
            hi = mid - 1
    return lo


def max_context(
    info: ModelInfo,
    budget_bytes: float,
    sessions: int = 1,
    kv_type: str = "f16",
    ubatch: int = DEFAULT_UBATCH,
    swa_full: bool = True,
) -> int:
    """The largest per-sequence context (a multiple of 256, at most the trained context) whose KV
    cache for ``sessions`` sequences fits ``budget_bytes``; 0 if not even 256 tokens fit."""
    hi = max(info.context_length // PAD, 1)
    return PAD * _largest(lambda n: kv_cache(info, n * PAD, sessions, kv_type, ubatch, swa_full).bytes <= budget_bytes, hi)


def max_cells(info: ModelInfo, budget_bytes: float, kv_type: str = "f16", swa_full: bool = True) -> int:
    """The most KV cells (a multiple of 256, any context) that fit ``budget_bytes``."""
    per = max(kv_cache(info, PAD, 1, kv_type, swa_full=swa_full).bytes, 1.0)
    hi = int(budget_bytes // per) + 1  # at least per-256-cells bytes each step: a safe upper bound
    return PAD * _largest(lambda n: kv_cache(info, n * PAD, 1, kv_type, swa_full=swa_full).bytes <= budget_bytes, hi)


def max_sessions(
    info: ModelInfo,
    budget_bytes: float,
    ctx: int,
    kv_type: str = "f16",
    ubatch: int = DEFAULT_UBATCH,
    swa_full: bool = True,
    cap: int = 1024,
) -> int:
    """The most concurrent sequences of ``ctx`` tokens whose KV cache (and logits rows) fit."""

    def fits(n: int) -> bool:
        return n == 0 or kv_cache(info, ctx, n, kv_type, ubatch, swa_full).bytes + output_bytes(info, n) <= budget_bytes

    return _largest(fits, cap)


@dataclass
class ContextSize:
    """What the server allocates: one request's context and the KV cells all sequences share."""

    max_context: int
    kv_tokens: int
    kv_bytes: int
    budget_bytes: int
    warning: str | None = None


def size_context(
    info: ModelInfo,
    batch: int,
    budget_bytes: float,
    max_context_tokens: int | None = None,
    kv_tokens: int | None = None,
) -> ContextSize:
    """The server's context and KV cache for ``batch`` sequences, never above ``budget_bytes``
    unless asked for explicitly (``max_context_tokens``/``kv_tokens`` win over the budget).

    The engine keeps every layer's full history (``swa_full``), so every cell costs all layers.
    """
    trained = info.context_length or 4096
    per_token = max(1.0, kv_cache(info, PAD, 1, swa_full=True).per_token)
    cap = max_cells(info, budget_bytes)
    warning = None
    if max_context_tokens:
        ctx = max_context_tokens
        if ctx > trained:
            warning = f"max_context_tokens {ctx} is above the model's trained {trained}; using {trained}"
            ctx = trained
        kv = kv_tokens or max(ctx, min(ctx * batch, cap))
    else:
        pool = max(batch * min(trained, DEFAULT_CELLS_PER_SEQUENCE), min(trained, DEFAULT_CONTEXT))
        kv = kv_tokens or min(pool, cap)
        ctx = min(trained, kv)
    if kv < PAD:  # only the budget makes it this small: say which setting to change
        raise ConfigError(
            f"server.memory_budget_mb: {int(budget_bytes) // MiB} MB holds only {int(budget_bytes // per_token)} KV "
            f"tokens for {batch} sequences; raise memory_budget_mb or lower batch_size"
        )
    kv = pad(kv)
    ctx = min(ctx, kv)
    return ContextSize(ctx, kv, int(kv_cache(info, kv, 1, swa_full=True).bytes), int(budget_bytes), warning)
