"""The front end's web app: the chat page, its JSON API, and a local OpenAI endpoint.

Routes
    GET  /                              the chat page (all assets under /static, none from a CDN)
    GET  /api/status                    back end in use, how it was found and its health (ok, loading, down,
                                        error), the model, session counts, library size, default mode
    GET  /api/conversations?q=          list / search;  POST creates
    GET|PATCH|DELETE /api/conversations/{id}
    POST /api/conversations/{id}/messages     send (or regenerate); answers an SSE stream of events (begin,
                                              queued, loading, start, delta, usage, done|stopped|error), each
                                              with the session counts
    POST /api/conversations/{id}/stop         stop the answer being generated
    POST /api/conversations/{id}/documents    upload (raw body, X-Filename header)
    GET|PUT|DELETE /api/modes[/{id}]          system prompts (admin)
    POST /api/library/rescan                  re-read the customer-service docs folder (admin)
    *    /v1/...                              OpenAI-compatible, forwarded to the back end
    GET  /health                              the front end itself is up

An answer's request and stream are :mod:`clawlan.frontend.chat`; ``/v1`` is
:mod:`clawlan.frontend.openai_routes`; the back-end trust pages are :mod:`clawlan.frontend.trust_routes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pydantic import ConfigDict
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from clawlan import __version__
from clawlan.config.paths import frontend_data_dir
from clawlan.config.settings import FrontendSection
from clawlan.discovery.browser import Backend, Discoverer
from clawlan.discovery.trust import PINS_FILE, TrustStore
from clawlan.errors import ClawlanError, InvalidRequest, NotFound, RequestError
from clawlan.frontend import chat, documents, openai_routes, security, trust_routes
from clawlan.frontend.health import Health, HealthProbe
from clawlan.frontend.modes import DEFAULT_MODE, LIBRARY_MODE, MODES
from clawlan.frontend.proxy import Upstream, UpstreamError
from clawlan.frontend.retrieval import Hit, Index, Segmenter
from clawlan.frontend.sessions import SessionLimiter
from clawlan.frontend.store import Store
from clawlan.web.limits import BodyLimitMiddleware

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
KEEPALIVE_S = 5.0  # an answer's SSE stream writes at least this often, so a page that left is noticed


class FrontConfig(FrontendSection):
    """What the front end runs with: the ``frontend`` settings (their defaults and limits are
    config/settings.py's, kept in one place), plus what only tests set."""

    # Built in code, not read from a file: a misspelt option must fail, not be dropped.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    mdns_service_type: str | None = None  # tests browse a service type of their own

    @classmethod
    def from_settings(cls, section: FrontendSection, **extra: Any) -> FrontConfig:
        return cls(**{**section.model_dump(), **{k: v for k, v in extra.items() if v is not None}})


class Forbidden(RequestError):
    status_code = 403
    error_type = "permission_error"
    code = "forbidden"


def _json_error(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.to_body(), status_code=exc.status_code)


class Frontend:
    """All state of one running front end."""

    def __init__(self, cfg: FrontConfig) -> None:
        self.cfg = cfg
        data = frontend_data_dir(cfg.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        os.chmod(data, 0o700)  # conversations, uploads and pins: the owner's only
        self.data_dir = data
        self.store = Store(data / "clawlan-front.sqlite3")
        self.index = Index(self.store.db, self.store.lock, Segmenter(cfg.segmenter, cache_dir=data))
        self.trust = TrustStore(data / PINS_FILE, cfg.trusted_backends)
        self.discoverer = Discoverer(
            cfg.discovery_protocol, cfg.fallback_timeout, cfg.static_backend, interfaces=cfg.mdns_interfaces or None,
            **({"service_type": cfg.mdns_service_type} if cfg.mdns_service_type else {}), trust=self.trust,
        )
        self.limiter = SessionLimiter(cfg.max_concurrent_sessions)
        self.upstream = Upstream(self.discoverer, cfg.api_key, trust=self.trust)
        self.health = HealthProbe()
        self.last_backend: Backend | None = None  # where the last chat request went
        self.backend_down = False  # the last chat request found no back end
        self.running: dict[str, asyncio.Task[None]] = {}  # conversation id -> generation task
        self.library_state: dict[str, Any] = {"docs_dir": cfg.docs_dir, "files": 0, "errors": []}
        self._page = (STATIC / "index.html").read_text(encoding="utf-8")
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------
    async def startup(self) -> None:
        self.discoverer.start()
        # Look up the back end and read the docs folder now, so the first question does not wait for either.
        self.in_background(self.discoverer.aresolve())
        self.in_background(asyncio.to_thread(self.scan_library))

    def in_background(self, coro: Any) -> None:
        """Run ``coro`` beside the requests; shutdown waits for it."""
        t = asyncio.ensure_future(coro)
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    async def shutdown(self) -> None:
        for t in list(self.running.values()):
            t.cancel()
        for t in list(self.running.values()) + list(self._background):
            with contextlib.suppress(BaseException):
                await t
        await self.upstream.close()
        await asyncio.to_thread(self.discoverer.close)
        self.store.close()

    # -- customer-service library ---------------------------------------------
    def scan_library(self) -> dict[str, Any]:
        """Index new or changed files of ``docs_dir``; forget removed ones."""
        folder = self.cfg.docs_dir
        if not folder:
            return self.library_state
        root = Path(folder)
        known = {d["source"]: d for d in self.store.documents(None)}
        seen: set[str] = set()
        errors: list[str] = []
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if not path.is_file() or path.suffix.lower() not in documents.KINDS:
                    continue
                src = str(path)
                seen.add(src)
                st = path.stat()
                old = known.get(src)
                if old and old["mtime"] == st.st_mtime and old["size"] == st.st_size:
                    continue
                if old:
                    self.store.delete_document(old["id"])
                try:
                    text = documents.extract(path.name, path.read_bytes())
                except ClawlanError as exc:
                    errors.append(str(exc))
                    continue
                self.index.add_document(
                    self.store, documents.chunk(text), name=str(path.relative_to(root)), chars=len(text),
                    source=src, mtime=st.st_mtime, size=st.st_size,
                )
        else:
            errors.append(f"{folder}: docs folder not found")
        for src, d in known.items():
            if src not in seen:
                self.store.delete_document(d["id"])
        self.library_state = {"docs_dir": folder, "files": len(seen), "errors": errors}
        log.info("library: %d files from %s", len(seen), folder)
        return self.library_state

    async def backend_health(self, backend: Backend, *, fresh: bool = False) -> Health:
        # The probe goes the way a chat does: through the client pinned to the server's certificate, and
        # never to a server the chat would not use.
        try:
            client = await self.upstream.client_for(backend)
        except UpstreamError as exc:
            return Health("down", detail=exc.message)
        except OSError as exc:  # the certificate could not be fetched: nothing answers there
            return Health("down", detail=type(exc).__name__)
        return await self.health.check(backend.base_url, client, fresh=fresh)

    def default_mode(self) -> str:
        """Customer service once the library has files; a general assistant until then."""
        # The store, not the last scan: retrieval reads the store, and it is filled before a slow first scan ends.
        return LIBRARY_MODE if self.library_state.get("files") or self.store.documents(None) else DEFAULT_MODE

    # -- prompts -----------------------------------------------------------------
    def prompt(self, mode: str) -> str:
        return self.store.prompt(mode) or MODES[mode].default_prompt

    def admin_allowed(self, request: Request) -> bool:
        # The person at the box is its admin (token or not); anyone else on the LAN needs the token.
        return security.admin_allowed(request.client.host if request.client else None,
                                      request.headers.get("x-admin-token"), self.cfg.admin_token)

    def retrieve(self, conv: dict[str, Any], question: str) -> list[Hit]:
        """:func:`clawlan.frontend.chat.retrieve`, as a method so a test can hold a send inside it."""
        return chat.retrieve(self, conv, question)

# ---------------------------------------------------------------------------
# HTTP handlers


def build_app(cfg: FrontConfig) -> Starlette:
    fe = Frontend(cfg)

    async def page(request: Request) -> Response:
        # The render mode is a class on <html> so CSS applies before any script runs (no flash of animation).
        body = fe._page.replace("{{render_mode}}", html.escape(cfg.render_mode)).replace(
            "{{version}}", html.escape(__version__)
        )
        return HTMLResponse(body, headers={"cache-control": "no-cache"})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def status(request: Request) -> Response:
        cur = fe.discoverer.current
        # After a failure discovery forgets the address; probe the last one used, so "down" shows as down.
        probe = cur or fe.last_backend
        health = await fe.backend_health(probe) if probe else None
        model = None
        if health and health.state == "ok" and cur:
            # /health names it on clawlan; otherwise /v1/models, asked once per address.
            model = health.model or await fe.upstream.model_id(cur)
            model = None if model == "default" else model
        return JSONResponse({
            "backend": cur.to_json() if cur else None,
            "backend_url": probe.base_url if probe else None,
            "health": health.to_json() if health else None,
            "model": model,
            "default_mode": fe.default_mode(),
            "discovery": {
                "protocol": cfg.discovery_protocol,
                "fallback_timeout": cfg.fallback_timeout,
                "static_backend": cfg.static_backend,
                "services": [s.base_url for s in fe.discoverer.services()],
            },
            "sessions": fe.limiter.snapshot(),
            "render_mode": cfg.render_mode,
            "library": {**fe.library_state, "documents": len(fe.store.documents(None))},
            "backends": fe.discoverer.candidates(),  # trust state of each advertised server (pending: not used)
            "admin": fe.admin_allowed(request),
            "version": __version__,
        })

    def conv_or_404(cid: str) -> dict[str, Any]:
        conv = fe.store.conversation(cid)
        if conv is None:
            raise NotFound(f"no conversation {cid}")
        return conv

    async def read_json(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise InvalidRequest("the body must be JSON") from None
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object")
        return body

    async def list_conversations(request: Request) -> Response:
        if request.method == "POST":
            body = await read_json(request)
            mode = body.get("mode") or fe.default_mode()
            if mode not in MODES:
                raise InvalidRequest(f"unknown mode {mode!r}; one of {', '.join(MODES)}", param="mode")
            conv = fe.store.create_conversation(str(body.get("title") or "")[:200], mode)
            return JSONResponse(conv, status_code=201)
        return JSONResponse({"data": fe.store.conversations(request.query_params.get("q", "").strip())})

    async def one_conversation(request: Request) -> Response:
        cid = request.path_params["cid"]
        conv = conv_or_404(cid)
        if request.method == "DELETE":
            task = fe.running.get(cid)
            if task:
                task.cancel()
            fe.store.delete_conversation(cid)
            return JSONResponse({"deleted": True})
        if request.method == "PATCH":
            body = await read_json(request)
            mode = body.get("mode")
            if mode is not None and mode not in MODES:
                raise InvalidRequest(f"unknown mode {mode!r}", param="mode")
            title = body.get("title")
            conv = fe.store.update_conversation(cid, title=str(title)[:200] if title is not None else None, mode=mode)
        return JSONResponse({
            **conv,
            "messages": fe.store.messages(cid),
            "documents": fe.store.documents(cid),
            "generating": cid in fe.running,
        })

    async def send(request: Request) -> Response:
        cid = request.path_params["cid"]
        conv = conv_or_404(cid)
        body = await read_json(request)
        if cid in fe.running:
            raise InvalidRequest("an answer is still being generated in this conversation; stop it first")
        # Claim the conversation before the first await below: a second send arriving meanwhile is refused.
        reserved: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fe.running[cid] = reserved  # type: ignore[assignment]
        try:
            return await start_answer(cid, conv, body)
        finally:
            if fe.running.get(cid) is reserved:
                fe.running.pop(cid, None)  # the answer never started (bad request, deleted conversation)

    async def start_answer(cid: str, conv: dict[str, Any], body: dict[str, Any]) -> Response:
        old_ids: list[int] = []
        if body.get("regenerate"):
            msgs = fe.store.messages(cid)
            last_user = next((m for m in reversed(msgs) if m["role"] == "user"), None)
            if last_user is None:
                raise InvalidRequest("nothing to regenerate")
            # The old answer stays until the new one is stored (replace_answer), so a failure loses nothing.
            old_ids = [m["id"] for m in msgs if m["id"] > last_user["id"]]
            question = last_user["content"]
            user_id = last_user["id"]
        else:
            question = str(body.get("content") or "").strip()
            if not question:
                raise InvalidRequest("empty message", param="content")
            user_id = fe.store.add_message(cid, "user", question)
            if not conv["title"]:
                conv = fe.store.update_conversation(cid, title=question.splitlines()[0][:60]) or conv
        hits = await asyncio.to_thread(fe.retrieve, conv, question)
        sources = [h.to_json() for h in hits]
        mid = fe.store.add_message(cid, "assistant", "", status="streaming", sources=sources)
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        await q.put({"type": "begin", "user_id": user_id, "id": mid, "title": conv["title"], "sources": sources})
        request_body = chat.chat_body(fe, conv, old_ids[0] if old_ids else mid, question, hits)
        task = asyncio.create_task(replace_answer(cid, mid, request_body, q, old_ids))
        fe.running[cid] = task

        async def events() -> AsyncIterator[bytes]:
            try:
                while True:
                    try:
                        ev = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                    except TimeoutError:
                        # A comment line: the page ignores it, but writing it notices a page that has gone away
                        # while its answer is queued or the back end is silent, so the slot is freed.
                        yield b": keepalive\n\n"
                        continue
                    if ev is None:
                        return
                    ev.setdefault("sessions", fe.limiter.snapshot())  # "begin" is made here, not in generate()
                    yield f"data: {json.dumps(ev, ensure_ascii=False)}\n\n".encode()
            finally:
                # The page went away (closed, reloaded): stop generating; what was shown is already saved.
                if not task.done():
                    task.cancel()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
        )

    async def replace_answer(cid: str, mid: int, body: dict[str, Any], q: asyncio.Queue[dict[str, Any] | None],
                             old_ids: list[int]) -> None:
        await chat.generate(fe, cid, mid, body, q)
        if not old_ids:
            return
        # Synchronous from here: runs before the page can read the conversation again.
        new = next((m for m in fe.store.messages(cid) if m["id"] == mid), None)
        if new is not None and new["content"]:
            fe.store.delete_messages(cid, old_ids)  # the new answer exists: now the old one may go
        else:
            fe.store.delete_messages(cid, [mid])  # nothing came: the conversation stays as it was

    async def stop(request: Request) -> Response:
        cid = request.path_params["cid"]
        conv_or_404(cid)
        task = fe.running.get(cid)
        if task:
            task.cancel()
        return JSONResponse({"stopped": task is not None})

    async def upload(request: Request) -> Response:
        cid = request.path_params["cid"]
        conv_or_404(cid)
        name = unquote(request.headers.get("x-filename", "")).strip().replace("/", "_").replace("\\", "_")
        if not name:
            raise InvalidRequest("missing X-Filename header", param="file")
        documents.kind_of(name)
        data = await request.body()  # within documents.MAX_BYTES: BodyLimitMiddleware counted it in

        def index() -> tuple[int, int]:
            # Extraction, chunking and indexing are CPU work: off the event loop, one transaction at the end.
            text = documents.extract(name, data)
            chunks = documents.chunk(text)
            return fe.index.add_document(fe.store, chunks, name=name, chars=len(text), conversation_id=cid,
                                         size=len(data)), len(chunks)

        doc_id, n_chunks = await asyncio.to_thread(index)
        # An upload switches the conversation to document analysis: that is why one uploads.
        fe.store.update_conversation(cid, mode="document")
        return JSONResponse({**(fe.store.document(doc_id) or {}), "chunks": n_chunks}, status_code=201)

    async def delete_document(request: Request) -> Response:
        cid = request.path_params["cid"]
        doc_id = int(request.path_params["doc"])
        doc = fe.store.document(doc_id)
        if doc is None or doc["conversation_id"] != cid:
            raise NotFound(f"no document {doc_id} in this conversation")
        fe.store.delete_document(doc_id)
        return JSONResponse({"deleted": True})

    def require_admin(request: Request) -> None:
        if not fe.admin_allowed(request):
            raise Forbidden("only the admin may change this (from the box itself, or with X-Admin-Token)")

    async def modes(request: Request) -> Response:
        return JSONResponse({"data": [m.to_json(fe.prompt(m.id)) for m in MODES.values()],
                             "admin": fe.admin_allowed(request)})

    async def one_mode(request: Request) -> Response:
        mid = request.path_params["mode"]
        if mid not in MODES:
            raise NotFound(f"no mode {mid}")
        if request.method in ("PUT", "DELETE"):
            require_admin(request)
            if request.method == "DELETE":
                fe.store.set_prompt(mid, None)
            else:
                text = str((await read_json(request)).get("prompt") or "").strip()
                if not text:
                    raise InvalidRequest("the prompt may not be empty; DELETE restores the default", param="prompt")
                fe.store.set_prompt(mid, text[:8000])
        return JSONResponse(MODES[mid].to_json(fe.prompt(mid)))

    async def rescan(request: Request) -> Response:
        require_admin(request)
        return JSONResponse(await asyncio.to_thread(fe.scan_library))

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        return _json_error(exc)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await fe.startup()
        try:
            yield
        finally:
            await fe.shutdown()

    routes = [
        Route("/", page),
        Route("/health", health),
        Route("/api/status", status),
        Route("/api/conversations", list_conversations, methods=["GET", "POST"]),
        Route("/api/conversations/{cid}", one_conversation, methods=["GET", "PATCH", "DELETE"]),
        Route("/api/conversations/{cid}/messages", send, methods=["POST"]),
        Route("/api/conversations/{cid}/stop", stop, methods=["POST"]),
        Route("/api/conversations/{cid}/documents", upload, methods=["POST"]),
        Route("/api/conversations/{cid}/documents/{doc:int}", delete_document, methods=["DELETE"]),
        Route("/api/modes", modes),
        Route("/api/modes/{mode}", one_mode, methods=["GET", "PUT", "DELETE"]),
        Route("/api/library/rescan", rescan, methods=["POST"]),
        *trust_routes.routes(fe, require_admin),
        *openai_routes.routes(fe),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    names = lambda: security.own_names(cfg.host, cfg.trusted_hosts)  # noqa: E731
    guard = Middleware(security.WebGuard, allowed_hosts=names(), refresh=names)

    def body_cap(path: str) -> int:
        return documents.MAX_BYTES if security.is_upload(path) else cfg.max_body_bytes

    # Inside the guard (its refusals come first, and its headers go on these 413/408 answers too). Bodies
    # are counted as they stream in, so an oversized one is refused at its cap, never buffered whole.
    door = Middleware(BodyLimitMiddleware, max_bytes=body_cap, timeout_s=cfg.body_timeout_ms / 1000.0,
                      max_name="frontend.max_body_bytes", timeout_name="frontend.body_timeout_ms", who="this front end")
    app = Starlette(routes=routes, exception_handlers={RequestError: on_error}, lifespan=lifespan,
                    middleware=[guard, door])
    app.state.frontend = fe
    return app
