"""One streamed request, timed event by event as the client sees it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from clawlan.ops.bench.workload import Workload


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


Prompt = str | list[dict[str, str]]  # text, or chat messages (a multi-turn conversation)


def request_body(w: Workload, model: str, prompt: Prompt, max_tokens: int) -> tuple[str, dict[str, Any]]:
    """The path and JSON body of one streamed, greedy request of exactly ``max_tokens`` tokens."""
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
