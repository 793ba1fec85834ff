"""Expected share of prompt tokens from cache, cache_aware vs round_robin, by simulation.

A cross-check for bench/router_cache.py: the same conversations (its own text
generator), the routers' decisions as vllm-router 0.1.17 makes them, and an
idealised node cache. Nothing is served; it runs in a second.

What is modelled, and why:

* Round robin: vllm-router takes ``counter % healthy_workers`` per request, one
  counter for all traffic. Which node a conversation's next turn lands on
  depends only on how many other requests were dispatched in between.
  ``--arrival random``: that gap is random, so each turn lands on a uniformly
  random node (users who think for a while between turns). ``--arrival
  lockstep``: ``--concurrency`` threads, each running its conversations one
  turn after another with equal service times, dispatch in a fixed rotation,
  so the gap is always ``concurrency`` requests; when that is a multiple of
  the node count, round robin sends every turn back to the same node. That is
  the timing artifact the old bench ran into, not a property of round robin.
* cache_aware (balance thresholds never reached at this load), as vllm-router
  0.1.17 does it when the worker answers ``POST /v1/chat/completions/render``
  (the route vllm-router asks each worker for a prompt's token ids): the router
  keeps, per node, the token ids of the prompts it sent there and sends a
  request to the node with the longest token prefix match if matched/total >
  ``cache_threshold`` (0.3), else to the node with the fewest requests in flight
  (here: fewest conversations, ties to the first). Without that route (``clawlan
  serve`` today) it gets no ids and chooses by load alone, which for cache hits
  is the same lottery as round robin: expected ratio 1x.
* A node's cache: the longest prefix of the prompt that the node has seen
  (each served request leaves its prompt and answer behind), as the engine's
  prefix cache and host-RAM entries do. ``--capacity`` bounds it in tokens per
  node, least recently used conversations dropped first; default unbounded,
  which is the case for the bench's nodes (2 GiB of host RAM each, about
  200 saved conversations of this size on the embedded model).

Token counts come from the embedded model's tokenizer when clawlan and
llama-cpp-python are importable, else from 1.35 tokens per word.

    python bench/router_cache_sim.py                      # the bench's default shape, 1000 seeds
    python bench/router_cache_sim.py --sweep              # how the ratio moves with each shape parameter
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE_TOKENS = 5  # <start_of_turn>role\n ... <end_of_turn>\n around each message (Gemma 3)


def _bench():  # the bench's own text generator, so the shapes are the same text
    spec = importlib.util.spec_from_file_location("router_cache", HERE / "router_cache.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def token_counter() -> Callable[[str], int]:
    try:
        sys.path.insert(0, str(HERE.parent / "src"))
        import llama_cpp

        from clawlan.model.store import embedded_model_path

        vocab = llama_cpp.Llama(str(embedded_model_path()), vocab_only=True, verbose=False)
    except Exception:  # noqa: BLE001 - no model here: a plain estimate is enough for a ratio
        return lambda text: round(1.35 * len(text.split()))
    # Per word, memoised: the texts are drawn from a small vocabulary, and tokenizing whole messages
    # costs ~1 ms each. Summing words' tokens is within a token or two of the whole message's count.
    per_word: dict[str, int] = {}

    def count(text: str) -> int:
        n = 0
        for w in text.split():
            if w not in per_word:
                per_word[w] = len(vocab.tokenize((" " + w).encode(), add_bos=False))
            n += per_word[w]
        return n

    return count


@dataclass(frozen=True)
class Shape:
    nodes: int = 3
    conversations: int = 12
    turns: int = 4
    words: int = 60
    followup_words: int = 100
    answer_tokens: int = 32
    cache_threshold: float = 0.3
    capacity: int | None = None  # tokens of prefix cache per node; None: unbounded
    arrival: str = "random"  # or "lockstep"
    concurrency: int = 6  # lockstep only: threads in rotation
    render: bool = True  # the workers answer /v1/chat/completions/render (False: clawlan serve today)


@dataclass
class Turn:
    prompt: int  # prompt tokens (what the router matches: the rendered prompt's ids)
    answer: int  # answer tokens


def conversation(bench, rng: random.Random, s: Shape, count: Callable[[str], int]) -> list[Turn]:
    """One conversation's requests: each re-sends the whole history, as the bench does."""
    answer = s.answer_tokens + TEMPLATE_TOKENS  # the answer as re-sent in the history
    prompt = 1 + count(bench.opener(rng, s.words)) + TEMPLATE_TOKENS + 3  # BOS, the message, the open model turn
    out = []
    for t in range(s.turns):
        out.append(Turn(prompt, s.answer_tokens))
        more = f"Thanks. Now point {t + 1}: " + " ".join(rng.choice(bench.WORDS) for _ in range(s.followup_words)) + "?"
        prompt += answer + count(more) + TEMPLATE_TOKENS
    return out


