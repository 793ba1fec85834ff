"""``clawlan bench``: an OpenAI-compatible load generator, usable as a library.

Metrics follow vLLM's ``bench serve`` definitions:

* **TTFT** - request sent to first streamed token;
* **TPOT** - per request, ``(e2e - ttft) / (output_tokens - 1)``: the decode pace after the first token;
* **ITL** - every gap between two successive streamed chunks;
* **E2E** - request sent to the last byte;
* **output throughput** - all output tokens of a round / the round's wall time.

A round runs ``concurrency`` clients, each sending ``requests_per_client``
requests back to back. Every prompt is new from its first token on (a unique
id leads it, then random words): a server with a prefix cache would otherwise
answer later rounds from the cache and the numbers would measure the cache,
not the batching. The context-switch probe does the opposite on purpose: a
long conversation gets a follow-up turn after other sessions ran, which is
exactly where a prefix cache (or its absence) shows.

``bench/serve.py`` drives this module against clawlan and llama-server side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clawlan.errors import ClawlanError, ConfigError

# Short, common English words: each is one token (with its leading space) in the usual
# tokenizers, so N words make a prompt of about N tokens.
_WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city community name "
    "president team minute idea kid body information back parent face others level office door health person "
    "art war history party result change morning reason research girl guy moment air teacher force education"
)
WORDS = _WORDS.split()


@dataclass
class Workload:
    input_tokens: int = 250
    output_tokens: int = 64
    requests_per_client: int = 2
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    endpoint: str = "completions"  # or "chat"
    model: str | None = None  # None: the first id from /v1/models
    api_key: str | None = None
    timeout: float = 600.0
    seed: int = 0
    # context switch: one long conversation, other sessions in between, then a follow-up turn
    switch_history_tokens: int = 1500
    switch_other_sessions: int = 3
    switch_output_tokens: int = 16


@dataclass
class RequestResult:
    ok: bool
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    e2e: float = 0.0
    itl: list[float] = field(default_factory=list)
    cached_tokens: int | None = None
    text: str = ""
    error: str = ""

    @property
    def tpot(self) -> float | None:
        return (self.e2e - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else None


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    """mean, median, p90 and p99 in milliseconds (inputs in seconds)."""
    v = [x * 1000 for x in values]
    if not v:
        return {"mean": float("nan"), "median": float("nan"), "p90": float("nan"), "p99": float("nan")}
    return {
        "mean": statistics.fmean(v),
        "median": statistics.median(v),
        "p90": _pct(v, 90),
        "p99": _pct(v, 99),
    }


@dataclass
class RoundStats:
    concurrency: int
    requests: int
    completed: int
    failed: int
    duration: float
    input_tokens: int
    output_tokens: int
    output_throughput: float  # tok/s
    request_throughput: float  # req/s
    ttft_ms: dict[str, float]
    tpot_ms: dict[str, float]
    itl_ms: dict[str, float]
    e2e_ms: dict[str, float]
    errors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, concurrency: int, results: list[RequestResult], duration: float) -> RoundStats:
        ok = [r for r in results if r.ok]
        out_tok = sum(r.output_tokens for r in ok)
        return cls(
            concurrency=concurrency,
            requests=len(results),
            completed=len(ok),
            failed=len(results) - len(ok),
            duration=duration,
            input_tokens=sum(r.prompt_tokens for r in ok),
            output_tokens=out_tok,
            output_throughput=out_tok / duration if duration else 0.0,
            request_throughput=len(ok) / duration if duration else 0.0,
            ttft_ms=summary([r.ttft for r in ok]),
            tpot_ms=summary([t for r in ok if (t := r.tpot) is not None]),
            itl_ms=summary([x for r in ok for x in r.itl]),
            e2e_ms=summary([r.e2e for r in ok]),
            errors=sorted({r.error for r in results if not r.ok})[:5],
        )


@dataclass
class SwitchStats:
    history_tokens: int
    other_sessions: int
    cold_ttft_ms: float
    followup_ttft_ms: float
    followup_cached_tokens: int | None

    @property
    def speedup(self) -> float:
        return self.cold_ttft_ms / self.followup_ttft_ms if self.followup_ttft_ms else float("nan")


@dataclass
class ServerResult:
    name: str
    base_url: str
    model: str
    rounds: list[RoundStats] = field(default_factory=list)
    switch: SwitchStats | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.switch:
            d["switch"]["speedup"] = self.switch.speedup
        return d


# --- prompts ------------------------------------------------------------------------------------


class PromptMaker:
    """Fresh prompts, distinct from their first token on.

    The first word is drawn without replacement from the word list in three spellings (300
    distinct first tokens before any repeats), then a run-unique id and the counter follow, so
    even after 300 prompts two never share more than one token of prefix.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.salt = uuid.uuid4().hex[:8]
        self.first = [w for word in WORDS for w in (word, word.title(), word.upper())]
        self.rng.shuffle(self.first)
        self.n = 0

    def words(self, n: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(n))

    def prompt(self, tokens: int) -> str:
        lead = self.first[self.n % len(self.first)]
        self.n += 1
        head = f"{lead} {self.n}-{self.salt}. Write a long story using these words:"
        return f"{head} {self.words(max(tokens - 16, 1))}."


