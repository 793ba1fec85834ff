"""Share of prompt tokens served from the nodes' prefix caches, per router policy.

Multi-turn traffic: C conversations x T turns, each turn re-sending the whole
history (as every chat client does). The share is
sum(usage.prompt_tokens_details.cached_tokens) / sum(usage.prompt_tokens) over
all requests. A cache-aware router sends a conversation back to the node that
holds its history; round robin spreads its turns over the nodes.

Arrival (``--think-s``, default 10): every conversation is a user who starts
at a random moment and, after each answer, thinks for a random time (seeded,
exponential with that mean) before the next turn. Why it matters: vllm-router's
round robin is one counter over all requests, so the node a conversation's
next turn lands on depends only on how many other requests were dispatched in
between. In lock-step traffic (``--think-s 0``: ``--concurrency`` threads, each
sending its conversation's next turn the moment the last is answered) that gap
is about ``concurrency`` requests every time; when it is a multiple of the node
count round robin sends every turn back to the node that holds the history,
and when it is not, never; in practice it depends on how well the rotation
holds in a run, and round robin's share swung between runs on that alone. With
think times the gap is random, as it is for people. The bench
prints, for round robin, the share of turns whose dispatch gap was a multiple
of the node count (1/nodes when arrival is random).

cache_aware in vllm-router 0.1.17 matches token ids, which it asks each worker
for (``POST /v1/chat/completions/render``, which ``clawlan serve`` answers); a
node without the route gets every decision by load alone. The bench prints the
router's own count of its prefix decisions (``missing_tokens`` is that case).

Figures: per run, pooled over runs, and a 95% bootstrap interval of the
pooled ratio over conversations (the unit that varies). ``router_cache_sim.py``
computes the ratio the shape should give. ``--concurrency 1`` runs one request
at a time in a seeded interleaving (deterministic; the light test's mode).
Each run gets fresh conversation text, so no run's caches help another, and
policies alternate run by run, so a change in the machine's load hits both.
Requests per node come from the nodes' own ``clawlan:request_success_total``.

The nodes' prefix cache is a stated parameter: ``--kv-tokens`` KV cells (2 x
ctx, one stream per sequence at ``--batch-size 2``) plus ``--cache-ram-mb`` of
host RAM for idle entries (clawlan serve's default, 2048). The bench prints the
working set (every conversation's final history) beside it.

    python bench/router_cache.py --nodes 3 --repeats 6     # starts 3 `clawlan serve --threads 1`
    python bench/router_cache.py --worker http://a:8080 --worker http://b:8080
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["office", "printer", "invoice", "meeting", "schedule", "budget", "client", "report", "network", "server", "backup", "policy", "holiday", "contract", "supplier", "delivery", "payment", "training", "manual", "laptop", "password", "account", "calendar", "project", "task", "review", "deadline", "customer", "ticket", "warranty", "shipment", "storage", "license", "update"]  # fmt: skip


def opener(rng: random.Random, words: int) -> str:
    """A first message of about ``words`` words, unique to its conversation."""
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"Conversation {rng.randrange(10**9)}. Here are my notes: {body}. Summarise them."


def schedule(conversations: int, turns: int, seed: int) -> list[int]:
    """Conversation ids in request order: each appears ``turns`` times, interleaved at random."""
    rng = random.Random(seed)
    order = [c for c in range(conversations) for _ in range(turns)]
    rng.shuffle(order)
    return order


def run_workload(base_url: str, *, conversations: int = 12, turns: int = 4, words: int = 60, followup_words: int = 100,
                 max_tokens: int = 32, seed: int = 0, text_seed: int | None = None, concurrency: int = 1,
                 think_s: float = 0.0, timeout_s: float = 600) -> dict[str, Any]:  # fmt: skip
    """``concurrency`` 1: one request at a time in ``schedule``'s order (deterministic). More, with
    ``think_s`` 0: that many conversations at once, each sending its next turn when the last is
    answered (lock-step). ``think_s`` > 0: up to ``concurrency`` users at once, each starting at a
    random moment within ``think_s`` and thinking exponential(mean ``think_s``) between turns."""
    base = seed if text_seed is None else text_seed
    rngs = [random.Random(base * 1000 + c) for c in range(conversations)]
    pauses = [random.Random((seed + 1) * 7919 + c) for c in range(conversations)]  # think times, apart from text
    history: list[list[dict[str, str]]] = [[{"role": "user", "content": opener(rngs[c], words)}] for c in range(conversations)]
    done = [0] * conversations
    totals = {"prompt": 0, "cached": 0, "failed": 0}
    per_turn: dict[int, list[int]] = {}
    per_conv = [[0, 0] for _ in range(conversations)]  # prompt, cached
    final_prompt = [0] * conversations  # the last turn's prompt tokens: the history a node must hold
    dispatched: list[list[int]] = [[] for _ in range(conversations)]  # each turn's place in the router's order
    sent = [0]
    lock = threading.Lock()
    t0 = time.monotonic()

    def turn(client: httpx.Client, c: int) -> None:
        body = {"model": "m", "messages": history[c], "max_tokens": max_tokens, "temperature": 0}
        with lock:
            dispatched[c].append(sent[0])
            sent[0] += 1
        r = client.post("/v1/chat/completions", json=body)
        t = done[c]
        done[c] += 1
        if r.status_code != 200:
            with lock:
                totals["failed"] += 1
            history[c] += [{"role": "assistant", "content": "ok"}]
        else:
            doc = r.json()
            u = doc["usage"]
            hit = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            with lock:
                totals["prompt"] += u["prompt_tokens"]
                totals["cached"] += hit
                per_turn.setdefault(t, [0, 0])
                per_turn[t][0] += u["prompt_tokens"]
                per_turn[t][1] += hit
                per_conv[c][0] += u["prompt_tokens"]
                per_conv[c][1] += hit
                final_prompt[c] = u["prompt_tokens"]
            history[c] += [{"role": "assistant", "content": doc["choices"][0]["message"]["content"] or "ok"}]
        more = " ".join(rngs[c].choice(WORDS) for _ in range(followup_words))
        history[c] += [{"role": "user", "content": f"Thanks. Now point {done[c]}: {more}?"}]

    def user(client: httpx.Client, c: int) -> None:
        # The pauses model people reading and typing: workload, not synchronisation.
        time.sleep(pauses[c].uniform(0, think_s))
        for k in range(turns):
            if k:
                time.sleep(pauses[c].expovariate(1 / think_s))
            turn(client, c)

    limits = httpx.Limits(max_connections=max(concurrency, 1) + 4)
    with httpx.Client(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        order = list(range(conversations))
        random.Random(seed).shuffle(order)
        if concurrency <= 1:
            for c in schedule(conversations, turns, seed):
                turn(client, c)
        elif think_s > 0:
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda c: user(client, c), order))
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda c: [turn(client, c) for _ in range(turns)], order))
    prompt, cached = totals["prompt"], totals["cached"]
    return {
        "requests": conversations * turns,
        "failed": totals["failed"],
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "cached_share": cached / prompt if prompt else 0.0,
        "per_turn_share": {t: (h / p if p else 0.0) for t, (p, h) in sorted(per_turn.items())},
        "per_conversation": per_conv,
        "final_prompt": final_prompt,
        "dispatched": dispatched,
        "seconds": round(time.monotonic() - t0, 1),
    }


def aligned_share(dispatched: list[list[int]], nodes: int) -> float:
    """Share of follow-up turns sent a multiple of ``nodes`` requests after their previous turn:
    the turns round robin sends back to the same node (1/nodes when arrival is random)."""
    gaps = [b - a for d in dispatched for a, b in zip(d[:-1], d[1:], strict=True)]
    return sum(g % nodes == 0 for g in gaps) / len(gaps) if gaps else 0.0


def bootstrap_ratio(a: list[list[int]], b: list[list[int]], rounds: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95% interval of share(a) / share(b), resampling each side's conversations with replacement."""
    rng = random.Random(seed)
    out = []
    for _ in range(rounds):
        sa = [a[rng.randrange(len(a))] for _ in a]
        sb = [b[rng.randrange(len(b))] for _ in b]
        ha, hb = sum(x[1] for x in sa) / sum(x[0] for x in sa), sum(x[1] for x in sb) / sum(x[0] for x in sb)
        out.append(ha / hb if hb else float("inf"))
    out.sort()
    return out[int(0.025 * rounds)], out[int(0.975 * rounds) - 1]


