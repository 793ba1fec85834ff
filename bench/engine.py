"""Benchmark of clawlan's engine (issue 2), side by side with llama.cpp's own llama-bench.

    .venv/bin/python bench/engine.py [--threads 2] [--llama-bench PATH] [--quick]

Measures, on the embedded Gemma 3 270M (or --model):

* single-sequence decode tok/s (128 tokens, greedy) and prefill tok/s (512-token prompt);
* aggregate decode tok/s at 1, 2, 4, 8 and 16 concurrent sequences (fresh prompts each round,
  so nothing comes from the prefix cache);
* max_wait_ms 0 against 50 under bursty arrivals: time to first token and throughput;
* a follow-up turn on a ~1,500-token conversation: time to first token cold against cached;
* ``llama-bench -m MODEL -t THREADS -p 512 -n 128`` in the same run.

Writes JSON to bench/results/ and prints a markdown table. A benchmark, not a test.
Each figure is the best of --reps runs (TTFT: the lowest), because the machines
this runs on are shared and a neighbour's burst only ever makes a run slower;
the load average before and after is recorded with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from clawlan.engine.engine import EngineConfig, build_engine
from clawlan.engine.llama import Model
from clawlan.engine.request import Request, SamplingParams
from clawlan.model.store import embedded_model_path

ROOT = Path(__file__).resolve().parents[1]
WORDS = [
    "office",
    "printer",
    "meeting",
    "budget",
    "invoice",
    "report",
    "client",
    "server",
    "network",
    "coffee",
    "window",
    "policy",
    "schedule",
    "holiday",
    "contract",
    "design",
    "review",
    "project",
    "deadline",
    "customer",
    "support",
    "email",
    "calendar",
    "quarter",
    "sales",
    "market",
    "product",
    "team",
    "manager",
    "desk",
    "phone",
    "laptop",
    "password",
    "backup",
    "archive",
    "river",
    "mountain",
    "garden",
    "kitchen",
    "summer",
    "winter",
    "library",
    "museum",
    "station",
    "harbor",
    "forest",
    "village",
]


def fresh_text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def fresh_prompt(model: Model, rng: random.Random, n_tokens: int) -> list[int]:
    toks = model.tokenize(fresh_text(rng, n_tokens))
    while len(toks) < n_tokens:
        toks += model.tokenize(" " + fresh_text(rng, n_tokens), add_special=False)
    return toks[:n_tokens]


class Bench:
    def __init__(self, model: Model, threads: int, **cfg) -> None:
        self.model = model
        cfg = {"batch_size": 16, "kv_tokens": 16384, "max_seq_tokens": 4096, "threads": threads, **cfg}
        self.engine = build_engine(model, EngineConfig(**cfg))
        self.engine.start()

    def close(self) -> None:
        self.engine.stop()
        self.engine.context.close()  # type: ignore[attr-defined]

    def forget(self) -> None:
        """Drop every idle prefix-cache entry (the engine is idle between measurements)."""
        kv = self.engine.scheduler.kv
        kv.evict(kv.n_cells)

    async def one(self, tokens: list[int], max_tokens: int, delay: float = 0.0) -> dict:
        if delay:
            await asyncio.sleep(delay)
        req = Request(tokens, SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True))
        t0 = time.perf_counter()
        stamps: list[float] = []
        tokens: list[int] = []
        fin = None
        async for ev in self.engine.submit(req):
            now = time.perf_counter()
            stamps.extend([now] * len(ev.token_ids))
            tokens.extend(ev.token_ids)
            fin = ev
        assert fin is not None and fin.error is None, fin
        return {"submit": t0, "stamps": stamps, "tokens": tokens, "cached": fin.cached_tokens}

    def run(self, *coros):
        async def all_():
            return await asyncio.gather(*coros)

        return asyncio.run(all_())


def decode_rate(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def single_decode(b: Bench, rng: random.Random, n: int, reps: int) -> dict:
    rates = []
    for _ in range(reps):
        (r,) = b.run(b.one(fresh_prompt(b.model, rng, 16), n))
        rates.append(decode_rate(r["stamps"]))
        b.forget()
    return {"tok_s": max(rates), "runs": rates, "tokens": n}


def prefill(b: Bench, rng: random.Random, n: int, reps: int) -> dict:
    rates = []
    for _ in range(reps):
        (r,) = b.run(b.one(fresh_prompt(b.model, rng, n), 1))
        assert r["cached"] <= 1
        rates.append(n / (r["stamps"][0] - r["submit"]))
        b.forget()
    return {"tok_s": max(rates), "runs": rates, "prompt_tokens": n}


def aggregate(b: Bench, rng: random.Random, n_seqs: int, n: int) -> dict:
    results = b.run(*(b.one(fresh_prompt(b.model, rng, 32), n) for _ in range(n_seqs)))
    b.forget()
    # Steady state: from the moment every sequence has its first token to the first one finishing.
    start = max(r["stamps"][0] for r in results)
    end = min(r["stamps"][-1] for r in results)
    in_window = sum(1 for r in results for t in r["stamps"] if start < t <= end)
    total = sum(len(r["stamps"]) for r in results)
    wall = max(r["stamps"][-1] for r in results) - min(r["submit"] for r in results)
    return {
        "sequences": n_seqs,
        "decode_tok_s": in_window / (end - start) if end > start else float("nan"),
        "end_to_end_tok_s": total / wall,
        "tokens": total,
    }


def bursty(model: Model, threads: int, rng: random.Random, bursts: int) -> list[dict]:
    """8 requests arrive within 40 ms (a team sending after a meeting), on max_wait_ms 0 and 50.

    The two engines take turns burst by burst, so background load hits both alike.
    """
    engines = {w: Bench(model, threads, batch_size=8, max_wait_ms=w) for w in (0, 50)}
    ttfts: dict[int, list[float]] = {w: [] for w in engines}
    tokens = dict.fromkeys(engines, 0)
    busy = dict.fromkeys(engines, 0.0)
    try:
        for _ in range(bursts):
            delays = sorted(rng.uniform(0, 0.04) for _ in range(8))
            prompts = [fresh_prompt(model, rng, 96) for _ in delays]
            for w, b in engines.items():
                t0 = time.perf_counter()
                results = b.run(*(b.one(p, 32, d) for p, d in zip(prompts, delays, strict=True)))
                busy[w] += time.perf_counter() - t0
                for r in results:
                    ttfts[w].append(r["stamps"][0] - r["submit"])
                    tokens[w] += len(r["stamps"])
                b.forget()
    finally:
        for b in engines.values():
            b.close()
    out = []
    for w, xs in ttfts.items():
        xs.sort()
        out.append(
            {
                "max_wait_ms": w,
                "ttft_mean_ms": 1000 * statistics.mean(xs),
                "ttft_p50_ms": 1000 * xs[len(xs) // 2],
                "ttft_p95_ms": 1000 * xs[min(len(xs) - 1, int(0.95 * len(xs)))],
                "throughput_tok_s": tokens[w] / busy[w],
                "requests": len(xs),
            }
        )
    return out


def follow_up(b: Bench, rng: random.Random, reps: int) -> dict:
    cold, cached, sizes = [], [], []
    for i in range(reps):
        system = f"Conversation {i}. You are the assistant of a small office. " + fresh_text(rng, 200)
        text = system
        while len(b.model.tokenize(text)) < 1500:
            text += f"\nUser: {fresh_text(rng, 40)}\nAssistant: {fresh_text(rng, 60)}"
        turn1 = b.model.tokenize(text)[:1480] + b.model.tokenize(
            "\nUser: what next?\nAssistant:", add_special=False
        )
        (r1,) = b.run(b.one(turn1, 32))
        # The follow-up: the whole conversation so far, the answer, and a new question.
        turn2 = (
            turn1 + r1["tokens"] + b.model.tokenize("\nUser: and after that?\nAssistant:", add_special=False)
        )
        (warm,) = b.run(b.one(turn2, 8))
        cached.append(warm["stamps"][0] - warm["submit"])
        b.forget()
        (c,) = b.run(b.one(turn2, 8))
        assert c["cached"] <= 1
        cold.append(c["stamps"][0] - c["submit"])
        b.forget()
        sizes.append((len(turn2), warm["cached"]))
    return {
        "prompt_tokens": [s[0] for s in sizes],
        "cached_tokens": [s[1] for s in sizes],
        "cold_ttft_ms": 1000 * min(cold),
        "cached_ttft_ms": 1000 * min(cached),
        "ratio": min(cached) / min(cold),
        "cold_runs_ms": [1000 * x for x in cold],
        "cached_runs_ms": [1000 * x for x in cached],
    }


def find_llama_bench(explicit: str | None) -> Path | None:
    """The peers build (bash ../shared/peers/build-llama-server.sh prints its folder), or PATH."""
    if explicit:
        return Path(explicit)
    default = Path("/tmp/peers/llama-cpp-python-0.3.36/vendor/llama.cpp/build/bin/llama-bench")
    if default.exists():
        return default
    found = shutil.which("llama-bench")
    return Path(found) if found else None


def llama_bench(binary: Path | None, model: Path, threads: int) -> dict | None:
    if not binary or not binary.exists():
        return None
    env = {**os.environ, "LD_LIBRARY_PATH": str(binary.parent)}
    cmd = [str(binary), "-m", str(model), "-t", str(threads), "-p", "512", "-n", "128", "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    rows = json.loads(out.stdout)
    res = {"command": " ".join(cmd[0:1] + ["-m", "MODEL"] + cmd[3:-2])}
    for row in rows:
        key = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        res[key] = row["avg_ts"]
        res[key + "_stddev"] = row["stddev_ts"]
        res["build"] = row.get("build_commit")
    return res


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    return {
        "cpu": fields.get("Model name", "?").strip(),
        "cpus": os.cpu_count(),
        "flags_avx512": "avx512f" in fields.get("Flags", ""),
        "python": platform.python_version(),
        "load_before": os.getloadavg(),
    }


def table(r: dict) -> str:
    rows = ["| measure | clawlan | llama.cpp | ratio / target |", "|---|---|---|---|"]
    lb = r.get("llama_bench") or {}
    sd = r["single_decode"]["tok_s"]
    tg = lb.get("tg128")
    rows.append(
        f"| single-sequence decode (tok/s) | {sd:.1f} | tg128 {tg:.1f} | {sd / tg:.2f}× (≥ 0.95) |"
        if tg
        else f"| single-sequence decode (tok/s) | {sd:.1f} | – | – |"
    )
    pp = lb.get("pp512")
    pf = r["prefill"]["tok_s"]
    rows.append(
        f"| prefill, 512-token prompt (tok/s) | {pf:.0f} | pp512 {pp:.0f} | {pf / pp:.2f}× |"
        if pp
        else f"| prefill, 512-token prompt (tok/s) | {pf:.0f} | – | – |"
    )
    one = r["aggregate"][0]["decode_tok_s"]
    for a in r["aggregate"]:
        target = " (≥ 1.8)" if a["sequences"] == 8 else ""
        rows.append(
            f"| aggregate decode, {a['sequences']} seqs (tok/s) | {a['decode_tok_s']:.1f} "
            f"(end to end {a['end_to_end_tok_s']:.1f}) | | {a['decode_tok_s'] / one:.2f}× single{target} |"
        )
    for w in r["bursty"]:
        rows.append(
            f"| bursty 8 arrivals in 40 ms, max_wait_ms={w['max_wait_ms']} | TTFT mean {w['ttft_mean_ms']:.0f} ms, "
            f"p95 {w['ttft_p95_ms']:.0f} ms; {w['throughput_tok_s']:.1f} tok/s | | |"
        )
    f = r["follow_up"]
    rows.append(
        f"| follow-up turn, {f['prompt_tokens'][0]}-token conversation | TTFT cold {f['cold_ttft_ms']:.0f} ms, "
        f"cached {f['cached_ttft_ms']:.0f} ms ({f['cached_tokens'][0]} cached) | | {f['ratio']:.3f}× (≤ 0.1) |"
    )
    return "\n".join(rows)


def host_profile(model: Model, threads: int, n_seqs: int = 8, max_tokens: int = 64, **cfg) -> dict:
    """Host-side time per engine step outside ``llama_decode`` (issue 12: on a GPU the Python
    work per step is the budget). The engine's steps run on this thread: once plain, for the
    total, once under cProfile, for where it goes (cProfile inflates Python-heavy parts)."""
    import cProfile
    import pstats

    import llama_cpp

    from clawlan.engine import engine as engine_mod
    from clawlan.engine import runner as runner_mod
    from clawlan.engine import scheduler as scheduler_mod

    real_decode = llama_cpp.llama_decode
    in_decode = [0.0]

    def timed_decode(ctx, batch):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return real_decode(ctx, batch)
        finally:
            in_decode[0] += time.perf_counter() - t

    def run(profiler: cProfile.Profile | None) -> dict:
        eng = build_engine(
            model,
            EngineConfig(
                batch_size=n_seqs, kv_tokens=n_seqs * 256, max_seq_tokens=256, threads=threads, max_wait_ms=0, **cfg
            ),
        )
        rng = random.Random(3)
        for _ in range(n_seqs):
            req = Request(fresh_prompt(model, rng, 64), SamplingParams(max_tokens=max_tokens, temperature=0))
            eng.add(req, lambda ev: None)
        eng._drain()
        while any(not s.decoding for s in eng.scheduler.running) or eng.scheduler.waiting:
            eng.step()  # prompts first: only decode steps are measured
        in_decode[0], steps, t0 = 0.0, 0, time.perf_counter()
        if profiler:
            profiler.enable()
        while eng.scheduler.has_work():
            eng.step()
            steps += 1
        if profiler:
            profiler.disable()
        wall = time.perf_counter() - t0
        eng.context.close()
        return {"steps": steps, "wall_s": wall, "decode_s": in_decode[0],
                "host_ms_per_step": 1000 * (wall - in_decode[0]) / max(1, steps)}  # fmt: skip

    llama_cpp.llama_decode = timed_decode
    try:
        plain = run(None)
        prof = cProfile.Profile()
        profiled = run(prof)
    finally:
        llama_cpp.llama_decode = real_decode
    st = pstats.Stats(prof)
    parts = {
        "schedule": (scheduler_mod.__file__, "schedule"),
        "shape + batch + llama_decode": (runner_mod.__file__, "decode"),
        "prepare the next step (overlap; its schedule counted above too)": (scheduler_mod.__file__, "prepare_next"),
        "stage the next batch (overlap)": (runner_mod.__file__, "stage"),
        "sample (argmax / chains)": (runner_mod.__file__, "sample"),
        "commit": (scheduler_mod.__file__, "commit"),
        "postprocess (append, detokenize, events)": (engine_mod.__file__, "_postprocess"),
        "flush events": (engine_mod.__file__, "flush"),
    }
    per_step = {}
    for name, (file, func) in parts.items():
        cum = sum(v[3] for k, v in st.stats.items() if k[0] == file and k[2] == func)  # type: ignore[attr-defined]
        if name.startswith("shape"):
            cum -= profiled["decode_s"]
            name = "shape + batch (llama_decode excluded)"
        per_step[name] = 1000 * cum / max(1, profiled["steps"])
    return {"sequences": n_seqs, **cfg, "plain": plain, "profiled": profiled, "profiled_ms_per_step": per_step}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="GGUF file (default: the embedded model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llama-bench", help="path of llama-bench (default: the peers build)")
    ap.add_argument("--no-llama-bench", action="store_true")
    ap.add_argument("--quick", action="store_true", help="one repetition, shorter runs (a smoke run)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each measurement (the best counts)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--host-profile", action="store_true", help="only the host time per decode step outside llama_decode")
    ap.add_argument("--sequences", type=int, default=8, help="--host-profile: concurrent sequences")
    ap.add_argument("--draft-tokens", type=int, default=8, help="--host-profile: EngineConfig.draft_tokens")
    ap.add_argument("--device-greedy", action="store_true", help="--host-profile: greedy argmax in llama.cpp's graph")
    ap.add_argument("--overlap", action="store_true", help="--host-profile: prepare step N+1 while N runs (drafts off)")
    ap.add_argument("--gpu-layers", type=int, default=0, help="--host-profile: layers offloaded (-1: all; a GPU build)")
    args = ap.parse_args(argv)

    path = Path(args.model) if args.model else embedded_model_path()
    if args.host_profile:
        cfg = {"draft_tokens": 0 if args.overlap else args.draft_tokens, "overlap": args.overlap}
        cfg |= {"device_greedy": True} if args.device_greedy else {}
        model = Model(path, gpu_layers=args.gpu_layers)
        print(json.dumps(host_profile(model, args.threads, args.sequences, **cfg), indent=2))
        return 0
    reps = 1 if args.quick else args.reps
    rng = random.Random(2)
    result: dict = {"model": path.name, "threads": args.threads, "machine": machine(), "started": time.time()}

    lb_bin = None if args.no_llama_bench else find_llama_bench(args.llama_bench)
    print(f"llama-bench: {lb_bin or 'not available'}", file=sys.stderr)
    result["llama_bench"] = llama_bench(lb_bin, path, args.threads)

    model = Model(path)
    b = Bench(model, args.threads, max_wait_ms=0)
    try:
        b.run(b.one(fresh_prompt(model, rng, 64), 16))  # warm up
        b.forget()
        result["single_decode"] = single_decode(b, rng, 128, reps)
        print("single decode", result["single_decode"]["tok_s"], file=sys.stderr)
        result["prefill"] = prefill(b, rng, 512, reps)
        print("prefill", result["prefill"]["tok_s"], file=sys.stderr)
        result["aggregate"] = [
            max(
                (aggregate(b, rng, n, 64 if args.quick else 128) for _ in range(reps)),
                key=lambda a: a["decode_tok_s"],
            )
            for n in (1, 2, 4, 8, 16)
        ]
        print("aggregate", [round(a["decode_tok_s"], 1) for a in result["aggregate"]], file=sys.stderr)
        result["follow_up"] = follow_up(b, rng, reps)
        print("follow-up", result["follow_up"]["ratio"], file=sys.stderr)
    finally:
        b.close()
    result["bursty"] = bursty(model, args.threads, rng, 2 if args.quick else 6)
    # llama-bench again at the end; like ours, its best figure counts.
    again = llama_bench(lb_bin, path, args.threads)
    if again and result["llama_bench"]:
        first = result["llama_bench"]
        result["llama_bench_runs"] = [dict(first), again]
        for key in ("pp512", "tg128"):
            if again.get(key, 0) > first.get(key, 0):
                first[key], first[key + "_stddev"] = again[key], again[key + "_stddev"]
    result["machine"]["load_after"] = os.getloadavg()
    result["finished"] = time.time()

    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / time.strftime("engine-%Y%m%d-%H%M%S.json", time.gmtime())
    out.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"\nresults: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