# --- one streamed request -----------------------------------------------------------------------


Prompt = str | list[dict[str, str]]  # text, or chat messages (a multi-turn conversation)


def _body(w: Workload, model: str, prompt: Prompt, max_tokens: int) -> tuple[str, dict[str, Any]]:
    common: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
        # Generate exactly max_tokens: llama-server and clawlan both accept ignore_eos, and a fixed
        # output length is what makes two servers' throughput comparable.
        "ignore_eos": True,
    }
    if w.endpoint == "chat":
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return "/v1/chat/completions", {**common, "messages": messages}
    text = prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)
    return "/v1/completions", {**common, "prompt": text}


def _delta_text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    c = choices[0]
    if "text" in c:
        return c.get("text") or ""
    return (c.get("delta") or {}).get("content") or ""


async def stream_request(
    client: Any, url: str, body: dict[str, Any], headers: dict[str, str]
) -> RequestResult:
    """POST ``body`` with stream=True and time every server-sent event."""
    import httpx

    res = RequestResult(ok=False)
    chunks = 0
    t0 = time.perf_counter()
    last = t0
    try:
        async with client.stream("POST", url, json=body, headers=headers) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode("utf-8", "replace")
                res.error = f"HTTP {resp.status_code}: {text[:200]}"
                return res
            buf = ""
            async for piece in resp.aiter_text():
                buf += piece
                # SSE: events are separated by a blank line; each "data:" line holds one JSON chunk.
                while "\n\n" in buf:
                    event, buf = buf.split("\n\n", 1)
                    for line in event.splitlines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            continue
                        chunk = json.loads(data)
                        if "error" in chunk:
                            res.error = str(chunk["error"])[:200]
                            return res
                        usage = chunk.get("usage")
                        if usage:
                            res.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                            res.output_tokens = int(usage.get("completion_tokens") or 0)
                            details = usage.get("prompt_tokens_details") or {}
                            if details.get("cached_tokens") is not None:
                                res.cached_tokens = int(details["cached_tokens"])
                        text = _delta_text(chunk)
                        if text:
                            now = time.perf_counter()
                            if chunks == 0:
                                res.ttft = now - t0
                            else:
                                res.itl.append(now - last)
                            last = now
                            chunks += 1
                            res.text += text
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"[:200]
        return res
    res.e2e = time.perf_counter() - t0
    if chunks == 0:
        res.error = "the stream ended without a token"
        return res
    # Servers that do not send usage: one streamed chunk per token is what both peers do.
    res.output_tokens = res.output_tokens or chunks
    res.ok = True
    return res


# --- rounds -------------------------------------------------------------------------------------


def base_url(url: str) -> str:
    """A server's URL as requests are built on it: no trailing slash, no ``/v1``."""
    return url.rstrip("/").removesuffix("/v1")


