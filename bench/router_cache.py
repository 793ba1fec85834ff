"""Share of prompt tokens served from the nodes' prefix caches, per router policy.

Multi-turn traffic: C conversations x T turns, each turn re-sending the whole
history (as every chat client does). The share is
sum(usage.prompt_tokens_details.cached_tokens) / sum(usage.prompt_tokens) over
all requests. A cache-aware router sends a conversation back to the node that
holds its history; round robin spreads its turns over the nodes.

``--concurrency`` conversations are in flight at once (default 6), each sending
its next turn when the last is answered, as users do. This matters: with one
request at a time every node is idle at every decision, and vllm-router's
cache_aware sends every new conversation to the least-loaded node, which is
then always the first one, so all traffic lands on one node (cache hits, no
balancing). ``--concurrency 1`` runs that case, in a seeded interleaving of the
conversations. Each policy gets fresh conversation text, so the nodes' caches
from an earlier policy's run cannot help it. Requests per node come from the
nodes' own ``clawlan:request_success_total``.

    python bench/router_cache.py --nodes 3                 # starts 3 `clawlan serve --threads 1`
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
                 timeout_s: float = 600) -> dict[str, Any]:  # fmt: skip
    """``concurrency`` 1: one request at a time in ``schedule``'s order (deterministic). More: that many
    conversations at once, each sending its next turn when the last is answered, as users do."""
    base = seed if text_seed is None else text_seed
    rngs = [random.Random(base * 1000 + c) for c in range(conversations)]
    history: list[list[dict[str, str]]] = [[{"role": "user", "content": opener(rngs[c], words)}] for c in range(conversations)]
    done = [0] * conversations
    totals = {"prompt": 0, "cached": 0, "failed": 0}
    per_turn: dict[int, list[int]] = {}
    lock = threading.Lock()
    t0 = time.monotonic()

    def turn(client: httpx.Client, c: int) -> None:
        body = {"model": "m", "messages": history[c], "max_tokens": max_tokens, "temperature": 0}
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
            history[c] += [{"role": "assistant", "content": doc["choices"][0]["message"]["content"] or "ok"}]
        more = " ".join(rngs[c].choice(WORDS) for _ in range(followup_words))
        history[c] += [{"role": "user", "content": f"Thanks. Now point {done[c]}: {more}?"}]

    with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
        if concurrency <= 1:
            for c in schedule(conversations, turns, seed):
                turn(client, c)
        else:
            order = list(range(conversations))
            random.Random(seed).shuffle(order)
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
        "seconds": round(time.monotonic() - t0, 1),
    }


def served(workers: list[str]) -> list[float]:
    """Generations each node has finished so far (its Prometheus counter)."""
    out = []
    for w in workers:
        text = httpx.get(w + "/metrics", timeout=10).text
        out.append(sum(float(v) for v in re.findall(r"^clawlan:request_success_total\{[^}]*\} (\S+)$", text, re.M)))
    return out


def start_nodes(n: int, base_port: int, threads: int, ctx: int) -> list[tuple[subprocess.Popen[bytes], str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = []
    for i in range(n):
        port = base_port + i
        argv = [sys.executable, "-m", "clawlan", "serve", "--port", str(port), "--threads", str(threads),
                "--batch-size", "2", "--ctx", str(ctx), "--kv-tokens", str(2 * ctx), "--no-advertise"]  # fmt: skip
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


def run_policy(policy: str, workers: list[str], port: int, args: argparse.Namespace, text_seed: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "src"))
    from clawlan.cli import build_parser
    from clawlan.router.command import Router
    from clawlan.router.process import free_port

    argv = ["router", "--policy", policy, "--port", str(port), "--metrics-port", str(free_port()), "--no-discover"]
    for w in workers:
        argv += ["--worker", w]
    router = Router(build_parser().parse_args(argv)).start()
    try:
        deadline = time.monotonic() + 60
        while len(httpx.get(router.process.url + "/list_workers").json()["urls"]) < len(workers):
            if time.monotonic() > deadline:
                raise SystemExit("the router did not take every worker")
            time.sleep(0.2)  # polling the router's list with a deadline
        before = served(workers)
        runs = [run_workload(router.process.url, conversations=args.conversations, turns=args.turns, words=args.words,
                             followup_words=args.followup_words, max_tokens=args.max_tokens, seed=args.seed + k,
                             text_seed=text_seed * 100 + k, concurrency=args.concurrency) for k in range(args.repeats)]  # fmt: skip
        per_node = [int(a - b) for a, b in zip(served(workers), before, strict=True)]
        total = {key: sum(r[key] for r in runs) for key in ("requests", "failed", "prompt_tokens", "cached_tokens", "seconds")}
        total["cached_share"] = total["cached_tokens"] / total["prompt_tokens"] if total["prompt_tokens"] else 0.0
        total["runs"] = runs
        total["requests_per_node"] = per_node
        return total
    finally:
        router.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=3, help="start this many local nodes (ignored with --worker)")
    p.add_argument("--worker", action="append", default=[], help="use running nodes instead")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--base-port", type=int, default=18400)
    p.add_argument("--router-port", type=int, default=18490)
    p.add_argument("--policies", default="cache_aware,round_robin")
    p.add_argument("--conversations", type=int, default=12)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--words", type=int, default=60, help="words in each conversation's first message")
    p.add_argument("--followup-words", type=int, default=100, help="words in each later user message")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens in each answer")
    p.add_argument("--concurrency", type=int, default=6, help="conversations in flight at once (1: one request at a time)")
    p.add_argument("--repeats", type=int, default=1, help="runs per policy, seeds --seed, --seed+1, ...; totals pooled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    started = [] if args.worker else start_nodes(args.nodes, args.base_port, args.threads, args.ctx)
    workers = args.worker or [url for _, url in started]
    results: dict[str, Any] = {}
    try:
        for i, policy in enumerate(args.policies.split(",")):
            results[policy] = run_policy(policy, workers, args.router_port, args, text_seed=args.seed * 1000 + i + 1)
            r = results[policy]
            per_run = ", ".join(f"{x['cached_share']:.1%}" for x in r["runs"])
            print(f"{policy:>14}: {r['cached_tokens']}/{r['prompt_tokens']} prompt tokens from cache "
                  f"= {r['cached_share']:.1%}  ({r['requests']} requests, {r['failed']} failed, {r['seconds']:.0f} s; "
                  f"per run {per_run}; requests per node {r['requests_per_node']})", flush=True)  # fmt: skip
    finally:
        for proc, _ in started:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in started:
            proc.wait(60)
    names = list(results)
    if len(names) == 2 and results[names[1]]["cached_share"]:
        print(f"{names[0]} / {names[1]}: {results[names[0]]['cached_share'] / results[names[1]]['cached_share']:.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"router-cache-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "workers": workers, "results": results}, indent=2))
    print(f"wrote {path}")
    return 1 if any(r["failed"] for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