def dispatch_order(s: Shape, rng: random.Random) -> list[tuple[int, int]]:
    """(conversation, turn) in the order the router sees them."""
    if s.arrival == "lockstep":
        # ``concurrency`` threads take conversations in order and run each to its end; equal service
        # times make the threads dispatch in a fixed rotation.
        queues: list[list[tuple[int, int]]] = [[] for _ in range(s.concurrency)]
        order_c = list(range(s.conversations))
        rng.shuffle(order_c)
        for i, c in enumerate(order_c):
            queues[i % s.concurrency] += [(c, t) for t in range(s.turns)]
        out = []
        while any(queues):
            for q in queues:
                if q:
                    out.append(q.pop(0))
        return out
    # Random arrival: each conversation's turns at its own random times; only the order matters.
    events = []
    for c in range(s.conversations):
        at = rng.uniform(0, 1)
        for t in range(s.turns):
            events.append((at, c, t))
            at += rng.expovariate(1.0)
    return [(c, t) for _, c, t in sorted(events)]


class NodeCache:
    """Per conversation, the longest prefix (in turns) a node holds; LRU within ``capacity`` tokens."""

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self.held: OrderedDict[int, tuple[int, int]] = OrderedDict()  # conversation -> (turn, tokens)

    def cached(self, c: int, t: int, turns: list[Turn]) -> int:
        if c not in self.held:
            return 0
        j, _ = self.held[c]
        return turns[j].prompt + turns[j].answer if j < t else 0

    def store(self, c: int, t: int, turns: list[Turn]) -> None:
        size = turns[t].prompt + turns[t].answer
        self.held.pop(c, None)
        self.held[c] = (t, size)
        if self.capacity is not None:
            while sum(v[1] for v in self.held.values()) > self.capacity and len(self.held) > 1:
                self.held.popitem(last=False)


def simulate(s: Shape, seed: int, convs: list[list[Turn]]) -> dict[str, tuple[int, int]]:
    """(cached, prompt) tokens per policy for one seed."""
    rng = random.Random(seed)
    order = dispatch_order(s, rng)
    out = {}
    for policy in ("cache_aware", "round_robin"):
        caches = [NodeCache(s.capacity) for _ in range(s.nodes)]
        # The router's per-node token prefixes: here, per node, the latest turn of each conversation sent
        # there. A turn's prompt starts with every earlier turn's prompt, so the longest match is with the
        # latest; matches across conversations end within their first ~8 tokens, far below the threshold.
        sent: list[dict[int, int]] = [{} for _ in range(s.nodes)]
        home: dict[int, int] = {}
        counter = 0
        cached = prompt = 0
        for c, t in order:
            turn = convs[c][t]
            if policy == "round_robin":
                node = counter % s.nodes
                counter += 1
            elif not s.render:  # no token ids: the least-loaded node, which is where it happens to be
                node = rng.randrange(s.nodes)
            else:
                best, match = 0, 0
                for n in range(s.nodes):
                    m = convs[c][sent[n][c]].prompt if c in sent[n] else 0
                    if m > match:
                        best, match = n, m
                if match / turn.prompt > s.cache_threshold:
                    node = best
                else:  # fewest conversations (the router's in-flight count at steady load), ties to the first
                    load = [sum(1 for h in home.values() if h == n) for n in range(s.nodes)]
                    node = load.index(min(load))
                home[c] = node
                sent[node][c] = t
            cached += min(caches[node].cached(c, t, convs[c]), turn.prompt - 1)
            prompt += turn.prompt
            caches[node].store(c, t, convs[c])
        out[policy] = (cached, prompt)
    return out


