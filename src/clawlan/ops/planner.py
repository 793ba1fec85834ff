"""Memory planning: will a model fit, and how much context and batch does it leave?

Everything here is arithmetic on GGUF metadata (or on a documented assumed
architecture when only a size such as ``80B`` is given). The KV cache and buffer
arithmetic the server also needs lives with the model, in ``model/memory.py``;
this module adds quantizations, assumed shapes, GPU splits and the verdict.

The figures follow what llama.cpp actually allocates, checked against its own
load log on the embedded Gemma 3 270M:

* **weights** - the tensor bytes in the file (or params x bits-per-weight when
  another quantization is asked for);
* **KV cache** - ``layers x KV heads x (K head dim + V head dim) x bytes x cells``.
  Global-attention layers hold every cell (context x sessions, one unified
  cache). Sliding-window layers hold only ``window x sessions + ubatch`` cells,
  which is what llama.cpp's ``llama_kv_cache_iswa`` allocates when
  ``swa_full`` is off (llama-server's default). clawlan's engine turns
  ``swa_full`` on, so that a cached prefix longer than the window stays
  reusable; then windowed layers cost as much as global ones. Both are
  computed; ``swa_full=True`` is the default because that is what
  ``clawlan serve`` allocates;
* **compute buffer** - llama.cpp reserves the graph for a full micro-batch
  with every token producing logits, so the largest tensor is
  ``ubatch x vocab x 4`` bytes (514.5 MiB for Gemma's 262k vocabulary!);
* **output buffer** - one logits row per sequence;
* **runtime** - the interpreter, llama.cpp's code and allocator slack.

The common rule of thumb (params x 2 bytes x 1.2, and tokens x 4 x 2) is
computed beside it; :func:`rule_of_thumb_note` says why the two differ.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from clawlan.errors import ConfigError
from clawlan.model.gguf_file import read_header
from clawlan.model.memory import (  # noqa: F401 (re-exported: the planner's arithmetic lives with the model)
    DEFAULT_UBATCH,
    KV_TYPES,
    OUTPUT_ROWS_PER_SEQUENCE,
    PAD,
    KVCache,
    MiB,
    compute_bytes,
    compute_resident_bytes,
    kv_cache,
    kv_elem_bytes,
    max_context,
    max_sessions,
    output_bytes,
    pad,
)
from clawlan.model.metadata import ModelInfo

GiB = 1 << 30
RUNTIME_BYTES = 96 * MiB  # Python + llama.cpp code + allocator slack, measured ~90 MB on this machine
OS_RESERVE = 0.10  # leave a tenth of RAM / GPU memory to the OS, driver and other processes


@dataclass(frozen=True)
class Quant:
    name: str
    bits: float  # average bits per weight, scales included
    note: str = ""


# Average bits per weight. Block formats carry an fp16 scale per block, which
# is why Q8_0 is 8.5 bits, not 8: a 32-weight block is 32 bytes + a 2-byte
# scale. The K-quant "_M"/"_S"/"_L" names are mixes (attention V and FFN down
# kept at a higher type), so their average sits above the base type's bits;
# the figures are llama.cpp's on a Llama-2-7B-shaped model.
QUANTS: dict[str, Quant] = {
    q.name: q
    for q in [
        Quant("F32", 32.0, "full precision"),
        Quant("F16", 16.0, "half precision"),
        Quant("BF16", 16.0, "bfloat16"),
        Quant("INT8", 8.0, "idealised 8-bit integers without scales"),
        Quant("Q8_0", 8.5, "8-bit blocks of 32 with an fp16 scale"),
        Quant("Q6_K", 6.5625),
        Quant("Q5_K_M", 5.69),
        Quant("Q5_K_S", 5.54),
        Quant("Q5_0", 5.5),
        Quant("Q4_K_M", 4.89),
        Quant("Q4_K_S", 4.58),
        Quant("Q4_0", 4.5),
        Quant("INT4", 4.0, "idealised 4-bit integers without scales"),
        Quant("Q3_K_L", 4.27),
        Quant("Q3_K_M", 3.91),
        Quant("Q3_K_S", 3.5),
        Quant("Q2_K", 3.35),
    ]
}
ALIASES = {"FP32": "F32", "FP16": "F16", "BF16": "BF16", "INT8": "INT8", "INT4": "INT4"}

def quant(name: str) -> Quant:
    key = name.strip().upper().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in QUANTS:
        raise ConfigError(f"--quant {name!r} is not a known quantization; use one of {', '.join(QUANTS)}")
    return QUANTS[key]


# --- a model from its size alone -------------------------------------------------------------

# Published dense decoder shapes (layers, hidden, heads, KV heads, FFN, vocab) by parameter count.
# A bare size picks the nearest one (in log scale) and scales its layer count so the parameters
# match: width and GQA stay those of a real model, which is what decides KV bytes per token.
REFERENCE_SHAPES = [
    # params, layers, n_embd, heads, kv_heads, ffn, vocab, name
    (1.2e9, 16, 2048, 32, 8, 8192, 128256, "Llama 3.2 1B"),
    (3.2e9, 28, 3072, 24, 8, 8192, 128256, "Llama 3.2 3B"),
    (8.0e9, 32, 4096, 32, 8, 14336, 128256, "Llama 3.1 8B"),
    (14.8e9, 48, 5120, 40, 8, 13824, 152064, "Qwen2.5 14B"),
    (32.8e9, 64, 5120, 40, 8, 27648, 152064, "Qwen2.5 32B"),
    (70.6e9, 80, 8192, 64, 8, 28672, 128256, "Llama 3.1 70B"),
    (405e9, 126, 16384, 128, 8, 53248, 128256, "Llama 3.1 405B"),
]

SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMbBtT])\s*$")


def parse_size(text: str) -> float | None:
    """``80B`` -> 80e9 parameters; None if ``text`` is not a size."""
    m = SIZE_RE.match(text)
    if not m:
        return None
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    return float(m.group(1)) * scale


def assumed_model(text: str) -> ModelInfo:
    """A ModelInfo for a bare parameter count, shaped like the nearest published dense model."""
    n = parse_size(text)
    if n is None or n <= 0:
        raise ConfigError(
            f"MODEL {text!r} is neither a GGUF file nor a size; give a path or a size such as 80B"
        )
    ref = min(REFERENCE_SHAPES, key=lambda r: abs(math.log(n / r[0])))
    p, layers, embd, heads, kv, ffn, vocab, name = ref
    n_layers = max(1, round(layers * n / p))
    return ModelInfo(
        path=Path(text),
        file_size=0,
        architecture="llama",
        name=f"{text} (assumed: {name} shape, {n_layers} layers)",
        n_params=int(n),
        n_layers=n_layers,
        n_embd=embd,
        n_heads=heads,
        n_kv_heads=kv,
        head_dim_k=embd // heads,
        head_dim_v=embd // heads,
        context_length=131072,
        vocab_size=vocab,
        raw={"feed_forward_length": ffn, "assumed": name},
    )


def tensor_table(path: Path) -> list[tuple[str, int]]:
    """(name, bytes) of every tensor in a GGUF file, from the one header reader."""
    return [(t.name, t.n_bytes) for t in read_header(path).tensors]


def layer_split(info: ModelInfo) -> tuple[float, float, float]:
    """(bytes of one repeating layer, bytes outside the layers, bytes of the output head) as stored.

    The output head is ``output.weight``, or the token embedding when the two are tied (Gemma):
    llama.cpp puts a copy of it on the GPU when every layer is offloaded.
    """
    total = float(sum(info.tensor_types.values()))
    table = info.tensor_bytes
    if not total or not table:
        return 0.0, 0.0, 0.0
    in_layers = sum(n for name, n in table.items() if name.startswith("blk."))
    head = table.get("output.weight", table.get("token_embd.weight", 0))
    return in_layers / max(info.n_layers, 1), total - in_layers, float(head)


# --- the arithmetic ------------------------------------------------------------------------------


@dataclass
class MemoryPlan:
    model: str
    quant: str
    n_params: int
    n_layers: int
    ctx: int
    sessions: int
    ubatch: int
    kv_type: str
    weights: float
    layer_bytes: float
    other_bytes: float
    head_bytes: float
    kv: KVCache
    compute: float
    output: float
    compute_resident: float = 0.0  # the compute buffer's pages a step writes (see memory.compute_resident_bytes)
    runtime: float = RUNTIME_BYTES
    swa_full: bool = True
    assumed: str | None = None
    # the seed's rule of thumb
    rule_weights: float = 0.0
    rule_context: float = 0.0
    # the verdict
    ram: float | None = None
    gpu: float | None = None
    gpu_layers: int = 0
    fits: bool = True
    verdict: str = ""
    max_ctx: int = 0
    max_sessions: int = 0

    @property
    def total(self) -> float:
        """Everything allocated: what must fit."""
        return self.weights + self.kv.bytes + self.compute + self.output + self.runtime

    @property
    def resident(self) -> float:
        """What a running server holds (its RSS): the compute buffer only where steps write it."""
        return self.total - self.compute + min(self.compute_resident, self.compute)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "kv"}
        d["kv"] = dict(self.kv.__dict__, per_token=self.kv.per_token)
        d["total"] = self.total
        d["resident"] = self.resident
        return d


def weights_bytes(info: ModelInfo, q: Quant | None) -> tuple[float, str]:
    if q is None and info.tensor_types:
        # gguf names the all-F32 file type "ALL_F32" where every other is "MOSTLY_X" (already stripped).
        return float(sum(info.tensor_types.values())), (info.file_type or "as stored").removeprefix("ALL_")
    q = q or QUANTS["F16"]  # a bare size without --quant: the seed's FP16 assumption
    return info.n_params * q.bits / 8, q.name


def plan_memory(
    info: ModelInfo,
    ctx: int | None = None,
    sessions: int = 1,
    quant_name: str | None = None,
    *,
    kv_type: str = "f16",
    ubatch: int = DEFAULT_UBATCH,
    ram: float | None = None,
    gpu: float | None = None,
    swa_full: bool = True,
) -> MemoryPlan:
    """Memory for ``sessions`` concurrent sequences of ``ctx`` tokens; ``ram``/``gpu`` in bytes."""
    if sessions < 1:
        raise ConfigError(f"--sessions {sessions} must be at least 1")
    ctx = ctx or min(info.context_length, 4096)
    if ctx < 1:
        raise ConfigError(f"--ctx {ctx} must be at least 1")
    q = quant(quant_name) if quant_name else None
    weights, qname = weights_bytes(info, q)
    layer_b, other_b, head_b = layer_split(info)
    if not layer_b or (q is not None and info.tensor_types):
        # No file split (or re-quantizing): the token embedding and the output head, each
        # vocab x n_embd, are what lies outside the layers.
        head_b = weights * min(0.25, info.vocab_size * info.n_embd / max(info.n_params, 1))
        other_b = 2 * head_b
        layer_b = (weights - other_b) / max(info.n_layers, 1)
    ub = min(ubatch, pad(ctx * sessions))
    p = MemoryPlan(
        model=info.name,
        quant=qname,
        n_params=info.n_params,
        n_layers=info.n_layers,
        ctx=ctx,
        sessions=sessions,
        ubatch=ub,
        kv_type=kv_type,
        weights=weights,
        layer_bytes=layer_b,
        other_bytes=other_b,
        head_bytes=head_b,
        kv=kv_cache(info, ctx, sessions, kv_type, ub, swa_full),
        swa_full=swa_full,
        compute=compute_bytes(info, ub),
        compute_resident=compute_resident_bytes(info, ub, sessions * OUTPUT_ROWS_PER_SEQUENCE),
        output=output_bytes(info, sessions),
        assumed=info.raw.get("assumed"),
        rule_weights=info.n_params / 1e9 * 2 * 1.2 * 1e9,
        rule_context=ctx * sessions * 4 * 2,
        ram=ram,
        gpu=gpu,
    )
    _verdict(p, info)
    return p


def _verdict(p: MemoryPlan, info: ModelInfo) -> None:
    fixed = p.weights + p.compute + p.output + p.runtime
    usable_ram = p.ram * (1 - OS_RESERVE) if p.ram else None
    usable_gpu = p.gpu * (1 - OS_RESERVE) if p.gpu else None
    kv_per_layer = p.kv.bytes / max(p.n_layers, 1)
    if usable_gpu:
        # The GPU holds the compute buffer and, per offloaded layer, its weights and its share of
        # the KV cache; the output head goes last (llama.cpp offloads it with the final "layer").
        room = usable_gpu - p.compute
        per = p.layer_bytes + kv_per_layer
        n = int(max(room, 0) // per) if per else 0
        if p.n_layers * per + p.head_bytes <= room:
            p.gpu_layers = p.n_layers
            p.fits = True
            p.verdict = (
                f"fits on the GPU: offload all {p.n_layers} layers and the output head (--gpu-layers -1)"
            )
        else:
            n = min(n, p.n_layers)
            p.gpu_layers = n
            host = fixed - p.compute + p.kv.bytes - n * per  # what stays in RAM
            ok = usable_ram is None or host <= usable_ram
            p.fits = n > 0 and ok
            groups = _groups(p.n_layers, n)
            rest = "the output head" if n == p.n_layers else "the rest"
            p.verdict = (
                f"split: {n} of {p.n_layers} layers on the GPU (--gpu-layers {n}), {rest} in RAM "
                f"({_gb(host)} needed there){groups}"
            )
            if not ok:
                p.verdict += f"; RAM too small ({_gb(usable_ram or 0)} usable)"
            if n == 0:
                p.verdict = f"does not fit the GPU ({_gb(usable_gpu)} usable): not even one layer; " + (
                    "runs on the CPU from RAM" if ok else "and not in RAM either: use a smaller quantization"
                )
    elif usable_ram is not None:
        p.fits = p.total <= usable_ram
        p.verdict = (
            f"fits in RAM ({_gb(p.total)} of {_gb(usable_ram)} usable)"
            if p.fits
            else f"does not fit in RAM: needs {_gb(p.total)}, {_gb(usable_ram)} usable; "
            "use a smaller --quant, fewer --sessions or a shorter --ctx"
        )
    # What is left for the KV cache once weights and buffers are placed (on the device holding them).
    if usable_gpu and p.gpu_layers == p.n_layers and p.verdict.startswith("fits on the GPU"):
        # The token embedding stays in RAM (llama.cpp looks rows up on the CPU); the rest is on the GPU.
        left = usable_gpu - p.compute - p.n_layers * p.layer_bytes - p.head_bytes
    elif usable_gpu and p.gpu_layers and usable_ram:
        # Split: layers (and their KV) can move between the two, so pool what both have left.
        left = usable_gpu + usable_ram - fixed
    elif usable_ram:
        left = usable_ram - fixed
    else:
        left = 0.0
    if left:
        p.max_ctx = max_context(info, left, p.sessions, p.kv_type, p.ubatch, p.swa_full) if left > 0 else 0
        # max_sessions counts the logits rows itself, so give back the ones already in ``fixed``.
        p.max_sessions = (
            max_sessions(info, left + p.output, p.ctx, p.kv_type, p.ubatch, p.swa_full) if left > 0 else 0
        )


def _groups(layers: int, on_gpu: int) -> str:
    # The seed's "parameter groups": layers come in 4-8 blocks swapped as a unit.
    if on_gpu <= 0 or on_gpu >= layers:
        return ""
    k = math.ceil(layers / on_gpu)
    if k > 8:
        return f"; 4-8 parameter groups are not enough: {k} groups of {on_gpu} layers"
    return f"; as parameter groups: {max(k, 1)} groups of up to {on_gpu} layers"


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def rule_of_thumb_note(p: MemoryPlan) -> str:
    """One line on why the rule of thumb and the exact figure differ."""
    ratio = p.kv.per_token / 8
    return (
        f"the rule assumes FP16 weights whatever the quantization ({p.quant} here) and a flat 20% margin, "
        f"and its 'tokens x 4 x 2' is 8 bytes a token where this model's KV needs {p.kv.per_token:,.0f} "
        f"(layers x KV heads x head dims x K,V x bytes), {ratio:,.0f} times more"
        + (", less where sliding-window layers cap the cache" if p.kv.swa_layers else "")
        + "; and 'x 2 double buffering' is not how llama.cpp allocates: K and V are the 2"
    )


# --- what the machine has ------------------------------------------------------------------------


def detect_ram() -> float:
    import psutil

    return float(psutil.virtual_memory().total)


def detect_gpu() -> tuple[float, float] | None:
    """(total, free) bytes of the first NVIDIA GPU, or None when there is none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        total, free = (float(x) * MiB for x in out.stdout.splitlines()[0].split(","))
    except Exception:  # a broken driver is doctor's business; plan just sees no GPU
        return None
    return total, free
