"""Serve benchmark: clawlan's server, llama.cpp's llama-server and llama-cpp-python's own server,
same model, same load, one run.

    python bench/serve.py                      # all three, the verified-facts workload
    python bench/serve.py --only clawlan       # just ours
    python bench/serve.py --no-stock           # without llama-cpp-python's server (the slow one)
    python bench/serve.py --llama-server PATH  # a llama-server binary elsewhere
    python bench/serve.py --repeat 5           # five alternating runs, fresh prompts each, one summary

The main peer is llama.cpp's own ``llama-server`` built from the llama.cpp vendored in the pinned
llama-cpp-python (``/work/shared/peers/build-llama-server.sh``; ~8 minutes on 2 cores), so both
servers run the same kernels and the difference is the serving layer. Both get the same
settings: 8 parallel sequences, a 16,384-cell KV cache, 2 threads. The third is the binding's
stock server (``python -m llama_cpp.server``, its extras: ``pip install -e '.[bench]'``) with
the same model, threads and total context; it serves one request at a time. It has no
``ignore_eos``, so its requests carry a logit bias of -100 on end-of-generation tokens instead.

All measuring over HTTP is :mod:`clawlan.ops.bench` (the ``clawlan bench`` command); this
script starts and stops the servers, then runs the single-stream workload once more through
clawlan's engine alone (no HTTP) for the in-process comparison. Results go to bench/results/
as JSON and PNG.

On a shared 2-core host one run moves by about +-5% (other tenants, the load generator sharing the
cores), so ``--repeat`` runs the whole sweep several times with the servers started once, each
repeat with fresh prompts and the servers alternating round by round, and summarises the
per-repeat ratios (median, min, max) instead of trusting one pair.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from clawlan.ops.bench import (
    Bench,
    ServerResult,
    Workload,
    parse_concurrency,
    plot,
    ratio_table,
    ratios,
    table,
    write_json,
)

ROOT = Path(__file__).resolve().parent.parent
PEER_GLOB = "/tmp/peers/llama-cpp-python-*/vendor/llama.cpp/build/bin/llama-server"


def wait_healthy(url: str, proc: subprocess.Popen, deadline_s: float, log: Path, path: str = "/health") -> None:
    """Poll ``path`` until 200, the process dies, or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: server exited with {proc.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}{path}", timeout=2, trust_env=False).status_code == 200:
                return
        time.sleep(0.25)  # polling interval of a bounded wait, not synchronisation by sleeping
    raise SystemExit(f"{url}: not healthy after {deadline_s:.0f} s; see {log}")


