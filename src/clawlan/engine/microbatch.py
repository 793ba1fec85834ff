"""The CPU policy's machinery (:mod:`clawlan.engine.policy` decides where it applies): how
llama.cpp cuts a batch into micro-batches, and padding a decode step to a fast shape.

Two facts about llama.cpp's CPU path, measured on a 2-core x86 machine (docs/benchmarks.md):

1. **Micro-batches.** With one KV stream per sequence, ``llama_decode`` runs a batch as
   micro-batches: each takes, from the first unused token in batch order (the lowest id, as the
   scheduler sorts its steps), a run of *consecutive* ids and the same number of tokens from
   each (``split_equal``); what is left goes into further ones.
   Seven decoders with a free stream among them are two micro-batches, not one.
2. **Output rows come in fours.** Most of a small model's decode step is the vocabulary-sized
   output projection, computed once per micro-batch over its output rows, and llamafile's
   tinyBLAS kernel tiles those rows four at a time: 7 rows cost 46 ms and 8 rows 31 ms;
   15 rows 55 ms, 16 rows 33 ms (Gemma 3 270M, 262k vocabulary). Up to four rows the tiles
   do not matter (one row takes another path and costs 7 ms; 2, 3 and 4 rows 17, 22 and 24 ms).

So a decode step is padded before it is decoded:

* a stream between the decoders that the step does not use gets *filler* tokens, as many as
  each decoder feeds, so that the decoders stay one micro-batch; a filler is removed from its
  stream right after the decode;
* tokens already in the decoders' micro-batch (fillers', then a prompt chunk's first tokens)
  are marked as outputs, and a few fillers may be added beside the run, until the output rows
  are a multiple of four. Those rows are computed and never read.

A filler token costs a pass through the model body (about 1.4 ms here, beside sequences of a
few hundred tokens; :func:`pad` keeps fillers out of longer streams) and a micro-batch saved is
15-25 ms, so a few fillers between decoders pay; at the edges, where they only round the
rows up, fewer are allowed. The scheduler picks draft lengths that round well
(:func:`rounded_tokens`, through the policy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

ROW_QUANTUM = 4  # tinyBLAS tiles output rows in fours (also ARM's repacked Q8_0 kernels); policy.py decides where
GAP_FILLER_TOKENS = 8  # most filler tokens spent to keep a step's sequences one micro-batch
EDGE_FILLER_TOKENS = 4  # most filler tokens spent beside the run just to round the rows up
FILLER_SPAN = 1024  # a filler may stretch the step's attention span to this many cells, no further


@dataclass
class Part:
    """Tokens of one sequence in a ``llama_decode`` batch."""

    seq_id: int
    start: int  # position of the first token
    tokens: list[int]
    n_logits: int  # the last n tokens get output rows that the caller reads
    n_head: int = 0  # the first n tokens get output rows only to pad the micro-batch
    filler: bool = False  # not a sequence's tokens: removed from the stream after the decode
    index: int = -1  # the caller's number for this part (its rows are returned under it)

    def __post_init__(self) -> None:
        assert self.n_head + self.n_logits <= len(self.tokens)


def _rounded(rows: int, quantum: int) -> bool:
    return rows <= quantum or rows % quantum == 0


def _roundable(n: int, t: int, spare: int, quantum: int) -> bool:
    """``n`` sequences of ``t`` rows each make a fast micro-batch, with edge fillers (``t``
    tokens each, as many of them output rows as needed) in at most ``spare`` free streams."""
    fillers = min(spare, EDGE_FILLER_TOKENS // t)
    return _rounded(n * t, quantum) or -(n * t) % quantum <= fillers * t


def rounded_tokens(n: int, t: int, spare: int, quantum: int = ROW_QUANTUM) -> int:
    """The most tokens, at most ``t``, that ``n`` decoders can each feed in a fast micro-batch
    when ``spare`` streams are free for fillers; ``t`` itself when no count rounds (a draft
    still pays in an uneven micro-batch: 5 decoders, 37 ms for 5 rows, 55 ms for 15)."""
    for k in range(t, 0, -1):
        if _roundable(n, k, spare, quantum):
            return k
    return t


def pad(
    parts: list[Part],
    *,
    streams: bool,
    n_seq: int,
    n_ubatch: int,
    next_pos: Callable[[int], int],
    stream_cells: int,
    n_batch: int | None = None,
    quantum: int = ROW_QUANTUM,
) -> list[Part]:
    """``parts`` with fillers and padding rows added, as described above (in sequence-id order
    with streams, where llama.cpp needs that order).

    ``next_pos(s)`` is the position after stream ``s``'s last token; ``stream_cells`` its size.
    Steps that are not decode-shaped (no decoder, or decoders feeding unequal counts) are left
    as they are; so is anything the padding cannot fit (in the streams or in the batch of
    ``n_batch`` tokens, ``n_ubatch`` unless given). A filler never goes into a stream holding
    more than the step's longest sequence (or ``FILLER_SPAN`` cells): llama.cpp sizes every
    stream's attention in a micro-batch to the longest one there, so a filler beside a
    12k-token idle conversation would make every decoder attend over 12k cells."""
    decoders = [p for p in parts if p.n_logits == len(p.tokens)]
    if not decoders:
        return parts
    if not streams:
        return _round(parts, {p.seq_id for p in parts}, None, quantum) or parts  # one micro-batch of all
    parts = sorted(parts, key=lambda p: p.seq_id)
    t = len(decoders[0].tokens)
    if any(len(p.tokens) != t for p in decoders):
        return parts  # unequal drafts: the step splits whatever is added
    used = {p.seq_id for p in parts}
    lo, hi = min(p.seq_id for p in decoders), max(p.seq_id for p in decoders)
    end = max(p.start + len(p.tokens) for p in parts)
    # llama.cpp pads the attention span to 256 cells; up to FILLER_SPAN the span costs little
    horizon = min(stream_cells, max(-(-end // 256) * 256, FILLER_SPAN))
    room = (n_ubatch if n_batch is None else n_batch) - sum(len(p.tokens) for p in parts)

    def filler(s: int) -> Part | None:
        nonlocal room
        if s in used or not 0 <= s < n_seq or room < t:
            return None
        at = next_pos(s)
        if at + t > horizon:
            return None
        room -= t
        used.add(s)
        return Part(s, at, [0] * t, 0, filler=True)

    gaps = [s for s in range(lo, hi + 1) if s not in used]
    real = sum(p.n_logits for p in parts)
    # Fill only where the split is dear: projections of a few rows are cheap on their own (two
    # lone decoders at ids 0 and 7 split into two 1-row micro-batches: 14 ms; filled: 8 rows, 39 ms).
    if gaps and (real <= ROW_QUANTUM or len(gaps) * t > min(GAP_FILLER_TOKENS, real)):
        return parts
    fillers = [filler(s) for s in gaps]
    if None in fillers:
        return parts  # a full or long stream in the gap: the step splits anyway
    out = sorted(parts + [f for f in fillers if f is not None], key=lambda p: p.seq_id)
    edge: list[Part] = []
    while True:
        trial = sorted(out + edge, key=lambda p: p.seq_id)
        run = _run_around(trial, lo)
        if len(run) * t > n_ubatch or any(len(p.tokens) < t for p in run):
            return out  # the decoders would not share one micro-batch with these
        rounded = _round(trial, {p.seq_id for p in run}, t, quantum)
        if rounded is not None:
            return rounded
        if (len(edge) + 1) * t > EDGE_FILLER_TOKENS:
            return out
        f = filler(run[-1].seq_id + 1) or filler(run[0].seq_id - 1)
        if f is None:
            return out
        edge.append(f)


def _run_around(parts: list[Part], seq_id: int) -> list[Part]:
    """The parts of consecutive ids around ``seq_id`` (``parts`` sorted by id): one micro-batch."""
    i = next(k for k, p in enumerate(parts) if p.seq_id == seq_id)
    a = b = i
    while a > 0 and parts[a - 1].seq_id == parts[a].seq_id - 1:
        a -= 1
    while b + 1 < len(parts) and parts[b + 1].seq_id == parts[b].seq_id + 1:
        b += 1
    return parts[a : b + 1]


def _round(parts: list[Part], ids: set[int], per_seq: int | None, quantum: int) -> list[Part] | None:
    """``parts`` with more of their tokens marked as output rows, fillers' first, then prompt
    chunks', so that the rows of the micro-batch holding ``ids`` (``per_seq`` tokens from each;
    None: all) round up; None if there are not enough tokens to mark."""

    def window(p: Part) -> int:
        return len(p.tokens) if per_seq is None else min(per_seq, len(p.tokens))

    def rows(p: Part) -> int:
        n = window(p)
        return min(p.n_head, n) + max(0, n - (len(p.tokens) - p.n_logits))

    n_rows = sum(rows(p) for p in parts if p.seq_id in ids)
    if _rounded(n_rows, quantum):
        return parts
    want = -n_rows % quantum
    out = list(parts)
    for fillers_first in (True, False):
        for i, p in enumerate(out):
            if want and p.seq_id in ids and p.filler == fillers_first:
                free = max(0, min(window(p), len(p.tokens) - p.n_logits) - p.n_head)
                extra = min(want, free)
                if extra:
                    out[i] = replace(p, n_head=p.n_head + extra)
                    want -= extra
    return None if want else out