def prefix_decisions(metrics_url: str) -> dict[str, int]:
    """The router's own count of cache_aware's prefix decisions by outcome. vllm-router 0.1.17
    matches token ids, which it asks each worker for (``POST /v1/chat/completions/render``); an
    outcome of ``missing_tokens`` means it got none and chose by load alone."""
    try:
        text = httpx.get(metrics_url, timeout=5).text
    except httpx.HTTPError:
        return {}
    pat = r'^vllm_router_prefix_routing_decisions_total\{[^}]*outcome="([^"]+)"[^}]*\} (\S+)$'
    out: dict[str, int] = {}
    for outcome, v in re.findall(pat, text, re.M):
        out[outcome] = out.get(outcome, 0) + int(float(v))
    return out


def served(workers: list[str]) -> list[float]:
    """Generations each node has finished so far (its Prometheus counter)."""
    out = []
    for w in workers:
        text = httpx.get(w + "/metrics", timeout=10).text
        out.append(sum(float(v) for v in re.findall(r"^clawlan:request_success_total\{[^}]*\} (\S+)$", text, re.M)))
    return out


def start_nodes(n: int, base_port: int, args: argparse.Namespace) -> list[tuple[subprocess.Popen[bytes], str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = []
    for i in range(n):
        port = base_port + i
        argv = [sys.executable, "-m", "clawlan", "serve", "--port", str(port), "--threads", str(args.threads),
                "--batch-size", str(args.batch_size), "--ctx", str(args.ctx), "--kv-tokens", str(args.kv_tokens),
                "--cache-ram-mb", str(args.cache_ram_mb), "--no-advertise"]  # fmt: skip
        out.append((subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), f"http://127.0.0.1:{port}"))
    deadline = time.monotonic() + 600
    for proc, url in out:
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"node {url} did not come up")
            time.sleep(0.2)  # polling the node's /health with a deadline
    return out


