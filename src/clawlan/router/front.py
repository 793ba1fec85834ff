"""The router's own door: a thin HTTP(S) pass-through in front of vllm-router.

vllm-router decides everything about routing; this only adds what it lacks
and a LAN needs:

* HTTPS with the router's own pinned identity (web/identity.py), so a
  front end that found the router by mDNS can verify it (TXT ``fp``) exactly
  as it verifies a model server. vllm-router itself listens on loopback only.
* A stream cut mid-answer (a node SIGKILLed) ends with one OpenAI-style SSE
  error event instead of a bare connection reset, so OpenAI clients raise an
  ``APIError`` and the chat page says what happened and keeps the text.
* Bodies are capped (413) and must arrive in time (408), as on a server;
  only the API and read-only status paths are passed, so ``/add_worker`` and
  the other worker-management calls are not open to the LAN.

Events of a stream are forwarded as they arrive; only an event's unfinished
tail waits for its end, so a cut never leaves half a JSON object before the
error event. A non-stream answer is one JSON document: it is read whole, so a
failure anywhere in it becomes a 502 error body rather than a truncated one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from clawlan.errors import ConfigError, error_body
from clawlan.web.identity import Identity
from clawlan.web.limits import BodyLimitMiddleware, guarded_protocol

log = logging.getLogger(__name__)

# Per connection, never forwarded (RFC 9110 7.6.1); the length is recomputed; the encoding is ours to choose.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding",
})  # fmt: skip
# uvicorn writes its own.
OWN_HEADERS = frozenset({"date", "server"})
# What the LAN may reach: the API and read-only status. Worker management stays on vllm-router's loopback port.
OPEN_PATHS = ("/health", "/liveness", "/readiness", "/list_workers", "/get_server_info", "/get_model_info")
MAX_PARTIAL_EVENT = 1 << 20  # an SSE event longer than this is passed on unfinished (no real event is)
DEFAULT_MAX_BODY = 4 * 1024 * 1024  # the server's server.max_body_bytes default
DEFAULT_BODY_TIMEOUT_S = 30.0  # the server's server.body_timeout_ms default
DEFAULT_HEADER_TIMEOUT_S = 10.0  # the server's server.header_timeout_ms default


def error_event(message: str, code: str = "upstream_stream_lost") -> bytes:
    """One SSE event the ``openai`` client turns into ``APIError`` (it raises on a ``data`` with ``error``)."""
    return b"data: " + json.dumps(error_body(message, code)).encode() + b"\n\n"


def allowed(path: str) -> bool:
    # Dot segments would be resolved on the way up (httpx normalises them): /v1/../add_worker is refused here.
    if any(seg in (".", "..") for seg in path.split("/")):
        return False
    return path.startswith("/v1/") or path in OPEN_PATHS


def event_split(pending: bytes) -> int:
    """Where the last complete SSE event in ``pending`` ends (0: none yet)."""
    return max(pending.rfind(b"\n\n") + 2 if b"\n\n" in pending else 0,
               pending.rfind(b"\r\n\r\n") + 4 if b"\r\n\r\n" in pending else 0)


class Front:
    """The Starlette app; ``upstream`` is vllm-router's loopback URL."""

    def __init__(self, upstream: str, *, max_body_bytes: int = DEFAULT_MAX_BODY,
                 body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> None:
        self.upstream = upstream.rstrip("/")
        self.client: httpx.AsyncClient | None = None
        self.routes = Starlette(
            routes=[Route("/health", self.health, methods=["GET"]),
                    Route("/{path:path}", self.forward, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])],
            lifespan=self._lifespan,
            exception_handlers={Exception: self._internal},
        )  # fmt: skip
        # The same door as a server's (web/limits.py): the body arrives whole, within its cap and deadline,
        # before a request is forwarded, so a slow or huge sender never holds a connection to vllm-router.
        self.app = BodyLimitMiddleware(self.routes, max_body_bytes, body_timeout_s, max_name="--max-body-bytes",
                                       timeout_name="the router's body deadline", who="this router")  # fmt: skip

    @staticmethod
    async def _internal(request: Request, exc: Exception) -> Response:
        # A bug here must still answer in the shape clients parse, and say where it happened.
        log.error("router front failed on %s", request.url.path, exc_info=exc)
        return JSONResponse(error_body(f"the router failed: {type(exc).__name__}", "internal_error"), status_code=500)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # No read deadline: a non-stream answer arrives only when generated (a long prefill takes minutes on
        # a CPU box); the caller keeps its own timeout, and its disconnect closes ours.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=5.0, write=30.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )
        try:
            yield
        finally:
            await self.client.aclose()

    async def health(self, request: Request) -> Response:
        """Ready when vllm-router has a healthy worker; its own /health says 200 with none."""
        assert self.client is not None
        try:
            r = await self.client.get(self.upstream + "/readiness", timeout=5.0)
            detail = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        except (httpx.HTTPError, ValueError) as exc:
            return JSONResponse(error_body(f"the router's vllm-router does not answer ({type(exc).__name__})",
                                           "router_unavailable"), status_code=503)
        if r.status_code == 200:
            return JSONResponse({"status": "ok", "role": "router", "router": detail})
        # "loading" (the front end waits and retries): nodes join as their models load or they come back.
        reason = detail.get("reason") if isinstance(detail, dict) else None
        body = {"status": "loading", "role": "router",
                **error_body(f"no model server is in the router's pool yet ({reason or 'not ready'})", "no_workers")}
        return JSONResponse(body, status_code=503, headers={"retry-after": "2"})

    async def forward(self, request: Request) -> Response:
        assert self.client is not None
        path = request.url.path
        if not allowed(path):
            return JSONResponse(error_body(f"{path} is not served here", "not_found", "invalid_request_error"),
                                status_code=404)
        body = await request.body()  # already read and capped by BodyLimitMiddleware
        raw = request.scope.get("raw_path") or path.encode()
        query = request.scope.get("query_string") or b""
        url = self.upstream + raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        # Headers the client named in Connection are for this hop only, like the standard hop-by-hop ones.
        named = {t.strip().lower() for t in request.headers.get("connection", "").split(",") if t.strip()}
        drop = HOP_BY_HOP | named
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in drop]
        headers.append((b"accept-encoding", b"identity"))  # loopback: nothing to save, and SSE stays editable
        req = self.client.build_request(request.method, url, headers=headers, content=body)
        # A non-stream answer comes only when it is generated: if the caller leaves first, drop the request
        # upstream too (vllm-router then closes the node's connection, and the node stops generating).
        exchange = asyncio.ensure_future(self._exchange(req, path))
        gone = asyncio.ensure_future(self._client_gone(request))
        try:
            await asyncio.wait({exchange, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not exchange.done():
            exchange.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await exchange
            log.info("the caller of %s left before the answer; its request upstream was dropped", path)
            return Response(status_code=499)  # nobody reads it
        return exchange.result()

    @staticmethod
    async def _client_gone(request: Request) -> None:
        # The body has been read, so the next ASGI message is the disconnect (uvicorn sends nothing else).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def _exchange(self, req: httpx.Request, path: str) -> Response:
        """Send ``req`` upstream; a stream is handed on as it comes, any other answer is read whole."""
        assert self.client is not None
        try:
            resp = await self.client.send(req, stream=True)
        except httpx.HTTPError as exc:
            log.warning("vllm-router failed before answering %s: %r", path, exc)
            return JSONResponse(error_body(f"the router's vllm-router did not answer ({type(exc).__name__})",
                                           "router_unavailable"), status_code=502)
        out_headers = {k: v for k, v in resp.headers.multi_items() if k.lower() not in HOP_BY_HOP | OWN_HEADERS}
        ctype = resp.headers.get("content-type", "")
        if resp.status_code < 400 and ctype.startswith("text/event-stream"):
            return StreamingResponse(self._events(resp, path), status_code=resp.status_code, headers=out_headers)
        try:
            content = await resp.aread()
        except httpx.HTTPError as exc:
            log.warning("the answer to %s broke off: %r", path, exc)
            return JSONResponse(error_body(f"the model server's answer broke off ({type(exc).__name__}); "
                                           "nothing of it was delivered", "upstream_lost"), status_code=502)
        finally:
            await resp.aclose()
        if resp.status_code >= 400 and not ctype.startswith("application/json"):
            # vllm-router's own refusals are plain text ("No available workers ..."): clients expect OpenAI JSON.
            text = content.decode("utf-8", "replace").strip()[:500] or f"HTTP {resp.status_code}"
            keep = {k: v for k, v in out_headers.items() if k.lower() in ("retry-after", "x-request-id")}
            return JSONResponse(error_body(text, "router_error"), status_code=resp.status_code, headers=keep)
        return Response(content, status_code=resp.status_code, headers=out_headers)

    async def _events(self, resp: httpx.Response, path: str) -> AsyncIterator[bytes]:
        pending = b""
        try:
            async for chunk in resp.aiter_raw():
                pending += chunk
                cut = len(pending) if len(pending) > MAX_PARTIAL_EVENT else event_split(pending)
                if cut:
                    yield pending[:cut]
                    pending = pending[cut:]
            if pending:
                yield pending
        except httpx.HTTPError as exc:
            # The node died mid-answer and vllm-router closed our connection with the body unfinished.
            # The unfinished event is dropped (half a JSON object helps nobody); the error says why.
            log.warning("stream on %s broke off: %r", path, exc)
            yield error_event("a model server behind the router stopped mid-answer; this answer is incomplete")
        finally:
            await resp.aclose()


class FrontServer:
    """``Front`` on uvicorn on a background thread, over a socket bound by the caller (port 0 works)."""

    def __init__(self, front: Front, sock: Any, identity: Identity | None, drain_s: float = 3.0,
                 header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S) -> None:  # fmt: skip
        self.front = front
        self.sock = sock
        self.identity = identity
        config = uvicorn.Config(
            front.app, log_level="warning", access_log=False, lifespan="on",
            http=guarded_protocol(header_timeout_s),  # slow-loris: a deadline for request heads, as on a server
            ssl_certfile=str(identity.cert) if identity else None, ssl_keyfile=str(identity.key) if identity else None,
            # On stop, running streams get this long to finish before they are cut.
            timeout_graceful_shutdown=drain_s,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 30.0) -> FrontServer:
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="router-front", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:  # set by uvicorn from its own loop once it accepts
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError("the router's HTTP front did not start (see the log above)")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.sock.close()