def run(s: Shape, seeds: int, count: Callable[[str], int]) -> dict[str, float]:
    bench = _bench()
    ratios, ca_shares, rr_shares = [], [], []
    pooled = {"cache_aware": [0, 0], "round_robin": [0, 0]}
    for seed in range(seeds):
        rng = random.Random(10_000 + seed)
        convs = [conversation(bench, rng, s, count) for _ in range(s.conversations)]
        r = simulate(s, seed, convs)
        ca, rr = (r[p][0] / r[p][1] for p in ("cache_aware", "round_robin"))
        for p in pooled:
            pooled[p][0] += r[p][0]
            pooled[p][1] += r[p][1]
        ca_shares.append(ca)
        rr_shares.append(rr)
        ratios.append(ca / rr if rr else float("inf"))
    q = statistics.quantiles(ratios, n=40) if seeds >= 40 else [min(ratios)] * 39 + [max(ratios)]
    ca_p = pooled["cache_aware"][0] / pooled["cache_aware"][1]
    rr_p = pooled["round_robin"][0] / pooled["round_robin"][1]
    return {"ca": ca_p, "rr": rr_p, "ratio": ca_p / rr_p, "p2.5": q[0], "p50": statistics.median(ratios), "p97.5": q[-1],
            "below2": sum(r < 2 for r in ratios) / len(ratios)}  # fmt: skip


def fmt(s: Shape, r: dict[str, float]) -> str:
    return (f"cache_aware {r['ca']:.1%}  round_robin {r['rr']:.1%}  ratio {r['ratio']:.2f}x "
            f"(one run: median {r['p50']:.2f}x, 95% of runs {r['p2.5']:.2f}-{r['p97.5']:.2f}x, below 2x in {r['below2']:.0%})")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in vars(Shape()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            p.add_argument(flag, type=type(default) if default is not None else int, default=default)
    p.add_argument("--seeds", type=int, default=1000)
    p.add_argument("--sweep", action="store_true", help="vary one shape parameter at a time")
    args = p.parse_args(argv)
    s = Shape(**{k: getattr(args, k) for k in vars(Shape())})
    count = token_counter()
    print(f"{s}\n  {fmt(s, run(s, args.seeds, count))}")
    if args.sweep:
        base = replace(s, arrival="random")
        rows: list[tuple[str, Shape]] = [("lockstep, 6 in rotation", replace(base, arrival="lockstep", concurrency=6)),
                                         ("lockstep, 4 in rotation", replace(base, arrival="lockstep", concurrency=4))]  # fmt: skip
        rows.append(("no render route (clawlan serve today)", replace(base, render=False)))
        rows += [(f"nodes {n}", replace(base, nodes=n)) for n in (2, 4, 6)]
        rows += [(f"turns {t}", replace(base, turns=t)) for t in (2, 3, 6, 8)]
        rows += [(f"conversations {c}", replace(base, conversations=c)) for c in (24, 48)]
        rows += [(f"opener {w} words", replace(base, words=w)) for w in (30, 150, 400)]
        rows += [(f"follow-ups {w} words", replace(base, followup_words=w)) for w in (30, 200)]
        rows += [(f"answers {a} tokens", replace(base, answer_tokens=a)) for a in (128, 300)]
        # Capacity per node as a share of all conversations' final histories (the working set).
        bench = _bench()
        convs = [conversation(bench, random.Random(10_000 + i), base, count) for i in range(base.conversations)]
        working = sum(c[-1].prompt + c[-1].answer for c in convs)
        rows += [(f"capacity {f:.0%} of working set ({round(f * working)} tokens)", replace(base, capacity=round(f * working)))
                 for f in (1.0, 0.6, 0.45, 0.35)]  # fmt: skip
        for label, shape in rows:
            print(f"{label:>44}: {fmt(shape, run(shape, args.seeds, count))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