def run_once(policy: str, targets: list[str], workers: list[str], args: argparse.Namespace, k: int, text_seed: int) -> dict[str, Any]:
    """One run of the workload through a fresh router with ``policy`` over ``targets`` ; ``workers`` are
    the nodes themselves, for their counters (the same URLs unless something stands before them)."""
    sys.path.insert(0, str(ROOT / "src"))
    from clawlan.cli import build_parser
    from clawlan.router.command import Router
    from clawlan.router.process import free_port

    metrics_port = free_port()
    argv = ["router", "--policy", policy, "--port", str(args.router_port), "--metrics-port", str(metrics_port), "--no-discover"]
    for w in targets:
        argv += ["--worker", w]
    router = Router(build_parser().parse_args(argv)).start()
    try:
        deadline = time.monotonic() + 60
        while len(httpx.get(router.process.url + "/list_workers").json()["urls"]) < len(targets):
            if time.monotonic() > deadline:
                raise SystemExit("the router did not take every worker")
            time.sleep(0.2)  # polling the router's list with a deadline
        before = served(workers)
        r = run_workload(router.process.url, conversations=args.conversations, turns=args.turns, words=args.words,
                         followup_words=args.followup_words, max_tokens=args.max_tokens, seed=args.seed + k,
                         text_seed=text_seed, concurrency=args.concurrency, think_s=args.think_s)  # fmt: skip
        r["requests_per_node"] = [int(a - b) for a, b in zip(served(workers), before, strict=True)]
        r["aligned_share"] = aligned_share(r["dispatched"], len(workers))
        r["prefix_decisions"] = prefix_decisions(f"http://127.0.0.1:{metrics_port}/metrics")
        return r
    finally:
        router.stop()


