"""Rounds of concurrent clients against one or more servers, alternating server by server.

A round runs ``concurrency`` clients, each sending ``requests_per_client`` requests back to
back. The context-switch probe then gives a long conversation a follow-up turn after other
sessions ran, which is where a prefix cache (or its absence) shows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from clawlan.errors import ClawlanError, ConfigError
from clawlan.ops.bench.request import Prompt, RequestResult, request_body, stream_request
from clawlan.ops.bench.results import RoundStats, ServerResult, SwitchStats
from clawlan.ops.bench.workload import PromptMaker, Workload


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
        path, body = request_body(self.w, model, prompt, max_tokens)
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
