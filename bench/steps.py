"""What one llama_decode costs, by shape: the measurements behind the scheduler's choices.

    python bench/steps.py            # embedded model, 2 threads

Straight through the low-level bindings (no scheduler), on contexts built like the engine's
(unified KV, full sliding-window cache) and like llama-server's (one stream per slot):

* **rows**: 8 sequences decoding 1, 2, 3 or 4 tokens each (a draft of 0-3): what a drafted
  row costs next to a plain decode row, hence the cap of 2 x batch_size rows per step;
* **mixing**: 7 decoders alone, a fresh 250-token prompt alone, and both in one batch;
  in a unified cache the mixed step costs more than the two apart, hence separate steps;
* **idle entries**: the same 8-sequence prefill and decode with 8 finished sequences' cells
  left in the cache, hence moving idle entries to host RAM.
"""

from __future__ import annotations

import argparse
import random
import time

import llama_cpp as L

from clawlan.engine.llama import Model
from clawlan.model.store import resolve


class Ctx:
    def __init__(self, model: Model, unified: bool, n_seq: int, threads: int, n_ctx: int = 16384) -> None:
        p = L.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch, p.n_seq_max = n_ctx, 512, 512, n_seq
        p.n_threads = p.n_threads_batch = threads
        p.kv_unified = unified
        p.swa_full = unified  # as each server runs it: clawlan keeps the full window history
        p.no_perf = True
        self.ptr = L.llama_init_from_model(model.ptr, p)
        self.batch = L.llama_batch_init(512, 0, 1)

    def decode(self, items: list[tuple[int, int, int, bool]]) -> float:
        """Decode ``(seq, pos, token, logits)`` items in one batch; seconds taken."""
        b = self.batch
        b.n_tokens = len(items)
        for j, (s, pos, tok, lg) in enumerate(items):
            b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = tok, pos, 1, lg
            b.seq_id[j][0] = s
        t = time.perf_counter()
        assert L.llama_decode(self.ptr, b) == 0
        return time.perf_counter() - t

    def prompt(self, seq: int, n: int, rng: random.Random, start: int = 0) -> float:
        total = 0.0
        toks = [rng.randrange(1000, 100000) for _ in range(n)]
        for i in range(0, n, 512):
            part = toks[i : i + 512]
            total += self.decode([(seq, start + i + j, t, i + j == n - 1) for j, t in enumerate(part)])
        return total

    def close(self) -> None:
        L.llama_batch_free(self.batch)
        L.llama_free(self.ptr)


def rows(model: Model, threads: int, reps: int) -> None:
    ctx = Ctx(model, True, 8, threads)
    rng = random.Random(0)
    for s in range(8):
        ctx.prompt(s, 300, rng)
    pos = 300
    print("8 sequences decoding k tokens each (k - 1 drafted), ms per step:")
    for k in (1, 2, 3, 4):
        t = 0.0
        for _ in range(reps):
            t += ctx.decode([(s, pos + j, 1000 + j, True) for s in range(8) for j in range(k)])
            pos += k
        print(f"  k={k}: {t / reps * 1000:6.1f} ms for {8 * k} rows")
    ctx.close()


def mixing(model: Model, threads: int, reps: int) -> None:
    print("7 decoders and a fresh 250-token prompt, ms (mean of reps):")
    rng = random.Random(1)
    for name, unified, n_seq in (("unified (clawlan)", True, 40), ("one stream per slot (llama-server)", False, 8)):
        ctx = Ctx(model, unified, n_seq, threads)
        mem = L.llama_get_memory(ctx.ptr)
        for s in range(7):
            ctx.prompt(s, 300, rng)
        pos, dec, mixed, alone = 300, 0.0, 0.0, 0.0
        for _ in range(reps):
            dec += ctx.decode([(s, pos, 1000, True) for s in range(7)])
            pos += 1
            L.llama_memory_seq_rm(mem, 7, -1, -1)
            toks = [rng.randrange(1000, 100000) for _ in range(250)]
            mixed += ctx.decode([(s, pos, 1000, True) for s in range(7)] + [(7, i, t, i == 249) for i, t in enumerate(toks)])
            pos += 1
            L.llama_memory_seq_rm(mem, 7, -1, -1)
            alone += ctx.prompt(7, 250, rng)
        print(f"  {name:36s} decode {dec / reps * 1000:6.1f}  prompt {alone / reps * 1000:6.1f}  both in one batch {mixed / reps * 1000:6.1f}")
        ctx.close()


def idle(model: Model, threads: int) -> None:
    print("8 fresh 250-token prompts, then 64 decode steps, with and without 8 idle entries in the cache:")
    for n_idle in (0, 8):
        ctx = Ctx(model, True, 40, threads)
        rng = random.Random(2)
        for s in range(n_idle):
            ctx.prompt(8 + s, 314, rng)
        pre = sum(ctx.prompt(s, 250, rng) for s in range(8))
        dec = sum(ctx.decode([(s, 250 + i, 1000 + i, True) for s in range(8)]) for i in range(64))
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