def summarise(policy: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    total = {key: sum(r[key] for r in runs) for key in ("requests", "failed", "prompt_tokens", "cached_tokens", "seconds")}
    total["cached_share"] = total["cached_tokens"] / total["prompt_tokens"] if total["prompt_tokens"] else 0.0
    total["requests_per_node"] = [sum(x) for x in zip(*(r["requests_per_node"] for r in runs), strict=True)]
    total["per_conversation"] = [pc for r in runs for pc in r["per_conversation"]]
    total["aligned_share"] = sum(r["aligned_share"] for r in runs) / len(runs)
    total["runs"] = runs
    return total


def pool(paths: list[str]) -> int:
    """Figures over the runs of several result files (same shape, different seeds)."""
    docs = [json.loads(Path(x).read_text()) for x in paths]
    policies = [k for k in docs[0]["results"] if k != "ratio"]
    merged = {p: summarise(p, [r for d in docs for r in d["results"][p]["runs"]]) for p in policies}
    for policy, r in merged.items():
        print(f"{policy:>14}: {r['cached_tokens']}/{r['prompt_tokens']} = {r['cached_share']:.1%} over {len(r['runs'])} runs, "
              f"{len(r['per_conversation'])} conversations; round robin's same-node gaps {r['aligned_share']:.0%}")  # fmt: skip
    if len(policies) == 2:
        a, b = (merged[p] for p in policies)
        lo, hi = bootstrap_ratio(a["per_conversation"], b["per_conversation"])
        per_run = [x["cached_share"] / y["cached_share"] for x, y in zip(a["runs"], b["runs"], strict=True)]
        print(f"{policies[0]} / {policies[1]}: {a['cached_share'] / b['cached_share']:.2f}x pooled "
              f"(95% bootstrap over conversations {lo:.2f}-{hi:.2f}x; per run {min(per_run):.2f}-{max(per_run):.2f}, "
              f"{sum(x < 2 for x in per_run)} of {len(per_run)} below 2x)")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=3, help="start this many local nodes (ignored with --worker)")
    p.add_argument("--worker", action="append", default=[], help="use running nodes instead")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--kv-tokens", type=int, help="each node's KV cells (default 2 x --ctx)")
    p.add_argument("--cache-ram-mb", type=int, default=2048, help="each node's host RAM for idle prefix-cache entries (clawlan serve's default)")
    p.add_argument("--base-port", type=int, default=18400)
    p.add_argument("--router-port", type=int, default=18490)
    p.add_argument("--policies", default="cache_aware,round_robin")
    p.add_argument("--conversations", type=int, default=12)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--words", type=int, default=60, help="words in each conversation's first message")
    p.add_argument("--followup-words", type=int, default=100, help="words in each later user message")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens in each answer")
    p.add_argument("--concurrency", type=int, help="users (conversations) active at once (default: all; 1: one request at a time)")
    p.add_argument("--think-s", type=float, default=10.0, help="mean seconds a user thinks between turns (0: lock-step)")
    p.add_argument("--repeats", type=int, default=1, help="runs per policy, seeds --seed, --seed+1, ...; policies alternate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--pool", nargs="+", metavar="JSON", help="no run: pool the runs in these result files and print the figures")
    args = p.parse_args(argv)
    if args.pool:
        return pool(args.pool)
    args.kv_tokens = args.kv_tokens or 2 * args.ctx
    args.concurrency = args.concurrency or args.conversations
    started = [] if args.worker else start_nodes(args.nodes, args.base_port, args)
    workers = args.worker or [url for _, url in started]
    targets = workers
    policies = args.policies.split(",")
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in policies}
    print(f"{len(workers)} nodes, each: {args.kv_tokens} KV cells + {args.cache_ram_mb} MiB host RAM of prefix cache; "
          f"{args.conversations} conversations x {args.turns} turns, {args.concurrency} users at once, "
          f"think {args.think_s:g} s mean", flush=True)  # fmt: skip
    try:
        for k in range(args.repeats):
            for i, policy in enumerate(policies):
                r = run_once(policy, targets, workers, args, k, text_seed=(args.seed * 1000 + i + 1) * 100 + k)
                runs[policy].append(r)
                print(f"  run {k} {policy:>12}: {r['cached_tokens']}/{r['prompt_tokens']} = {r['cached_share']:.1%}  "
                      f"({r['failed']} failed, {r['seconds']:.0f} s, per node {r['requests_per_node']}, "
                      f"gap a multiple of {len(workers)}: {r['aligned_share']:.0%}, prefix decisions {r['prefix_decisions']})",
                      flush=True)  # fmt: skip
    finally:
        for proc, _ in started:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in started:
            proc.wait(60)
    results = {p: summarise(p, rs) for p, rs in runs.items()}
    for policy, r in results.items():
        shares = ", ".join(f"{x['cached_share']:.1%}" for x in r["runs"])
        print(f"{policy:>14}: {r['cached_tokens']}/{r['prompt_tokens']} prompt tokens from cache = {r['cached_share']:.1%}  "
              f"({r['requests']} requests, {r['failed']} failed; per run {shares}; requests per node {r['requests_per_node']}; "
              f"round robin's same-node gaps {r['aligned_share']:.0%})", flush=True)  # fmt: skip
    if len(policies) == 2 and all(results[p]["cached_share"] for p in policies):
        a, b = (results[p] for p in policies)
        per_run = [x["cached_share"] / y["cached_share"] for x, y in zip(a["runs"], b["runs"], strict=True) if y["cached_share"]]
        lo, hi = bootstrap_ratio(a["per_conversation"], b["per_conversation"])
        ratio = a["cached_share"] / b["cached_share"]
        results["ratio"] = {"pooled": ratio, "per_run": per_run, "bootstrap95": [lo, hi]}
        print(f"{policies[0]} / {policies[1]}: {ratio:.2f}x pooled over {len(per_run)} run(s) "
              f"(95% bootstrap over conversations {lo:.2f}-{hi:.2f}x; per run {', '.join(f'{x:.2f}' for x in per_run)})")  # fmt: skip
    working = [sum(h + args.max_tokens for h in x["final_prompt"]) for rs in runs.values() for x in rs]
    if working:
        print(f"working set of one run (every conversation's final history): {min(working)}-{max(working)} tokens")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"router-cache-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "workers": workers, "results": results}, indent=2))
    print(f"wrote {path}")
    return 1 if any(r["failed"] for p, r in results.items() if p in policies) else 0


if __name__ == "__main__":
    raise SystemExit(main())
