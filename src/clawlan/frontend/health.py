"""Is the back end up, still loading its model, or down? A cheap probe of its ``/health``.

The chat page's status chip shows the answer (green, amber, red), and a chat
answer that got a 503 asks it whether to wait (the model is loading) or give
up (loading failed). Results are kept for a second or two so a page polling
every few seconds costs the back end almost nothing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Health:
    state: str  # "ok", "loading", "error" (the model failed to load) or "down" (no answer)
    model: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "model": self.model, "detail": self.detail}


def parse_health(status: int, body: Any) -> Health:
    """Read a back end's /health answer (clawlan's, or llama-server's, which has the same shape)."""
    body = body if isinstance(body, dict) else {}
    if status == 200:
        return Health("ok", model=body.get("model"))
    err = body.get("error")
    if body.get("status") == "loading" or (isinstance(err, dict) and "load" in str(err.get("message", "")).lower()):
        return Health("loading")
    if status == 503:
        return Health("error", detail=str(body.get("error") or "the back end reports an error"))
    # A server without /health (404, 401) still answered: it is up.
    return Health("ok")


class HealthProbe:
    """Asks through the caller's client (the one its chats use, so TLS trust and pooling are the same)."""

    def __init__(self, ttl_s: float = 1.5, connect_s: float = 1.0, read_s: float = 3.0) -> None:
        self.ttl_s = ttl_s
        # A refused or unanswered connection is "down" within a second; a slow answer is only slow.
        self.timeout = httpx.Timeout(read_s, connect=connect_s)
        self._cache: dict[str, tuple[float, Health]] = {}
        self._lock = asyncio.Lock()

    async def check(self, base_url: str, client: httpx.AsyncClient, *, fresh: bool = False) -> Health:
        async with self._lock:  # one probe at a time: a dozen open pages must not become a dozen probes
            hit = self._cache.get(base_url)
            if hit and not fresh and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]
            try:
                r = await client.get(base_url + "/health", timeout=self.timeout)
                try:
                    body = r.json()
                except ValueError:
                    body = None
                h = parse_health(r.status_code, body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                h = Health("down", detail=type(exc).__name__)
            except httpx.HTTPError as exc:
                # Connected but slow or odd (a busy server on a busy box): not "down"; keep what was known.
                h = hit[1] if hit else Health("ok", detail=f"slow to answer /health ({type(exc).__name__})")
            self._cache[base_url] = (time.monotonic(), h)
            return h

    def forget(self, base_url: str) -> None:
        self._cache.pop(base_url, None)
