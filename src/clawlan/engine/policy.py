"""How a step is shaped for the llama.cpp backend at hand: the one place the scheduler, the KV
cache and the runner ask.

Two kinds of rule live here.

**Rules of llama.cpp itself, on every backend.** With one KV stream per sequence, llama.cpp
cuts a batch into micro-batches with ``split_equal`` (llama-batch.cpp): a run of *consecutive*
sequence ids in batch order, the same number of tokens from each. Every extra micro-batch is a
graph computed on its own. So, whenever the layout is streams, a step's chunks go in id order,
every decoder feeds the same number of tokens (even drafts), and new work takes the free stream
that keeps the running ids contiguous (:func:`contiguous_runs`). These hold on a CPU and a GPU.

**Rules measured on one CPU** (2-core x86, Gemma 3 270M; :mod:`clawlan.engine.microbatch` has
the figures): llamafile's tinyBLAS tiles the vocabulary projection's output rows in fours, and
a free stream among the decoders splits the step. The CPU policy therefore fills such gaps
with filler tokens and rounds output rows up (only where the vocabulary matrix is a type
tinyBLAS tiles: :func:`row_quantum`).

The GPU policy (``gpu_layers != 0`` on a library that can offload) adds neither. Nothing was
measured on a GPU to show they pay, a filler is a real token through the model, and a step
whose token count jumps with fillers changes the graph's shape, which makes llama.cpp's CUDA
backend rebuild its CUDA graph instead of replaying it. The GPU policy still keeps one stream
per sequence where the layout allows, ids in order and even drafts (the split rule above).

**Overlap** (GPU policy, no drafts): step N+1 is scheduled while step N computes. On CUDA,
``llama_decode`` returns once the graph is queued (``graph_compute`` calls
``ggml_backend_sched_graph_compute_async``, and ``decode`` ends with its ``synchronize()``
commented out); the host waits only when it reads an output (``llama_get_logits*`` and
``llama_get_sampled_token_ith`` call ``synchronize()`` first). The batch is copied into
llama.cpp's own at the call (``llama_batch_compat``), and the memory calls the scheduler makes
(``llama_memory_seq_rm/cp/pos_max``) change the cache's host-side cell records only (a copy
across streams waits for the next decode, which synchronizes first). So admission, KV
accounting, positions and sequence ids for N+1 are done while the device works, and only the
token column is written after N's read. Drafts need N's tokens to look up theirs, so overlap
is for ``draft_tokens`` 0. On a CPU the decode itself is synchronous: nothing to hide behind,
so the CPU policy leaves it off (the engine's step is then schedule, run, postprocess).

The unified layout (one cache shared by all sequence ids) keeps its branches: it is the only
layout in which one sequence may use more than ``kv_tokens / batch`` cells, and in which idle
prefix-cache entries beyond the batch share cells with running sequences instead of being
copied (``llama_memory_seq_cp`` only tags cells there). Small-memory set-ups (a KV budget below
batch x context) depend on it, and the engine tests run both layouts (preemption under a tiny
KV budget, prefix sharing). It is chosen only where streams do not fit
(``EngineConfig.kv_layout="auto"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clawlan.engine.microbatch import ROW_QUANTUM, Part, pad, rounded_tokens

# Output-matrix types llamafile's tinyBLAS multiplies on the CPU (its sgemm.cpp); others (Q6_K,
# ...) take ggml's own path, which has no four-row tiles, so their rows are not rounded (reasoned
# from the source, not measured: only the embedded model's Q8_0 was at hand).
TILED_TYPES = frozenset({"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_0", "IQ4_NL"})


def row_quantum(output_type: str | None, gpu_layers: int) -> int:
    """Output rows are rounded to this many: ``ROW_QUANTUM`` where the vocabulary matrix
    (``output_type``, a GGUF tensor type name) is multiplied by tinyBLAS on the CPU, else 1."""
    return ROW_QUANTUM if gpu_layers == 0 and output_type in TILED_TYPES else 1


def contiguous_runs(busy: list[bool]) -> int:
    """Runs of consecutive busy stream ids: llama.cpp runs each as a micro-batch of its own
    (4 sequences on ids 0, 2, 4, 6 decoded in 90 ms, on 0-3 in 42 ms, CPU). The KV cache gives
    new work the free stream that keeps this lowest."""
    return sum(1 for i, b in enumerate(busy) if b and (i == 0 or not busy[i - 1]))


@dataclass(frozen=True)
class StepPolicy:
    """Step shaping for one backend. ``streams``: one KV stream per sequence id (the layout
    decides; see :func:`clawlan.engine.engine.use_streams`)."""

    kind: str  # "cpu" or "gpu", for logs
    streams: bool = False
    fillers: bool = False  # free streams between decoders get filler tokens (CPU only)
    quantum: int = 1  # output rows of a decode step are rounded to this many (1: not at all)
    # Plain greedy sequences take their argmax inside llama.cpp's graph (llama_set_sampler), so no
    # vocabulary-sized logits row crosses to the host. The pinned llama.cpp allows it only for one
    # output row per sequence and step ("backend sampling supports at most 1 outputs per
    # sequence"), so only without drafts or padding rows: the GPU policy with draft_tokens 0.
    device_greedy: bool = False
    # Schedule step N+1 between launching step N and reading its outputs (see the module's
    # docstring): pays where llama_decode returns before the step is computed, a GPU's.
    overlap: bool = False

    def __post_init__(self) -> None:
        assert not (self.device_greedy and self.pads), "device sampling takes one output row per sequence"

    @property
    def ordered(self) -> bool:
        """Steps are built as one micro-batch: ids in order, one draft length for every decoder."""
        return self.streams

    @property
    def pads(self) -> bool:
        return self.fillers or self.quantum > 1

    def draft_tokens(self, n: int, t: int, spare: int) -> int:
        """Tokens (at most ``t``) each of ``n`` decoders feeds, ``spare`` streams being free."""
        return rounded_tokens(n, t, spare, self.quantum) if self.pads else t

    def shape(
        self, parts: list[Part], *, n_seq: int, n_batch: int, stream_cells: int, next_pos: Callable[[int], int]
    ) -> list[Part]:
        """The parts to decode: ``parts`` in id order with streams, padded where this backend pays
        for it (fillers carry ``filler=True``; the caller removes them after the decode)."""
        if not self.pads or sum(p.n_logits for p in parts) <= 1:
            return sorted(parts, key=lambda p: p.seq_id) if self.streams else parts
        return pad(
            parts,
            streams=self.streams,
            n_seq=n_seq,
            n_ubatch=n_batch,
            next_pos=next_pos,
            stream_cells=stream_cells,
            quantum=self.quantum,
        )


def cpu_policy(streams: bool, output_type: str | None = "Q8_0") -> StepPolicy:
    """tinyBLAS on the CPU: fillers (with streams), and rows in fours where the vocabulary matrix
    (``output_type``; by default the embedded model's Q8_0) is a type it tiles."""
    return StepPolicy("cpu", streams=streams, fillers=streams, quantum=row_quantum(output_type, 0))


def gpu_policy(streams: bool, device_greedy: bool = False, overlap: bool = False) -> StepPolicy:
    return StepPolicy("gpu", streams=streams, device_greedy=device_greedy, overlap=overlap)


def choose(
    streams: bool,
    gpu_layers: int,
    output_type: str | None = "Q8_0",
    gpu_capable: bool | None = None,
    draft_tokens: int = 0,
) -> StepPolicy:
    """The policy for a model loaded with ``gpu_layers`` on this llama.cpp library.
    ``gpu_capable``: whether the library can offload at all (asked of llama.cpp when None).
    Greedy sampling moves onto the device, and the next step is prepared while one computes,
    only where no step has drafts (``draft_tokens`` 0)."""
    if gpu_capable is None:
        import llama_cpp

        gpu_capable = bool(llama_cpp.llama_supports_gpu_offload())
    if gpu_layers != 0 and gpu_capable:
        return gpu_policy(streams, device_greedy=draft_tokens == 0, overlap=draft_tokens == 0)
    return cpu_policy(streams, output_type)
