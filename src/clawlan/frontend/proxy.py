"""Talk to the back end: open a request, retry it elsewhere while nothing has arrived yet.

Both the web chat and the local OpenAI endpoint go through :class:`Upstream`.
A failure before the first byte (connection refused, the server gone, a 503
while it loads) invalidates the address, asks discovery again and retries:
the user has seen nothing, so nothing is lost. A failure after that is
reported, never retried, because the tokens already shown cannot be unsent.

Trust: an HTTPS back end is reached through a client that accepts exactly the
certificate whose fingerprint is pinned (discovery/trust.py), checked before
any request byte is sent; the box's API key goes only to such a verified
server, to loopback, or to the back end configured by URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from clawlan.discovery.browser import Backend, Discoverer
from clawlan.discovery.trust import TrustStore, fetch_certificate, fingerprint_of_der, pinned_context
from clawlan.errors import error_body

log = logging.getLogger(__name__)

# An SSE line longer than this is not an OpenAI stream (a misbehaving or hostile server): stop reading.
MAX_SSE_LINE = 1 << 20
RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class UpstreamError(Exception):
    """The back end failed. ``status`` is what the local endpoint returns; ``body`` an OpenAI error body."""

    def __init__(self, message: str, status: int = 502, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body or error_body(message, "backend_unavailable")


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
        trust: TrustStore | None = None,
    ) -> None:
        self.discoverer = discoverer
        self.api_key = api_key
        self.trust = trust or discoverer.trust
        self._timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        self._limits = httpx.Limits(max_connections=64, max_keepalive_connections=8)
        self._pinned: dict[str, tuple[str, httpx.AsyncClient]] = {}  # base URL -> (fingerprint, verified client)
        self.retries = retries
        self.retry_window_s = retry_window_s
        # No pooled keep-alive beyond a few sockets: a NUC talks to one server.
        self.client = httpx.AsyncClient(timeout=self._timeout, limits=self._limits)
        self._models: dict[str, str] = {}

    async def close(self) -> None:
        await self.client.aclose()
        for _, c in self._pinned.values():
            await c.aclose()
        self._pinned.clear()

    @staticmethod
    def key_allowed(backend: Backend) -> bool:
        """The box's key goes to a verified (pinned) server, to loopback, or to the configured URL; never elsewhere."""
        if backend.configured or backend.fingerprint:
            return True
        host = urlsplit(backend.base_url).hostname or ""
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"

    def _headers(self, backend: Backend, extra: dict[str, str] | None = None, *, add_key: bool = True) -> dict[str, str]:
        h = dict(extra or {})
        if add_key and self.api_key and self.key_allowed(backend):
            h["authorization"] = f"Bearer {self.api_key}"
        return h

    async def client_for(self, backend: Backend) -> httpx.AsyncClient:
        """The client for this back end; for HTTPS one pinned to its certificate, checked before use."""
        if not backend.base_url.startswith("https://"):
            if backend.how == "mDNS":
                raise UpstreamError(f"{backend.base_url}: plain HTTP from mDNS is never used", status=502)
            return self.client
        cached = self._pinned.get(backend.base_url)
        if cached is not None and (not backend.fingerprint or cached[0] == backend.fingerprint):
            return cached[1]
        parts = urlsplit(backend.base_url)
        der = await asyncio.to_thread(fetch_certificate, parts.hostname or "", parts.port or 443)
        seen = fingerprint_of_der(der)
        if backend.fingerprint and seen != backend.fingerprint:
            self.discoverer.mismatch(backend.base_url, backend.fingerprint, seen)
            raise UpstreamError(f"{backend.base_url}: TLS key does not match the pinned fingerprint", status=502)
        if not backend.fingerprint and not self.trust.trusted(seen):
            # A configured https:// URL with an unpinned key: trust what the system's CAs say of it.
            return self.client
        client = httpx.AsyncClient(timeout=self._timeout, limits=self._limits, verify=pinned_context(der))
        self._pinned[backend.base_url] = (seen, client)
        if cached is not None:
            await cached[1].aclose()
        return client

    def forget(self, base_url: str) -> None:
        """Drop a cached pinned client (its server failed): the next use checks the certificate again."""
        cached = self._pinned.pop(base_url.rstrip("/"), None)
        if cached is not None:
            task = asyncio.ensure_future(cached[1].aclose())
            task.add_done_callback(lambda t: t.exception())

    async def open(
        self, method: str, path: str, *, content: bytes | None = None, headers: dict[str, str] | None = None,
        add_key: bool = True, retries: int | None = None,
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
                client = await self.client_for(backend)
                pinned = self._pinned.get(backend.base_url)
                if pinned is not None and client is pinned[1] and not backend.fingerprint:
                    # A configured https:// URL whose key is pinned: say so (the page shows "verified").
                    backend = dataclasses.replace(backend, fingerprint=pinned[0])
                req = client.build_request(method, url, content=content,
                                           headers=self._headers(backend, headers, add_key=add_key))
                resp = await client.send(req, stream=True)
            except UpstreamError as exc:
                last = exc.message
                self.discoverer.invalidate(backend.base_url)
            except (*RETRYABLE, httpx.TimeoutException, OSError) as exc:
                last = f"{backend.base_url}: {type(exc).__name__}"
                log.warning("back end %s failed before answering (%s); discovering again", backend.base_url, exc)
                self.forget(backend.base_url)
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
                client = await self.client_for(backend)
                r = await client.get(backend.base_url + "/v1/models", headers=self._headers(backend), timeout=5.0)
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
        if len(buf) > MAX_SSE_LINE:
            # What is left is one unfinished line: a real stream never sends one this long.
            raise UpstreamError(f"the back end sent an SSE line over {MAX_SSE_LINE} bytes")