@dataclass
class Plan:
    """One server to start: its command, base URL, environment and how to tell it is ready."""

    name: str
    cmd: list[str]
    url: str
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/health"  # llama-cpp-python's server has no /health
    extra_body: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def server(plan: Plan, out: Path) -> Iterator[str]:
    log = out / f"{plan.name}.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(plan.cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **plan.env})
        try:
            wait_healthy(plan.url, proc, 300, log, plan.ready_path)
            yield plan.url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def in_process(model: Path, w: Workload, args: argparse.Namespace, prompts: list[str]) -> dict[str, float]:
    """Single-stream TTFT and TPOT of the same workload through the engine alone (no HTTP), for
    the "HTTP decode >= 0.95x in process" check: every repeat's single-stream prompts, same
    output length and settings. The same prompts matter: drafts make the speed depend on the text
    (one stream's TPOT p50 ranged 5.7-9.2 ms over five repeats' prompts)."""
    import asyncio

    from clawlan.config.settings import ServerSection, Settings
    from clawlan.engine.engine import build_engine
    from clawlan.engine.llama import Model
    from clawlan.engine.request import Request, SamplingParams
    from clawlan.model.metadata import read_metadata
    from clawlan.server.backend import engine_config, plan_context

    # The settings the served clawlan gets from its flags (main's cmd), through the server's own
    # mapping, so every other engine setting is the server's default too.
    settings = Settings(server=ServerSection(batch_size=args.parallel, kv_tokens=args.kv_tokens,
                                             max_context_tokens=args.kv_tokens // args.parallel, threads=args.threads))  # fmt: skip
    info = read_metadata(model)
    m = Model(model)
    eng = build_engine(m, engine_config(settings, info, plan_context(info, settings)))
    eng.start()

    async def one(prompt: str) -> tuple[float, float]:
        params = SamplingParams(max_tokens=w.output_tokens, temperature=0.0, ignore_eos=True)
        t0 = time.perf_counter()
        first, tokens = 0.0, 0
        async for ev in eng.submit(Request(m.tokenize(prompt), params)):
            if ev.token_ids and not first:
                first = time.perf_counter()
            tokens += len(ev.token_ids)
        return (first - t0) * 1000, (time.perf_counter() - first) * 1000 / (tokens - 1)

    try:
        runs = [asyncio.run(one(p)) for p in prompts]
    finally:
        eng.stop()
        m.close()
    return {"ttft_p50_ms": statistics.median(r[0] for r in runs), "tpot_p50_ms": statistics.median(r[1] for r in runs)}


def stock_plan(model: Path, args: argparse.Namespace) -> Plan | None:
    """llama-cpp-python's own server, or None when its extras (fastapi, sse-starlette, ...) are missing."""
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError:
        return None
    from clawlan.engine.llama import Model

    m = Model(model)
    try:
        eog = [t for t in range(m.n_vocab) if m.is_eog(t)]
    finally:
        m.close()
    port = args.port + 2
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(args.kv_tokens), "--n_threads", str(args.threads),
           "--n_threads_batch", str(args.threads), "--verbose", "False",
           # By default a new request interrupts the one streaming; queued is how it serves several users.
           "--interrupt_requests", "False"]  # fmt: skip
    bias = {"logit_bias": {str(t): -100 for t in eog}}
    return Plan("llama-cpp-python", cmd, f"http://127.0.0.1:{port}", ready_path="/v1/models", extra_body=bias)


def repeat_summary(runs: list[list[ServerResult]], k: int = 1) -> str:
    """Per concurrency, the first server's throughput and TTFT over server ``k``'s in every repeat."""
    a, b = runs[0][0].name, runs[0][k].name
    lines = [f"{a} / {b} over {len(runs)} repeats (median [min - max]):"]
    by_conc: dict[int, list[dict[str, Any]]] = {}
    for res in runs:
        for r in ratios(res[0], res[k]):
            if "concurrency" in r:
                by_conc.setdefault(r["concurrency"], []).append(r)
    for conc, rs in sorted(by_conc.items()):
        parts = []
        for key, label in (("output_throughput", "out tok/s"), ("ttft_p50", "TTFT p50")):
            v = sorted(x[key] for x in rs)
            parts.append(f"{label} {statistics.median(v):.2f}x [{v[0]:.2f} - {v[-1]:.2f}]")
        each = " ".join(f"{x['output_throughput']:.2f}" for x in rs)
        lines.append(f"  conc {conc:>3}: {'; '.join(parts)}; throughput each: {each}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="GGUF model (default: the embedded Gemma 3 270M)")
    ap.add_argument("--llama-server", help=f"llama-server binary (default: {PEER_GLOB})")
    ap.add_argument("--only", choices=["clawlan", "peer"], help="clawlan alone, or the peers alone")
    ap.add_argument("--no-stock", action="store_true", help="leave out llama-cpp-python's own server")
    ap.add_argument("--concurrency", default="1,8,16")
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--input-tokens", type=int, default=250)
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=8, help="sequences decoded together by each server")
    ap.add_argument("--kv-tokens", type=int, default=16384, help="KV cache cells of each server")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--switch-history", type=int, default=1500)
    ap.add_argument("--switch-sessions", type=int, default=3)
    ap.add_argument("--port", type=int, default=8180, help="clawlan's port; the peer gets the next one")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--no-in-process", action="store_true", help="skip the single-stream run through the engine alone")
    ap.add_argument("--repeat", type=int, default=1, help="run the sweep this many times (fresh prompts each)")
    args = ap.parse_args()
    # A SIGTERM (a CI timeout, kill PID) must still stop the servers this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from clawlan.model.store import resolve

    model = resolve(args.model).path
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_seq = args.kv_tokens // args.parallel
    plans: list[Plan] = []
    if args.only != "peer":
        cmd = [sys.executable, "-m", "clawlan", "serve", "--model", str(model), "--port", str(args.port),
               "--batch-size", str(args.parallel), "--kv-tokens", str(args.kv_tokens), "--ctx", str(per_seq),
               "--threads", str(args.threads), "--no-advertise"]  # fmt: skip
        plans.append(Plan("clawlan", cmd, f"http://127.0.0.1:{args.port}"))
    if args.only != "clawlan":
        exe = args.llama_server or next(iter(sorted(glob.glob(PEER_GLOB))), None)
        if not exe:
            print(
                "llama-server not found: build it with /work/shared/peers/build-llama-server.sh, or --only clawlan"
            )
            return 2
        port = args.port + 1
        cmd = [exe, "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-np", str(args.parallel),
               "-c", str(args.kv_tokens), "-t", str(args.threads)]  # fmt: skip
        plans.append(
            Plan("llama-server", cmd, f"http://127.0.0.1:{port}", {"LD_LIBRARY_PATH": str(Path(exe).parent)})
        )
        if not args.no_stock:
            stock = stock_plan(model, args)
            if stock is None:
                print(
                    "llama-cpp-python's server needs its extras: .venv/bin/pip install -e '.[bench]' "
                    "(or --no-stock to leave it out)"
                )
                return 2
            plans.append(stock)

    w = Workload(
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        requests_per_client=args.requests_per_client,
        concurrency=parse_concurrency(args.concurrency),
        switch_history_tokens=args.switch_history,
        switch_other_sessions=args.switch_sessions,
    )
    from tqdm import tqdm

    runs: list[list[ServerResult]] = []
    benches: list[Bench] = []
    with contextlib.ExitStack() as stack:
        urls = [(p.name, stack.enter_context(server(p, out))) for p in plans]
        extra = {p.url: p.extra_body for p in plans if p.extra_body}
        for i in range(max(1, args.repeat)):
            bar = tqdm(total=0, unit="req", desc=f"bench {i + 1}/{args.repeat}", leave=False)
            bench = Bench(replace(w, seed=w.seed + i), on_request=lambda b=bar: b.update(1), extra_body=extra)
            bar.total = bench.total_requests(len(urls))
            runs.append(bench.run(urls))
            benches.append(bench)
            bar.close()
    results = runs[0]
    inproc = None
    if args.only != "peer" and not args.no_in_process and 1 in w.concurrency:
        inproc = in_process(model, w, args, [p for b in benches for p in dict(b.prompts)[1]])  # as sent
    stamp = time.strftime("%Y%m%d-%H%M%S")
    j = write_json(results, w, out / f"serve-{stamp}.json")
    import json

    data = json.loads(j.read_text())
    if inproc is not None:
        data["in_process_single_stream"] = inproc
    if len(runs) > 1:
        data["repeats"] = [[r.to_dict() for r in res] for res in runs]
        data["repeat_ratios"] = {
            f"{results[0].name}/{results[k].name}": [ratios(res[0], res[k]) for res in runs]
            for k in range(1, len(results))
        }
    j.write_text(json.dumps(data, indent=2, default=str))
    png = plot(results, out / f"serve-{stamp}.png")
    for i, res in enumerate(runs):
        if len(runs) > 1:
            print(f"\n== repeat {i + 1} of {len(runs)}")
        print(table(res))
        for peer in res[1:]:
            print()
            print(ratio_table(res[0], peer))
    if len(runs) > 1:
        for k in range(1, len(results)):
            print()
            print(repeat_summary(runs, k))
    if inproc is not None:
        # every repeat's single-stream round, the prompts the engine alone just replayed
        http = statistics.median(
            next(r for r in res[0].rounds if r.concurrency == 1).tpot_ms["median"] for res in runs
        )
        print(
            f"\nsingle stream, same workload in process (engine alone): TTFT p50 {inproc['ttft_p50_ms']:.0f} ms, "
            f"TPOT p50 {inproc['tpot_p50_ms']:.1f} ms; through HTTP (median of the repeats) {http:.1f} ms = "
            f"{inproc['tpot_p50_ms'] / http:.2f}x the in-process decode speed"
        )
    print(f"\nwrote {j} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
