"""Limits at the door: what a connection may cost before a handler sees its request.

Two guards, both below the routes so every endpoint gets them:

- :class:`BodyLimitMiddleware` reads a request's whole body before the app
  runs, counting bytes as they arrive: a declared or streamed body past
  ``server.max_body_bytes`` gets 413 at once (never buffered whole), one that
  does not arrive within ``server.body_timeout_ms`` gets 408. A handler thus
  starts (and counts against ``max_connections``) only once its body is here,
  so slow senders hold a socket, never a slot.
- :func:`guarded_protocol` is uvicorn's h11 protocol with a header deadline:
  a connection that has not sent a complete request head within
  ``server.header_timeout_ms`` (from connect, or from its previous response)
  is closed. uvicorn itself only times out idle keep-alive connections.

After a 413 uvicorn keeps reading and discarding the rest of the body (its
own lingering close), so the client reads the answer instead of a reset.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from clawlan.errors import BodyTimeout, PayloadTooLarge, RequestError

Scope = dict[str, Any]
BODY_METHODS = ("POST", "PUT", "PATCH")


async def send_error(send: Any, exc: RequestError, close: bool = False) -> None:
    """An OpenAI-style JSON error as a whole response, from ASGI middleware."""
    body = json.dumps(exc.to_body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Reads the body up front within a byte cap and a deadline, then replays it to the app."""

    def __init__(self, app: Any, max_bytes: int | Callable[[str], int], timeout_s: float, *,
                 max_name: str = "server.max_body_bytes", timeout_name: str = "server.body_timeout_ms",
                 who: str = "this server") -> None:  # fmt: skip
        self.app = app
        # One cap, or one per path (a front end's uploads may be larger than its JSON bodies).
        self.cap_for = max_bytes if callable(max_bytes) else (lambda path, cap=max_bytes: cap)
        self.timeout_s = timeout_s
        # The setting or flag a refused client's administrator would change, named in the error.
        self.max_name = max_name
        self.timeout_name = timeout_name
        self.who = who

    def _too_large(self, size: str, cap: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is {size}; {self.who} accepts at most {cap} bytes ({self.max_name})")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await send_error(send, self._too_large(f"{int(declared)} bytes", cap))
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return  # the client left before its body arrived: nothing to answer
                    chunk = msg.get("body", b"")
                    size += len(chunk)
                    if size > cap:
                        # uvicorn discards the rest (bounded by the header deadline that follows).
                        await send_error(send, self._too_large(f"over {cap} bytes", cap))
                        return
                    chunks.append(chunk)
                    if not msg.get("more_body", False):
                        break
        except TimeoutError:
            err = BodyTimeout(
                f"the request body did not arrive within {self.timeout_s * 1000:.0f} ms "
                f"({size} bytes came; {self.timeout_name})"
            )
            await send_error(send, err, close=True)
            return
        body = b"".join(chunks)
        chunks.clear()
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the real stream: handlers watch it for a disconnect

        await self.app(scope, replay, send)


def guarded_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections that do not send a request head in time."""

    class HeaderDeadlineProtocol(H11Protocol):
        _heads = 0  # request heads seen on this connection
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(header_timeout_s, self._expired, self._heads)

        def _expired(self, heads: int) -> None:
            self._head_timer = None
            waiting = self.cycle is None or self.cycle.response_complete
            if self._heads == heads and waiting and not self.transport.is_closing():
                self.transport.close()  # no complete request head in time: a slow or idle sender

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a new request head arrived
                self._heads += 1

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's head is due within the deadline too

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

    return HeaderDeadlineProtocol
