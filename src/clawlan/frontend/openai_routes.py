"""``/v1/*``: the box's local OpenAI endpoint, forwarded to the back end unbuffered."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from clawlan.errors import NotFound, error_body
from clawlan.frontend import security
from clawlan.frontend.proxy import UpstreamError

if TYPE_CHECKING:
    from clawlan.frontend.app import Frontend


def routes(fe: Frontend) -> list[Route]:
    async def openai_proxy(request: Request) -> Response:
        """Forward /v1/* to the back end, unbuffered; generation requests take a session slot."""
        # Only the OpenAI routes, normalized: /v1/../metrics must not reach the back end's other routes.
        clean = security.proxied_path(request.scope["path"])
        if clean is None:
            raise NotFound(f"{request.scope['path']} is not an OpenAI route of this endpoint")
        path = clean + (f"?{request.url.query}" if request.url.query else "")
        body = await request.body()
        # The box's key is added for callers on the box, or holding a local key; others bring their own.
        trusted = security.caller_gets_key(request.client.host if request.client else None,
                                           request.headers.get("authorization"), fe.cfg.local_api_keys)
        forward = ("content-type", "accept") if trusted and fe.cfg.local_api_keys else (
            "content-type", "accept", "authorization")
        headers = {k: v for k, v in request.headers.items() if k in forward}
        generates = request.method == "POST" and clean.endswith(("/completions", "/embeddings"))
        ticket = fe.limiter.ticket() if generates else None
        try:
            if ticket is not None:
                await ticket.wait()
            opened = await fe.upstream.open(request.method, path, content=body or None, headers=headers,
                                            add_key=trusted)
        except UpstreamError as exc:
            if ticket:
                ticket.release()
            return JSONResponse(exc.body, status_code=exc.status)
        except BaseException:
            if ticket:
                ticket.release()
            raise

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in opened.chunks():
                    yield chunk
            except Exception as exc:  # noqa: BLE001 - mid-stream: tell an SSE client in its own terms
                fe.discoverer.invalidate(opened.backend.base_url)
                if "text/event-stream" in opened.response.headers.get("content-type", ""):
                    err = error_body(f"back end lost mid-answer ({type(exc).__name__})", "backend_lost")
                    yield f"data: {json.dumps(err)}\n\n".encode()
            finally:
                if ticket:
                    ticket.release()

        keep = ("content-type", "retry-after", "x-request-id")
        out_headers = {k: v for k, v in opened.response.headers.items() if k in keep}
        out_headers["x-clawlan-backend"] = opened.backend.base_url
        return StreamingResponse(relay(), status_code=opened.response.status_code, headers=out_headers)

    return [Route("/v1/{rest:path}", openai_proxy, methods=["GET", "POST"])]