class Bench:
    """Runs a :class:`Workload` against one or more servers. ``on_request`` ticks once per request."""

    def __init__(
        self,
        workload: Workload,
        on_request: Callable[[], None] | None = None,
        extra_body: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.w = workload
        self.tick = on_request or (lambda: None)
        # Per server (base URL), fields added to every request body: llama-cpp-python's server has
        # no ignore_eos, so the benchmark gives it a logit bias against end-of-generation instead.
        self.extra = {base_url(url): body for url, body in (extra_body or {}).items()}
        self.prompts: list[tuple[int, list[str]]] = []  # the last run's rounds: concurrency, prompts

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.w.api_key}"} if self.w.api_key else {}

    def total_requests(self, servers: int = 1) -> int:
        per = sum(c * self.w.requests_per_client for c in self.w.concurrency)
        return servers * (per + 2 + self.w.switch_other_sessions)

    async def model_id(self, client: Any, base_url: str) -> str:
        if self.w.model:
            return self.w.model
        import httpx

        try:
            r = await client.get(f"{base_url}/v1/models", headers=self.headers())
            r.raise_for_status()
            return r.json()["data"][0]["id"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"--url {base_url}: GET /v1/models failed ({type(exc).__name__}: {exc}); "
                "check the URL is an OpenAI-compatible server (or pass --model)"
            ) from None

    async def one(
        self, client: Any, base_url: str, model: str, prompt: str, max_tokens: int
    ) -> RequestResult:
        path, body = _body(self.w, model, prompt, max_tokens)
        body |= self.extra.get(base_url, {})
        r = await stream_request(client, base_url + path, body, self.headers())
        if not r.ok and r.error.startswith("RemoteProtocolError") and not r.ttft:
            # A pooled keep-alive connection the server had already closed (llama-server drops idle
            # ones): nothing was sent or answered, so one retry on a new connection is the same request.
            r = await stream_request(client, base_url + path, body, self.headers())
        self.tick()
        return r

    async def round(
        self, client: Any, base_url: str, model: str, concurrency: int, prompts: list[str]
    ) -> RoundStats:
        queue = list(prompts)
        results: list[RequestResult] = []

        async def worker(mine: list[str]) -> None:
            for p in mine:
                results.append(await self.one(client, base_url, model, p, self.w.output_tokens))

        per = self.w.requests_per_client
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(queue[i * per : (i + 1) * per]) for i in range(concurrency)))
        return RoundStats.of(concurrency, results, time.perf_counter() - t0)

    async def context_switch(self, client: Any, base_url: str, model: str, pm: PromptMaker) -> SwitchStats:
        """TTFT of a follow-up turn on a long conversation after other sessions ran, against its cold first turn."""
        w = self.w
        history = pm.prompt(w.switch_history_tokens)
        cold = await self.one(client, base_url, model, history, w.switch_output_tokens)
        if not cold.ok:
            raise ClawlanError(f"context-switch probe failed on {base_url}: {cold.error}")
        for _ in range(w.switch_other_sessions):
            await self.one(client, base_url, model, pm.prompt(w.input_tokens), w.switch_output_tokens)
        # The follow-up is the whole conversation so far plus a new question: as a chat, three
        # messages; as a completion, the same text run together.
        follow: Prompt = [
            {"role": "user", "content": history},
            {"role": "assistant", "content": cold.text},
            {"role": "user", "content": "\nNow continue the story with these words: " + pm.words(20) + "."},
        ]
        again = await self.one(client, base_url, model, follow, w.switch_output_tokens)
        if not again.ok:
            raise ClawlanError(f"context-switch probe failed on {base_url}: {again.error}")
        return SwitchStats(
            cold.prompt_tokens,
            w.switch_other_sessions,
            cold.ttft * 1000,
            again.ttft * 1000,
            again.cached_tokens,
        )

    def round_prompts(self, pm: PromptMaker) -> list[tuple[int, list[str]]]:
        """Each round's concurrency and prompts; :meth:`run_async` keeps the last run's in ``prompts``."""
        return [(c, [pm.prompt(self.w.input_tokens) for _ in range(c * self.w.requests_per_client)]) for c in self.w.concurrency]

    async def run_async(self, servers: list[tuple[str, str]], switch: bool = True) -> list[ServerResult]:
        """Run the workload on each (name, base_url). Rounds alternate between servers, concurrency by
        concurrency, with the same fresh prompts for each server and new ones for every round."""
        import httpx

        limits = httpx.Limits(
            max_connections=max(self.w.concurrency) + 4, max_keepalive_connections=max(self.w.concurrency) + 4
        )
        timeout = httpx.Timeout(self.w.timeout, connect=10.0)
        pm = PromptMaker(self.w.seed)
        out: list[ServerResult] = []
        async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
            for name, url in servers:
                url = base_url(url)
                out.append(ServerResult(name, url, await self.model_id(client, url)))
            self.prompts = self.round_prompts(pm)
            for c, prompts in self.prompts:
                for res in out:
                    res.rounds.append(await self.round(client, res.base_url, res.model, c, prompts))
            if switch:
                for res in out:
                    # Each server gets its own conversation: reusing one would hand the second a warm cache.
                    res.switch = await self.context_switch(client, res.base_url, res.model, pm)
        return out

    def run(self, servers: list[tuple[str, str]], switch: bool = True) -> list[ServerResult]:
        return asyncio.run(self.run_async(servers, switch))


