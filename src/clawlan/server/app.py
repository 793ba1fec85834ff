"""The OpenAI-compatible HTTP service.

The path of a chat request: API-key middleware → body read within its byte
cap and deadline (``server.limits``) → admission (max_connections) → on a
worker thread: body validation, schema → grammar, chat template, tokenize →
context check → engine ``submit`` → events → JSON or SSE chunks.
``timeout_ms`` bounds the wait for each next event (queueing included), never
the whole answer. Parsing, grammar building, rendering and tokenizing run off
the event loop, so a large request never stalls ``/health`` or other streams.

Here: admission, the event loop side of generation (JSON or SSE). Beside it:
``server.shaping`` (body → prompt tokens and sampling), ``server.logprobs``
(their response shapes) and ``server.admin`` (health, load, metrics, models).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from clawlan import __version__
from clawlan.config import Settings
from clawlan.engine.request import Event, TokenLogprob
from clawlan.engine.request import Request as EngineRequest
from clawlan.errors import Overloaded, RequestError, RequestTimeout, error_body
from clawlan.server.admin import Admin
from clawlan.server.backend import Backend
from clawlan.server.logprobs import CompletionLogprobs, chat_content
from clawlan.server.metrics import Metrics
from clawlan.server.middleware import (
    ApiKeyMiddleware,
    ByteCounterMiddleware,
    RefusalLogMiddleware,
    log_cancelled,
)
from clawlan.server.shaping import Shaper
from clawlan.tools.plan import ToolPlan
from clawlan.web.limits import BodyLimitMiddleware

log = logging.getLogger(__name__)
FINGERPRINT = f"clawlan-{__version__}"


def error_response(exc: RequestError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=headers)


class Service:
    """Request handling around one :class:`Backend`."""

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self.metrics = Metrics(backend)
        self.shaper = Shaper(settings, backend)
        self.admin = Admin(backend, self.metrics)
        self.in_flight = 0

    # -- helpers ------------------------------------------------------------
    def _check_ready(self) -> None:
        if not self.backend.ready:
            why = self.backend.error or "the model is still loading; retry in a few seconds"
            raise Overloaded(why, code="model_not_ready")

    @contextlib.contextmanager
    def _admit(self) -> Any:
        if self.in_flight >= self.settings.backend.max_connections:
            raise Overloaded(
                f"the server is at max_connections ({self.settings.backend.max_connections} requests at once); "
                "retry shortly"
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def _events(self, req: EngineRequest) -> AsyncIterator[Event]:
        """The engine's events, each within timeout_ms; metrics on the way."""
        timeout = self.settings.backend.timeout_ms / 1000.0
        total = self.settings.server.max_request_ms
        start = time.perf_counter()
        last = None
        it = self.backend.engine.submit(req).__aiter__()
        try:
            while True:
                wait = timeout
                if total:
                    wait = min(wait, max(0.001, total / 1000.0 - (time.perf_counter() - start)))
                try:
                    # asyncio.timeout, not wait_for: no task per token on the hot path.
                    async with asyncio.timeout(wait):
                        ev = await anext(it)
                except TimeoutError:
                    raise RequestTimeout(
                        f"no progress for {wait * 1000:.0f} ms (timeout_ms={self.settings.backend.timeout_ms}); "
                        "the server is busy: retry, or raise backend.timeout_ms"
                    ) from None
                now = time.perf_counter()
                if ev.token_ids or ev.text:
                    if last is None:
                        self.metrics.ttft.observe(now - start)
                    else:
                        self.metrics.itl.observe(now - last)
                    last = now
                if ev.finish_reason is not None:
                    self.metrics.e2e.observe(now - start)
                    self.metrics.finished.labels(ev.finish_reason).inc()
                    self.metrics.prompt_tokens.inc(ev.prompt_tokens)
                    self.metrics.generation_tokens.inc(ev.completion_tokens)
                    self.metrics.prefix_hits.inc(ev.cached_tokens)
                    self.metrics.prefix_queries.inc(ev.prompt_tokens)
                yield ev
                if ev.finish_reason is not None:
                    return
        finally:
            await it.aclose()  # cancels the engine request if it did not finish

    @staticmethod
    def _usage(ev: Event) -> dict[str, Any]:
        return {
            "prompt_tokens": ev.prompt_tokens,
            "completion_tokens": ev.completion_tokens,
            "total_tokens": ev.prompt_tokens + ev.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": ev.cached_tokens},
        }

    # -- endpoints ------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def render(self, request: Request) -> Response:
        """vLLM's render route: the prompt's token ids, exactly as a generation would see them, and nothing
        generated. vllm-router's cache_aware policy asks a worker for these before each chat request and
        matches them against what each node has served; without it every decision falls back to load."""
        chat = request.url.path.startswith("/v1/chat/")
        try:
            self._check_ready()
            raw = await request.body()
            _, _, tokens = await asyncio.to_thread(self.shaper.prepare, raw, chat)
        except RequestError as exc:
            return error_response(exc, {"Retry-After": "1"} if exc.status_code == 503 else None)
        return JSONResponse({"token_ids": tokens})

    async def _generate(self, request: Request, chat: bool) -> Response:
        endpoint = "chat" if chat else "completions"
        try:
            self._check_ready()
            # The whole body is here already (BodyLimitMiddleware): a slow sender never holds a slot.
            raw = await request.body()
            admit = self._admit()
            admit.__enter__()
        except RequestError as exc:
            self.metrics.requests.labels(endpoint, str(exc.status_code)).inc()
            return error_response(exc, {"Retry-After": "1"} if exc.status_code == 503 else None)
        handed_over = False
        try:
            body, plan, tokens = await asyncio.to_thread(self.shaper.prepare, raw, chat)
            params = self.shaper.params(body, body.output_limit, len(tokens))
            if plan is not None and plan.grammar:
                params.grammar = plan.grammar
                params.grammar_triggers = list(plan.grammar_triggers)
            req = EngineRequest(tokens, params)
            extra = Shaper.warnings(plan, endpoint)
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                handed_over = True
                return StreamingResponse(
                    self._stream(req, body, chat, include_usage, admit, endpoint, plan, request.scope),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **extra},
                )
            response = await self._complete(request, req, body, chat, endpoint, plan)
            response.headers.update(extra)
            return response
        except RequestError as exc:
            self.metrics.requests.labels(endpoint, str(exc.status_code)).inc()
            return error_response(exc)
        finally:
            if not handed_over:
                admit.__exit__(None, None, None)

    async def _complete(
        self, request: Request, req: EngineRequest, body: Any, chat: bool, endpoint: str, plan: ToolPlan | None
    ) -> Response:
        parser = plan.new_parser() if plan else None

        lps: list[TokenLogprob] = []

        async def collect() -> tuple[str, Event]:
            parts = []
            last = None
            async for ev in self._events(req):
                last = ev
                if parser is not None and parser.stop_requested:
                    continue  # the call is complete and being repeated: ignore the tail
                parts.append(ev.text)
                lps.extend(ev.logprobs or ())
                if parser is not None and ev.text:
                    parser.feed(ev.text)
                    if parser.stop_requested:
                        self.backend.engine.cancel(req.request_id)
            assert last is not None
            return "".join(parts), last

        async def disconnected() -> None:
            while True:
                msg = await request.receive()
                if msg["type"] == "http.disconnect":
                    return

        gen = asyncio.ensure_future(collect())
        watch = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({gen, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if not gen.done():  # the client went away: stop generating within one engine step
            gen.cancel()
            with contextlib.suppress(asyncio.CancelledError, RequestError):
                await gen
            self.metrics.requests.labels(endpoint, "499").inc()
            log_cancelled(request.scope, endpoint)
            return Response(status_code=499)
        text, last = gen.result()  # re-raises RequestTimeout
        if last.finish_reason == "cancelled" and parser is not None and parser.stop_requested:
            last.finish_reason = "stop"  # we ended it: the tool call was complete
        if last.finish_reason == "error":
            self.metrics.requests.labels(endpoint, "500").inc()
            return JSONResponse(
                error_body(last.error or "generation failed", "engine_error"),
                status_code=500,
            )
        self.metrics.requests.labels(endpoint, "200").inc()
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        finish = "length" if last.finish_reason == "length" else "stop"
        want = req.params.logprobs is not None
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
            if parser is not None:
                parser.finish()
                message["content"] = parser.content
                if parser.tool_calls and not plan.drop_calls:
                    message["tool_calls"] = [c.to_openai() for c in parser.tool_calls]
                    finish = ToolPlan.finish_reason(parser, finish)
            logprobs = {"content": chat_content(lps, self.backend.model.piece), "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": logprobs if want else None, "finish_reason": finish}
            obj = "chat.completion"
        else:
            logprobs = CompletionLogprobs(self.backend.model.piece).block(lps) if want else None
            choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
            obj = "text_completion"
        return JSONResponse(
            {
                "id": rid,
                "object": obj,
                "created": created,
                "model": self.backend.model_id,
                "system_fingerprint": FINGERPRINT,
                "choices": [choice],
                "usage": self._usage(last),
            }
        )

    async def _stream(
        self,
        req: EngineRequest,
        body: Any,
        chat: bool,
        include_usage: bool,
        admit: Any,
        endpoint: str,
        plan: ToolPlan | None = None,
        scope: dict[str, Any] | None = None,
    ) -> AsyncIterator[str]:
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        model = self.backend.model_id
        obj = "chat.completion.chunk" if chat else "text_completion"

        want = req.params.logprobs is not None
        held: list[TokenLogprob] = []  # tokens whose text no chunk has carried yet (held back)
        legacy = CompletionLogprobs(self.backend.model.piece)

        def chunk(delta: Any, finish: str | None, usage: Any = None, choices: bool = True) -> str:
            # a chunk carries the log probabilities of the tokens since the last chunk
            lp = None
            if want and choices:
                if chat:
                    lp = {"content": chat_content(held, self.backend.model.piece), "refusal": None}
                else:
                    lp = legacy.block(held)
                held.clear()
            if chat:
                choice = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta, "logprobs": lp, "finish_reason": finish}
            out: dict[str, Any] = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": model,
                "system_fingerprint": FINGERPRINT,
                "choices": [choice] if choices else [],
            }
            if include_usage:
                out["usage"] = usage
            return "data: " + json.dumps(out, ensure_ascii=False) + "\n\n"

        parser = plan.new_parser() if plan else None
        drop = plan is not None and plan.drop_calls

        def deltas(text: str, final: bool = False) -> list[Any]:
            """Content (or completion text) deltas, with tool calls split out when tools are on."""
            if not chat:
                return [text] if text else []
            if parser is None:
                return [{"content": text}] if text else []
            out = parser.feed(text) if text else []
            out = out + parser.finish() if final else out
            return [d for d in out if "tool_calls" not in d] if drop else out

        status = "200"
        try:
            if chat:
                yield chunk({"role": "assistant", "content": ""}, None)
            async for ev in self._events(req):
                if parser is not None and parser.stop_requested:
                    ev.text = ""  # the call is complete and being repeated: drop the tail
                    ev.logprobs = None
                held.extend(ev.logprobs or ())
                if ev.finish_reason is None:
                    for d in deltas(ev.text):
                        yield chunk(d, None)
                    if parser is not None and parser.stop_requested:
                        self.backend.engine.cancel(req.request_id)
                    continue
                if ev.finish_reason == "error":
                    status = "500"
                    err = error_body(ev.error or "generation failed", "engine_error")
                    yield "data: " + json.dumps(err) + "\n\n"
                    return
                for d in deltas(ev.text, final=True):
                    yield chunk(d, None)
                finish = "length" if ev.finish_reason == "length" else "stop"
                finish = finish if drop else ToolPlan.finish_reason(parser, finish)
                yield chunk({} if chat else "", finish)
                if include_usage:
                    yield chunk(None, None, usage=self._usage(ev), choices=False)
                yield "data: [DONE]\n\n"
        except RequestError as exc:
            status = str(exc.status_code)
            yield "data: " + json.dumps(exc.to_body()) + "\n\n"
        except asyncio.CancelledError:
            status = "499"  # the client disconnected; _events' cleanup cancelled the request
            log_cancelled(scope, endpoint)  # whose stream: the access log names the caller
            raise
        finally:
            self.metrics.requests.labels(endpoint, status).inc()
            admit.__exit__(None, None, None)


