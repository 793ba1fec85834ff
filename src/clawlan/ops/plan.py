"""``clawlan plan MODEL``: the planner's figures as a table and a verdict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clawlan.config.settings import ServerSection
from clawlan.errors import ConfigError
from clawlan.model.memory import DEFAULT_RAM_SHARE, ContextSize, size_context
from clawlan.model.metadata import ModelInfo, read_metadata
from clawlan.ops import planner
from clawlan.ops.planner import MemoryPlan


def load_model(model: str | None) -> ModelInfo:
    """A GGUF path (its header only: well under a second), a size such as ``80B``, or None for the embedded model."""
    if model is None:
        from clawlan.model.store import resolve

        return resolve(None)
    path = Path(model).expanduser()
    if path.exists():
        return read_metadata(path)
    if planner.parse_size(model) is not None:
        return planner.assumed_model(model)
    raise ConfigError(
        f"MODEL {model!r} is neither an existing GGUF file nor a size; give a path to a .gguf file or a size such as 80B"
    )


def _b(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:,.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:,.1f} MB"
    return f"{n / 1e3:,.1f} kB"


def render(p: MemoryPlan, info: ModelInfo, serve: ContextSize | None = None) -> str:
    kv = p.kv
    windowed = planner.kv_cache(info, p.ctx, p.sessions, p.kv_type, p.ubatch, swa_full=False)
    lines = [
        f"model      {p.model}  ({p.n_params / 1e9:.3g}B params, {p.n_layers} layers, {info.architecture})"
    ]
    if p.assumed:
        lines.append(
            f"           assumed architecture: dense decoder shaped like {p.assumed}, layers scaled to the size; "
            f"{info.n_embd} hidden, {info.n_heads} heads, {info.n_kv_heads} KV heads of {info.head_dim_k}"
        )
    lines.append(
        f"workload   {p.sessions} session(s) x {p.ctx:,} tokens, KV {p.kv_type}, micro-batch {p.ubatch}"
    )
    if serve is not None:
        lines.append(
            f"serve      what clawlan serve allocates by default: {serve.kv_tokens:,} KV cells shared by "
            f"{p.sessions} sequences, one request up to {serve.max_context:,} tokens"
        )
    lines.append("")
    lines.append(f"  {'exact (llama.cpp)':<60}{'bytes':>14}")
    win = ""
    if kv.swa_layers:
        win = (
            f", {kv.swa_layers} SWA layers kept whole"
            if p.swa_full
            else f", {kv.swa_layers} SWA layers at {kv.swa_cells:,}"
        )
    rows = [
        (f"weights ({p.quant})", p.weights),
        (
            f"KV cache: {kv.global_layers + kv.swa_layers} layers x {info.n_kv_heads} KV heads x "
            f"({info.head_dim_k}+{info.head_dim_v}) x {planner.kv_elem_bytes(p.kv_type):g} B",
            None,
        ),
        (f"   {kv.per_token:,.0f} B/token x {kv.cells:,} cells{win}", kv.bytes),
        *(
            [(f"   (SWA layers at their window, as llama-server: {_b(windowed.bytes)})", None)]
            if kv.swa_layers and p.swa_full
            else []
        ),
        (f"compute buffer (logits {p.ubatch} x {info.vocab_size:,} x 4 B)", p.compute),
        ("output buffer (one logits row per session)", p.output),
        ("runtime (interpreter, llama.cpp, slack)", p.runtime),
    ]
    for label, val in rows:
        lines.append(f"  {label:<60}{'' if val is None else _b(val):>14}")
    lines.append(f"  {'total':<60}{_b(p.total):>14}")
    lines.append(
        f"  {'expected RSS (compute buffer only where steps write it)':<60}{_b(p.resident):>14}"
    )
    lines.append("")
    lines.append("  the common rule of thumb")
    lines.append(f"  {'base = params(B) x 2 (FP16) x 1.2':<60}{_b(p.rule_weights):>14}")
    lines.append(f"  {f'context = {p.ctx * p.sessions:,} tokens x 4 x 2':<60}{_b(p.rule_context):>14}")
    lines.append(f"  why they differ: {planner.rule_of_thumb_note(p)}")
    lines.append("")
    mem = []
    if p.ram:
        mem.append(f"RAM {_b(p.ram)}")
    if p.gpu:
        mem.append(f"GPU {_b(p.gpu)}")
    lines.append(f"memory     {', '.join(mem) or 'unknown'} (10% kept for the OS and driver)")
    lines.append(f"verdict    {'FITS' if p.fits else 'DOES NOT FIT'}: {p.verdict}")
    if p.max_ctx or p.max_sessions:
        lines.append(
            f"limits     largest context for {p.sessions} session(s): {p.max_ctx:,} tokens"
            f"{' (the trained maximum)' if p.max_ctx >= info.context_length else ''}; "
            f"most sessions at {p.ctx:,} tokens: {p.max_sessions}"
        )
    else:
        lines.append("limits     nothing is left for a KV cache")
    return "\n".join(lines)


def server_default(info: ModelInfo, sessions: int) -> ContextSize:
    """The context and KV cache ``clawlan serve`` gives this model for ``sessions`` sequences."""
    import psutil

    return size_context(info, sessions, psutil.virtual_memory().available * DEFAULT_RAM_SHARE)


def run(args: argparse.Namespace) -> int:
    info = load_model(args.model)
    sessions = args.sessions or ServerSection().batch_size
    serve = None
    ctx = args.ctx
    if ctx is None and info.file_size:  # a real file: plan exactly what the server will allocate
        serve = server_default(info, sessions)
        ctx = serve.kv_tokens // sessions
    ram = args.ram * 1e9 if args.ram else planner.detect_ram()
    gpu = args.gpu_mem * 1e9 if args.gpu_mem else None
    if gpu is None and not args.no_gpu:
        found = planner.detect_gpu()
        gpu = found[0] if found else None
    p = planner.plan_memory(
        info,
        ctx,
        sessions,
        args.quant,
        kv_type=args.kv_type,
        ubatch=args.ubatch,
        ram=ram,
        gpu=gpu,
        swa_full=not args.swa_window,
    )
    if args.json:
        print(json.dumps(p.to_dict(), indent=2, default=str))
    else:
        print(render(p, info, serve))
    return 0 if p.fits else 1


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("plan", help="will a model fit: weights, KV cache, buffers, verdict and limits")
    sp.add_argument(
        "model", nargs="?", help="a GGUF file or a size such as 80B (default: the embedded model)"
    )
    sp.add_argument("--quant", help=f"weights quantization ({', '.join(planner.QUANTS)}); default: as stored")
    sp.add_argument(
        "--ctx", type=int, help="tokens per session (default: the KV cache clawlan serve allocates, per session)"
    )
    sp.add_argument("--sessions", type=int, help="concurrent sessions (default: the server's batch size, 8)")
    sp.add_argument("--gpu-mem", type=float, metavar="GB", help="GPU memory (default: nvidia-smi's, if any)")
    sp.add_argument("--no-gpu", action="store_true", help="plan for the CPU even when a GPU is present")
    sp.add_argument("--ram", type=float, metavar="GB", help="RAM (default: this machine's)")
    sp.add_argument("--kv-type", default="f16", help=f"KV cache type ({', '.join(planner.KV_TYPES)})")
    sp.add_argument(
        "--ubatch", type=int, default=planner.DEFAULT_UBATCH, help="llama.cpp micro-batch (n_ubatch)"
    )
    sp.add_argument(
        "--swa-window",
        action="store_true",
        help="count sliding-window layers at their window (llama-server's default) instead of clawlan's full cache",
    )
    sp.add_argument("--json", action="store_true", help="print the plan as JSON")
    sp.set_defaults(func=run)