# --- reporting ----------------------------------------------------------------------------------


def table(results: list[ServerResult]) -> str:
    head = f"{'server':<10}{'conc':>5}{'ok':>5}{'out tok/s':>11}{'req/s':>7}{'TTFT p50':>10}{'TTFT p99':>10}{'TPOT p50':>10}{'ITL p50':>9}{'E2E p50':>9}"
    lines = [head, "-" * len(head)]
    for res in results:
        for r in res.rounds:
            lines.append(
                f"{res.name[:10]:<10}{r.concurrency:>5}{r.completed:>5}{r.output_throughput:>11.1f}"
                f"{r.request_throughput:>7.2f}{r.ttft_ms['median']:>10.0f}{r.ttft_ms['p99']:>10.0f}"
                f"{r.tpot_ms['median']:>10.1f}{r.itl_ms['median']:>9.1f}{r.e2e_ms['median']:>9.0f}"
            )
            if r.failed:
                lines.append(f"{'':10}{r.failed} failed: {'; '.join(r.errors)}")
    lines.append("(latencies in ms; TPOT/ITL per token)")
    for res in results:
        s = res.switch
        if s:
            cached = (
                f", {s.followup_cached_tokens} tokens cached" if s.followup_cached_tokens is not None else ""
            )
            # A server that sends no usage (llama-cpp-python's) leaves the length unknown, not zero.
            size = f"{s.history_tokens}-token conversation" if s.history_tokens else "conversation of unreported length"
            lines.append(
                f"context switch {res.name}: {size}, {s.other_sessions} other sessions "
                f"between turns: cold first token {s.cold_ttft_ms:.0f} ms, follow-up {s.followup_ttft_ms:.0f} ms{cached}"
            )
    return "\n".join(lines)


def div(x: float, y: float) -> float:
    return x / y if y else float("nan")


def ratios(a: ServerResult, b: ServerResult) -> list[dict[str, Any]]:
    """Per concurrency, a/b for throughput (above 1: a is faster) and latencies (below 1: a is quicker)."""
    out: list[dict[str, Any]] = []
    for ra, rb in zip(a.rounds, b.rounds, strict=False):
        out.append(
            {
                "concurrency": ra.concurrency,
                "output_throughput": div(ra.output_throughput, rb.output_throughput),
                "ttft_p50": div(ra.ttft_ms["median"], rb.ttft_ms["median"]),
                "tpot_p50": div(ra.tpot_ms["median"], rb.tpot_ms["median"]),
                "e2e_p50": div(ra.e2e_ms["median"], rb.e2e_ms["median"]),
            }
        )
    if a.switch and b.switch:
        out.append(
            {"context_switch_followup_ttft": div(a.switch.followup_ttft_ms, b.switch.followup_ttft_ms)}
        )
    return out


def ratio_table(a: ServerResult, b: ServerResult) -> str:
    lines = [
        f"ratios {a.name} / {b.name} (throughput: >1 means {a.name} is faster; latency: <1 means {a.name} is quicker)"
    ]
    lines.append(f"{'conc':>5}{'out tok/s':>11}{'TTFT p50':>10}{'TPOT p50':>10}{'E2E p50':>9}")
    for r in ratios(a, b):
        if "concurrency" in r:
            lines.append(
                f"{r['concurrency']:>5}{r['output_throughput']:>10.2f}x{r['ttft_p50']:>9.2f}x{r['tpot_p50']:>9.2f}x{r['e2e_p50']:>8.2f}x"
            )
        else:
            lines.append(f"context-switch follow-up TTFT: {r['context_switch_followup_ttft']:.2f}x")
    return "\n".join(lines)


