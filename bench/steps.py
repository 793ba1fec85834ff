"""What one llama_decode costs, by shape: the measurements behind the scheduler's choices.

    python bench/steps.py            # embedded model, 2 threads

Through the engine's own :class:`~clawlan.engine.llama.Context` (no scheduler), in both of the
engine's layouts: unified KV, and one stream per sequence (llama-server's; the engine's choice
when every context fits its own stream):

* **rows**: 8 sequences decoding 1, 2, 3 or 4 tokens each (a draft of 0-3): what a drafted
  row costs next to a plain decode row, hence the cap of 2 x batch_size rows per step;
* **mixing**: 7 decoders alone, a fresh 250-token prompt alone, and both in one batch;
  in a unified cache the mixed step costs more than the two apart, hence separate steps there,
  and the prompt alone is dearer than with one stream per sequence;
* **idle entries**: the same 8-sequence prefill and decode with 8 finished sequences' cells
  left in the cache, hence moving idle entries to host RAM.
"""

from __future__ import annotations

import argparse
import random
import time

from clawlan.engine.llama import Context, Model
from clawlan.model.store import resolve

Part = tuple[int, int, list[int], int]  # Context.decode's (seq_id, start, tokens, n_logits)


def timed(ctx: Context, parts: list[Part]) -> float:
    """Decode ``parts`` in one batch; seconds taken."""
    t = time.perf_counter()
    status, _ = ctx.decode(parts)
    assert status == 0, status
    return time.perf_counter() - t


def prompt(ctx: Context, seq: int, n: int, rng: random.Random) -> float:
    """A fresh ``n``-token prompt for ``seq`` in 512-token chunks; seconds taken."""
    toks = [rng.randrange(1000, 100000) for _ in range(n)]
    return sum(timed(ctx, [(seq, i, toks[i : i + 512], int(i + 512 >= n))]) for i in range(0, n, 512))


def rows(model: Model, threads: int, reps: int) -> None:
    ctx = Context(model, 16384, 512, 8, threads)
    rng = random.Random(0)
    for s in range(8):
        prompt(ctx, s, 300, rng)
    pos = 300
    print("8 sequences decoding k tokens each (k - 1 drafted), ms per step:")
    for k in (1, 2, 3, 4):
        t = 0.0
        for _ in range(reps):
            t += timed(ctx, [(s, pos, [1000 + j for j in range(k)], k) for s in range(8)])
            pos += k
        print(f"  k={k}: {t / reps * 1000:6.1f} ms for {8 * k} rows")
    ctx.close()


def mixing(model: Model, threads: int, reps: int) -> None:
    print("7 decoders and a fresh 250-token prompt, ms (mean of reps):")
    rng = random.Random(1)
    for name, unified, n_seq in (("unified (clawlan)", True, 40), ("one stream per sequence", False, 8)):
        ctx = Context(model, 16384, 512, n_seq, threads, unified=unified)
        for s in range(7):
            prompt(ctx, s, 300, rng)
        pos, dec, mixed, alone = 300, 0.0, 0.0, 0.0
        for _ in range(reps):
            dec += timed(ctx, [(s, pos, [1000], 1) for s in range(7)])
            pos += 1
            ctx.seq_rm(7, 0, -1)
            toks = [rng.randrange(1000, 100000) for _ in range(250)]
            mixed += timed(ctx, [(s, pos, [1000], 1) for s in range(7)] + [(7, 0, toks, 1)])
            pos += 1
            ctx.seq_rm(7, 0, -1)
            alone += prompt(ctx, 7, 250, rng)
        print(f"  {name:36s} decode {dec / reps * 1000:6.1f}  prompt {alone / reps * 1000:6.1f}  both in one batch {mixed / reps * 1000:6.1f}")
        ctx.close()


def idle(model: Model, threads: int) -> None:
    print("8 fresh 250-token prompts, then 64 decode steps, with and without 8 idle entries in the cache:")
    for n_idle in (0, 8):
        ctx = Context(model, 16384, 512, 40, threads)
        rng = random.Random(2)
        for s in range(n_idle):
            prompt(ctx, 8 + s, 314, rng)
        pre = sum(prompt(ctx, s, 250, rng) for s in range(8))
        dec = sum(timed(ctx, [(s, 250 + i, [1000 + i], 1) for s in range(8)]) for i in range(64))
        print(f"  {n_idle} idle: prompts {2000 / pre:6.0f} tok/s, decode {512 / dec:6.1f} tok/s")
        ctx.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="GGUF model (default: the embedded Gemma 3 270M)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=6)
    args = ap.parse_args()
    model = Model(resolve(args.model).path)
    rows(model, args.threads, args.reps)
    mixing(model, args.threads, args.reps)
    idle(model, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