async def http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 in OpenAI's error shape rather than Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "method_not_allowed"
    body = error_body(f"{request.method} {request.url.path}: {exc.detail}", code, "invalid_request_error")
    return JSONResponse(body, status_code=exc.status_code)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    body = error_body(f"internal error: {type(exc).__name__}", "internal_error")
    return JSONResponse(body, status_code=500)


def create_app(settings: Settings, backend: Backend | None = None, load: bool = True) -> Starlette:
    """The ASGI app. With ``load`` the model loads on a thread once the server starts."""
    backend = backend or Backend(settings)
    svc = Service(settings, backend)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if load and not backend.ready:
            threading.Thread(target=backend.load, name="clawlan-load", daemon=True).start()
        try:
            yield
        finally:
            backend.close()

    s = settings.server
    middleware = [Middleware(RefusalLogMiddleware), Middleware(ByteCounterMiddleware, metrics=svc.metrics)]
    if settings.server.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.server.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    middleware.append(Middleware(ApiKeyMiddleware, keys=settings.server.api_keys))
    middleware.append(Middleware(BodyLimitMiddleware, max_bytes=s.max_body_bytes, timeout_s=s.body_timeout_ms / 1000.0))
    app = Starlette(
        routes=[
            Route("/health", svc.admin.health),
            Route("/metrics", svc.admin.metrics_endpoint),
            Route("/get_load", svc.admin.load),
            Route("/v1/models", svc.admin.models),
            Route("/v1/chat/completions", svc.chat, methods=["POST"]),
            Route("/v1/completions", svc.completions, methods=["POST"]),
            Route("/v1/chat/completions/render", svc.render, methods=["POST"]),
            Route("/v1/completions/render", svc.render, methods=["POST"]),
        ],
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
    app.state.service = svc
    app.state.backend = backend

    def on_step(step: Any, seconds: float) -> None:
        svc.metrics.on_step(step, seconds)

    backend.on_step = on_step
    if backend.engine is not None:
        backend.engine.on_step = on_step
    return app
