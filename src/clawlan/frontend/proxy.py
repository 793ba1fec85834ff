"""Talk to the back end: open a request, retry it elsewhere while nothing has arrived yet.

Both the web chat and the local OpenAI endpoint go through :class:`Upstream`.
A failure before the first byte (connection refused, the server gone, a 503
while it loads) invalidates the address, asks discovery again and retries:
the user has seen nothing, so nothing is lost. A failure after that is
reported, never retried, because the tokens already shown cannot be unsent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from clawlan.discovery.browser import Backend, Discoverer

log = logging.getLogger(__name__)

RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class UpstreamError(Exception):
    """The back end failed. ``status`` is what the local endpoint returns; ``body`` an OpenAI error body."""

    def __init__(self, message: str, status: int = 502, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body or {"error": {"message": message, "type": "server_error", "param": None, "code": "backend_unavailable"}}


@dataclass
class Opened:
    backend: Backend
    response: httpx.Response
    first: bytes
    rest: AsyncIterator[bytes]

    async def chunks(self) -> AsyncIterator[bytes]:
        """Every body chunk as it arrives, unbuffered; the connection is closed at the end."""
        try:
            if self.first:
                yield self.first
            async for chunk in self.rest:
                yield chunk
        finally:
            await self.response.aclose()


def _error_message(raw: bytes, status: int) -> tuple[str, dict[str, Any] | None]:
    try:
        body = json.loads(raw)
        return str(body["error"]["message"]), body
    except (ValueError, KeyError, TypeError):
        return f"back end answered HTTP {status}", None


class Upstream:
    def __init__(
        self,
        discoverer: Discoverer,
        api_key: str | None = None,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 120.0,
        retries: int = 3,
        retry_window_s: float = 30.0,
    ) -> None:
        self.discoverer = discoverer
        self.api_key = api_key
        self.retries = retries
        self.retry_window_s = retry_window_s
        # No pooled keep-alive beyond a few sockets: a NUC talks to one server.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=8),
        )
        self._models: dict[str, str] = {}

    async def close(self) -> None:
        await self.client.aclose()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = dict(extra or {})
        if self.api_key:
            h["authorization"] = f"Bearer {self.api_key}"
        return h

    async def open(
        self, method: str, path: str, *, content: bytes | None = None, headers: dict[str, str] | None = None,
        retries: int | None = None,
    ) -> Opened:
        """Send and wait for the first body bytes, re-discovering and retrying on failure before them.

        ``retries=0`` answers at once: the web chat does its own waiting, visibly (model loading, back end down).
        """
        retries = self.retries if retries is None else retries
        start = time.monotonic()
        last = "no back end answered"
        attempt = 0
        while True:
            backend = await self.discoverer.aresolve()
            url = backend.base_url + path
            try:
                req = self.client.build_request(method, url, content=content, headers=self._headers(headers))
                resp = await self.client.send(req, stream=True)
            except RETRYABLE + (httpx.TimeoutException,) as exc:
                last = f"{backend.base_url}: {type(exc).__name__}"
                log.warning("back end %s failed before answering (%s); discovering again", backend.base_url, exc)
                self.discoverer.invalidate(backend.base_url)
            else:
                if resp.status_code == 503 and attempt < retries:
                    # Loading or full: wait as told (bounded) and try again; the client has seen nothing yet.
                    raw = await resp.aread()
                    await resp.aclose()
                    last = _error_message(raw, 503)[0]
                    delay = min(float(resp.headers.get("retry-after", "1") or 1), 2.0)
                    await asyncio.sleep(delay)
                else:
                    it = resp.aiter_raw()
                    try:
                        first = await it.__anext__()
                    except StopAsyncIteration:
                        first = b""
                    except RETRYABLE as exc:
                        await resp.aclose()
                        last = f"{backend.base_url}: {type(exc).__name__}"
                        self.discoverer.invalidate(backend.base_url)
                    else:
                        return Opened(backend, resp, first, it)
            attempt += 1
            if attempt > retries or time.monotonic() - start > self.retry_window_s:
                raise UpstreamError(f"back end unavailable ({last})", status=502)

    async def model_id(self, backend: Backend) -> str:
        """The model to name in requests: from the mDNS TXT record, else /v1/models, cached per address."""
        if backend.model:
            return backend.model
        if backend.base_url not in self._models:
            try:
                r = await self.client.get(backend.base_url + "/v1/models", headers=self._headers(), timeout=5.0)
                self._models[backend.base_url] = r.json()["data"][0]["id"]
            except Exception:  # noqa: BLE001 - the chat still works; the server picks its only model
                return "default"
        return self._models[backend.base_url]


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any] | None]:
    """Parse an OpenAI SSE stream: each ``data:`` JSON object, then None for ``[DONE]``."""
    buf = b""
    async for chunk in chunks:
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                yield None
                return
            try:
                yield json.loads(data)
            except ValueError:
                log.debug("ignoring a non-JSON SSE line: %r", data[:80])
