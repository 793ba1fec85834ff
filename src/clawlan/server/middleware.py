"""ASGI middleware: API keys, network byte counters and a log line per refusal.

Both are plain ASGI (not Starlette's BaseHTTPMiddleware) so streamed
responses pass through unbuffered.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from clawlan.errors import AuthenticationError

Scope = dict[str, Any]

OPEN_PATHS = ("/health",)


class ApiKeyMiddleware:
    """With keys configured, every path but /health needs ``Authorization: Bearer KEY``."""

    def __init__(self, app: Any, keys: list[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    def _valid(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        token = token.strip()
        # Compare with every key, always, so timing reveals neither the key nor which one matched.
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(token, key)
        return ok

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        if self._valid(header):
            await self.app(scope, receive, send)
            return
        err = AuthenticationError(
            "missing or invalid API key: send 'Authorization: Bearer KEY' with a key from server.api_keys"
        )
        body = json.dumps(err.to_body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class ByteCounterMiddleware:
    """Counts request and response body bytes for the network-throughput metrics."""

    def __init__(self, app: Any, metrics: Any) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_receive() -> Any:
            msg = await receive()
            if msg["type"] == "http.request":
                self.metrics.bytes_in.inc(len(msg.get("body", b"")))
            return msg

        async def counting_send(msg: Any) -> None:
            if msg["type"] == "http.response.body":
                self.metrics.bytes_out.inc(len(msg.get("body", b"")))
            await send(msg)

        await self.app(scope, counting_receive, counting_send)


access = logging.getLogger("clawlan.server.access")


def _client(scope: Scope | None) -> str:
    client = (scope or {}).get("client")
    return f"{client[0]}:{client[1]}" if client else "?"


def log_cancelled(scope: Scope | None, endpoint: str) -> None:
    """One line for a request its client gave up on (499): the slot it held is free again."""
    access.info("%s request cancelled by the client (499) from %s", endpoint, _client(scope))


class RefusalLogMiddleware:
    """One log line for every refused request (4xx), with the reason the client was given.

    Successful requests are not logged (the metrics count them); a refusal is what an admin
    looks for when a client says "it doesn't work".
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        reason = b""

        async def watching_send(msg: Any) -> None:
            nonlocal status, reason
            if msg["type"] == "http.response.start":
                status = msg["status"]
            elif msg["type"] == "http.response.body" and 400 <= status < 500 and not reason:
                reason = msg.get("body", b"")[:2000]
            await send(msg)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            if 400 <= status < 500 and status != 499:  # 499s have their own line (log_cancelled)
                access.info(
                    "%s %s refused %d from %s: %s", scope["method"], scope["path"], status, _client(scope), _reason(reason)
                )


def _reason(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return body[:120].decode("utf-8", "replace") or "-"
