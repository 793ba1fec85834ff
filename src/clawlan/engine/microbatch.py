"""How llama.cpp cuts a batch into micro-batches, and padding a decode step to a fast shape.

Two facts about llama.cpp's CPU path, measured on a 2-core x86 machine (docs/benchmarks.md):

1. **Micro-batches.** With one KV stream per sequence, ``llama_decode`` runs a batch as
   micro-batches: the first takes, from the lowest sequence id up, a run of *consecutive* ids and
   the same number of tokens from each (``split_equal``); what is left goes into further ones.
   Seven decoders with a free stream among them are two micro-batches, not one.
2. **Output rows come in fours.** Most of a small model's decode step is the vocabulary-sized
   output projection, computed once per micro-batch over its output rows, and llamafile's
   tinyBLAS kernel tiles those rows four at a time: 7 rows cost 46 ms and 8 rows 31 ms;
   15 rows 55 ms, 16 rows 33 ms (Gemma 3 270M, 262k vocabulary). Up to four rows the tiles
   do not matter (one row takes another path and costs 7 ms; 2, 3 and 4 rows 17, 22 and 24 ms).

So a decode step is padded before it is decoded:

* a stream between the step's sequences that the step does not use gets *filler* tokens, as many
  as each decoder feeds, so that the decoders stay one micro-batch; a filler is removed from its
  stream right after the decode;
* tokens already in the first micro-batch (the first tokens of a prompt chunk) are marked as
  outputs, and a few fillers may be added beside the run, until the output rows are a multiple
  of four. Those rows are computed and never read.

A filler token costs a pass through the model body (about 1.4 ms here) and a micro-batch
saved is 15-25 ms, so a few fillers between decoders pay; at the edges, where they only round the
rows up, fewer are allowed. The scheduler picks draft lengths that round well
(:func:`rounded_tokens`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

ROW_QUANTUM = 4  # tinyBLAS tiles output rows in fours (also ARM's repacked Q8_0 kernels)
GAP_FILLER_TOKENS = 8  # most filler tokens spent to keep a step's sequences one micro-batch
EDGE_FILLER_TOKENS = 4  # most filler tokens spent beside the run just to round the rows up


@dataclass
class Part:
    """Tokens of one sequence in a ``llama_decode`` batch."""

    seq_id: int
    start: int  # position of the first token
    tokens: list[int]
    n_logits: int  # the last n tokens get output rows that the caller reads
    n_head: int = 0  # the first n tokens get output rows only to pad the micro-batch
    filler: bool = False  # not a sequence's tokens: removed from the stream after the decode

    def __post_init__(self) -> None:
        assert self.n_head + self.n_logits <= len(self.tokens)


def first_microbatch(parts: list[Part], n_ubatch: int, streams: bool) -> tuple[list[int], int]:
    """The sequence ids in llama.cpp's first micro-batch of ``parts`` and tokens taken from each.

    ``parts`` are in batch order. Unified cache: one micro-batch of everything (``split_simple``,
    when it fits ``n_ubatch``). Streams: ``split_equal``'s first pick."""
    if not parts:
        return [], 0
    if not streams:
        return [p.seq_id for p in parts], 0
    run = [parts[0]]
    for p in parts[1:]:
        if p.seq_id != run[-1].seq_id + 1:
            break
        run.append(p)
    per_seq = min(len(p.tokens) for p in run)
    per_seq = max(1, min(per_seq, n_ubatch // len(run)))
    return [p.seq_id for p in run], per_seq


def output_rows(parts: list[Part], n_ubatch: int, streams: bool) -> int:
    """Output rows of the first micro-batch."""
    ids, per_seq = first_microbatch(parts, n_ubatch, streams)
    rows = 0
    for p in parts:
        if p.seq_id not in ids:
            continue
        n = len(p.tokens) if not streams else per_seq
        flagged = set(range(p.n_head)) | set(range(len(p.tokens) - p.n_logits, len(p.tokens)))
        rows += sum(1 for i in flagged if i < n)
    return rows


def _rounded(rows: int) -> bool:
    return rows <= ROW_QUANTUM or rows % ROW_QUANTUM == 0


def _roundable(n: int, t: int) -> bool:
    """``n`` sequences of ``t`` rows each make a fast micro-batch, edge fillers included."""
    return any(_rounded((n + m) * t) for m in range(EDGE_FILLER_TOKENS // t + 1))


def rounded_tokens(n: int, t: int) -> int:
    """The most tokens, at most ``t``, that ``n`` decoders can each feed in a fast micro-batch
    (one token each always qualifies)."""
    while t > 1 and not _roundable(n, t):
        t -= 1
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
) -> list[Part]:
    """``parts`` (in sequence-id order) with fillers and padding rows added, as described above.

    ``next_pos(s)`` is the position after stream ``s``'s last token; ``stream_cells`` its size.
    Steps that are not decode-shaped (no decoder, or decoders feeding unequal counts) are left
    as they are; so is anything the padding cannot fit (in the streams or in the batch of
    ``n_batch`` tokens, ``n_ubatch`` unless given)."""
    decoders = [p for p in parts if p.n_logits == len(p.tokens)]
    if not decoders:
        return parts
    if not streams:
        return _flag_heads(parts, n_ubatch, streams=False)
    t = len(decoders[0].tokens)
    if any(len(p.tokens) != t for p in decoders) or any(len(p.tokens) < t for p in parts):
        return parts
    used = {p.seq_id for p in parts}
    lo, hi = parts[0].seq_id, parts[-1].seq_id
    if (hi - lo + 1) * t > n_ubatch:
        return parts
    room = (n_ubatch if n_batch is None else n_batch) - sum(len(p.tokens) for p in parts)

    def filler(s: int) -> Part | None:
        nonlocal room
        at = next_pos(s)
        if at + t > stream_cells or room < t:
            return None
        room -= t
        return Part(s, at, [0] * t, 0, n_head=t, filler=True)

    gaps = [s for s in range(lo, hi + 1) if s not in used]
    real = sum(p.n_logits for p in parts)
    # Fill only where the split is dear: projections of a few rows are cheap on their own (two
    # lone decoders at ids 0 and 7 split into two 1-row micro-batches: 14 ms; filled: 8 rows, 39 ms).
    if gaps and (real <= ROW_QUANTUM or len(gaps) * t > min(GAP_FILLER_TOKENS, real)):
        return parts
    fillers = []
    for s in gaps:
        f = filler(s)
        if f is None:
            return parts  # a full stream in the gap: the step splits anyway
        fillers.append(f)
    out = _flag_heads(sorted(parts + fillers, key=lambda p: p.seq_id), n_ubatch, streams=True)
    rows = output_rows(out, n_ubatch, streams=True)
    edge: list[Part] = []
    while not _rounded(rows) and (len(edge) + 1) * t <= EDGE_FILLER_TOKENS:
        s = hi + 1 if hi + 1 < n_seq else lo - 1
        f = filler(s) if 0 <= s < n_seq and (hi - lo + 2) * t <= n_ubatch else None
        if f is None:
            break
        edge.append(f)
        lo, hi = min(lo, s), max(hi, s)
        rows += t
    if not _rounded(rows):
        edge = []  # rounding failed: keep only the fillers that join the run
    return sorted(out + edge, key=lambda p: p.seq_id)


def _flag_heads(parts: list[Part], n_ubatch: int, streams: bool) -> list[Part]:
    """Mark prompt tokens in the first micro-batch as output rows until the rows are rounded."""
    rows = output_rows(parts, n_ubatch, streams)
    if _rounded(rows):
        return parts
    ids, per_seq = first_microbatch(parts, n_ubatch, streams)
    want = -rows % ROW_QUANTUM
    out = []
    for p in parts:
        if want and p.seq_id in ids and not p.filler and p.n_logits < len(p.tokens):
            room = len(p.tokens) - p.n_logits - p.n_head  # unflagged tokens at the chunk's head
            if streams:
                room = min(room, per_seq - p.n_head)
            extra = max(0, min(want, room))
            if extra:
                p = Part(p.seq_id, p.start, p.tokens, p.n_logits, p.n_head + extra)
                want -= extra
        out.append(p)
    return out