def plot(results: list[ServerResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server; must precede pyplot
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [
        ("output throughput (tok/s)", lambda r: r.output_throughput),
        ("TTFT median (ms)", lambda r: r.ttft_ms["median"]),
        ("TPOT median (ms/token)", lambda r: r.tpot_ms["median"]),
        ("end-to-end median (ms)", lambda r: r.e2e_ms["median"]),
    ]
    for ax, (title, fn) in zip(axes.flat, panels, strict=True):
        for res in results:
            xs = [r.concurrency for r in res.rounds]
            ax.plot(xs, [fn(r) for r in res.rounds], marker="o", label=res.name)
        ax.set_title(title)
        ax.set_xlabel("concurrent clients")
        ax.set_xscale("log", base=2)
        ticks = sorted({r.concurrency for res in results for r in res.rounds})
        ax.set_xticks(ticks, [str(t) for t in ticks])  # 1, 8, 16 rather than 2^0, 2^3, 2^4
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("clawlan bench")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_json(results: list[ServerResult], workload: Workload, path: Path) -> Path:
    doc: dict[str, Any] = {
        "workload": asdict(workload) | {"api_key": "***" if workload.api_key else None},
        "servers": [r.to_dict() for r in results],
        "definitions": {
            "ttft": "request sent to first streamed token",
            "tpot": "(e2e - ttft) / (output_tokens - 1), per request",
            "itl": "gap between successive streamed chunks",
            "e2e": "request sent to end of stream",
            "output_throughput": "output tokens of a round / round wall time",
        },
    }
    if len(results) > 1:
        doc["ratios"] = ratios(results[0], results[1])
    path.write_text(json.dumps(doc, indent=2, default=str))
    return path


# --- CLI ----------------------------------------------------------------------------------------


def parse_concurrency(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"--concurrency {text!r} must be comma-separated positive integers, e.g. 1,2,4,8")
    return values


def run(args: argparse.Namespace) -> int:
    import logging

    from tqdm import tqdm

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request would break the bar

    w = Workload(
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        requests_per_client=args.requests_per_client,
        concurrency=parse_concurrency(args.concurrency),
        endpoint=args.endpoint,
        model=args.model,
        api_key=args.api_key,
        seed=args.seed,
        switch_history_tokens=args.switch_history,
        switch_other_sessions=args.switch_sessions,
    )
    servers = [(args.name, args.url)]
    if args.compare:
        servers.append((args.compare_name, args.compare))
    bar = tqdm(total=0, unit="req", desc="bench", disable=args.quiet, leave=False)
    bench = Bench(w, on_request=lambda: bar.update(1))
    if args.no_switch:
        bar.total = len(servers) * sum(c * w.requests_per_client for c in w.concurrency)
    else:
        bar.total = bench.total_requests(len(servers))
    try:
        results = bench.run(servers, switch=not args.no_switch)
    finally:
        bar.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    j = write_json(results, w, out / f"bench-{stamp}.json")
    png = plot(results, out / f"bench-{stamp}.png")
    print(table(results))
    if len(results) > 1:
        print()
        print(ratio_table(results[0], results[1]))
    print(f"\nwrote {j} and {png}")
    return 1 if any(r.failed for res in results for r in res.rounds) else 0


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("bench", help="load-test an OpenAI-compatible server: TTFT, TPOT, ITL, throughput")
    sp.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (default %(default)s)")
    sp.add_argument("--name", default="clawlan", help="label for --url in tables and plots")
    sp.add_argument("--compare", metavar="URL", help="a second server run through the same workload")
    sp.add_argument("--compare-name", default="peer", help="label for --compare")
    sp.add_argument(
        "--concurrency", default="1,2,4,8", help="clients per round, comma-separated (default %(default)s)"
    )
    sp.add_argument("--requests-per-client", type=int, default=2, help="requests each client sends per round")
    sp.add_argument(
        "--input-tokens", type=int, default=250, help="prompt length, about (default %(default)s)"
    )
    sp.add_argument(
        "--output-tokens", type=int, default=64, help="tokens generated per request (default %(default)s)"
    )
    sp.add_argument("--endpoint", choices=["completions", "chat"], default="completions", help="API to call")
    sp.add_argument("--model", help="model id to send (default: the server's first /v1/models entry)")
    sp.add_argument("--api-key", help="Bearer key, if the server requires one")
    sp.add_argument(
        "--switch-history", type=int, default=1500, help="context-switch conversation length, tokens"
    )
    sp.add_argument("--switch-sessions", type=int, default=3, help="other sessions run between the two turns")
    sp.add_argument("--no-switch", action="store_true", help="skip the context-switch probe")
    sp.add_argument("--seed", type=int, default=0, help="seed for the prompt words")
    sp.add_argument(
        "--out", default="bench/results", help="folder for the JSON and PNG (default %(default)s)"
    )
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=run)
