"""A chat answer: what is sent to the back end (retrieved passages, recent history) and the stream back.

:func:`generate` runs as its own task per answer, so Stop can cancel it; every step is stored before it
is shown, and every failure reaches the page and SQLite as an event, never a lost conversation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from clawlan.frontend.modes import DEFAULT_MODE, MODES, system_message
from clawlan.frontend.proxy import RETRYABLE, Opened, UpstreamError, sse_events
from clawlan.frontend.retrieval import Hit

if TYPE_CHECKING:
    from clawlan.frontend.app import Frontend

log = logging.getLogger(__name__)

HISTORY_CHARS = 6000  # recent turns sent with a question; the back end's context is small
RETRY_LOOKUP_MS = 1000  # mDNS wait for a chat request after one found the back end down
LOAD_WAIT_S = 900.0  # a message sent while the model loads waits this long (a big model on a NUC is slow)


def retrieve(fe: Frontend, conv: dict[str, Any], question: str) -> list[Hit]:
    """Passages for ``question`` from what the conversation's mode reads: the library, its uploads, or none."""
    mode = MODES.get(conv["mode"], MODES[DEFAULT_MODE])
    if mode.retrieval == "library":
        docs = fe.store.documents(None)
    elif mode.retrieval == "uploads":
        docs = fe.store.documents(conv["id"])
    else:
        return []
    ids = [d["id"] for d in docs]
    hits = fe.index.search(question, ids, k=3)
    if not hits and mode.retrieval == "uploads":
        hits = fe.index.first_chunks(ids, k=2)
    return hits


def history(fe: Frontend, cid: str, upto: int) -> list[dict[str, str]]:
    """The turns before message ``upto``, newest first kept, up to :data:`HISTORY_CHARS`."""
    msgs = [
        m for m in fe.store.messages(cid)
        if m["id"] < upto and m["content"] and m["role"] in ("user", "assistant")
    ]
    out: list[dict[str, str]] = []
    total = 0
    for m in reversed(msgs):
        total += len(m["content"])
        if out and total > HISTORY_CHARS:
            break
        out.append({"role": m["role"], "content": m["content"]})
    out.reverse()
    # A history that starts with the assistant confuses chat templates that expect user first.
    while out and out[0]["role"] != "user":
        out.pop(0)
    return out


async def generate(fe: Frontend, cid: str, mid: int, body: dict[str, Any], q: asyncio.Queue[dict[str, Any] | None]) -> None:
    """Produce one answer into ``q`` and SQLite. Runs as its own task so stop can cancel it."""
    text = ""
    status = "error"
    error: str | None = None
    error_code: str | None = None
    ticket = fe.limiter.ticket()

    def put(ev: dict[str, Any]) -> None:
        # Every event carries the device-wide counts as of now, so the page's status chip is never stale.
        q.put_nowait({**ev, "sessions": fe.limiter.snapshot()})

    try:
        if not ticket.granted:
            fe.store.update_message(mid, status="queued")
            shown = ticket.position
            put({"type": "queued", "position": shown, **fe.limiter.snapshot()})
            while not ticket.granted:
                # Wake once a second to move the visible place in line; the grant itself wakes at once.
                if not await ticket.wait_up_to(1.0) and ticket.position != shown:
                    shown = ticket.position
                    put({"type": "queued", "position": shown, **fe.limiter.snapshot()})
        fe.store.update_message(mid, status="streaming")
        attempts = 0
        waiting_since = time.monotonic()
        lookups_again = False
        while True:
            # Right after a failure, mDNS has already had its fallback_timeout and a re-query: a Retry
            # waits a second for an answer, not the full timeout, before trying the static address.
            target = await fe.discoverer.aresolve(RETRY_LOOKUP_MS if fe.backend_down else None)
            fe.last_backend = target
            try:
                # retries=0: a down back end is reported at once (the page offers Retry), and a loading
                # one is waited for below, visibly, instead of inside the proxy's short retry window.
                opened = await fe.upstream.open(
                    "POST", "/v1/chat/completions",
                    content=json.dumps({**body, "model": await fe.upstream.model_id(target)}).encode(),
                    headers={"content-type": "application/json", "accept": "text/event-stream"},
                    retries=0,
                )
            except UpstreamError as exc:
                fe.health.forget(target.base_url)  # the status chip turns red on the page's next poll
                fe.backend_down = True
                if not lookups_again:
                    # Once more at once, on whatever discovery finds now (a server restarted on another
                    # port); a second failure is reported: the page offers Retry.
                    lookups_again = True
                    continue
                error, error_code = exc.message, "backend_down"
                break
            backend = opened.backend
            fe.store.update_message(mid, backend=backend.base_url)
            if opened.response.status_code != 200:
                raw = b"".join([c async for c in opened.chunks()])  # chunks() yields opened.first too
                error, wait_s = await refusal(fe, opened, raw)
                if wait_s is not None and time.monotonic() - waiting_since < LOAD_WAIT_S:
                    # Loading (or full): the page says so and the message goes through once it is ready.
                    put({"type": "loading", "reason": error, "retry_after": wait_s})
                    error = None
                    await asyncio.sleep(wait_s)
                    continue
                break
            put({"type": "start", "backend": backend.to_json()})
            fe.backend_down = False
            finished = False
            try:
                async for ev in sse_events(opened.chunks()):
                    if ev is None:
                        finished = True
                        break
                    if "error" in ev:
                        raise UpstreamError(str(ev["error"].get("message", ev["error"])))
                    for choice in ev.get("choices") or []:
                        delta = (choice.get("delta") or {}).get("content") or ""
                        if delta:
                            text += delta
                            # Stored before it is shown: a kill -9 of either process never loses
                            # text the user saw (a WAL commit without fsync is a page-cache write).
                            fe.store.update_message(mid, content=text)
                            put({"type": "delta", "text": delta})
                    if ev.get("usage"):
                        put({"type": "usage", "usage": ev["usage"]})
                if not finished:
                    # The stream ended without [DONE]: the server went away mid-answer.
                    raise UpstreamError("the connection to the back end closed before the answer finished")
            except (UpstreamError, *RETRYABLE) as exc:
                msg = exc.message if isinstance(exc, UpstreamError) else f"{type(exc).__name__}"
                fe.discoverer.invalidate(backend.base_url)
                if not text and attempts < 2:
                    attempts += 1  # nothing shown yet: try again, on whatever discovery finds now
                    put({"type": "retry", "reason": msg})
                    continue
                error = f"the back end stopped answering ({msg}); the text so far is kept"
                error_code = "backend_lost"
                break
            status = "done"
            break
    except asyncio.CancelledError:
        status = "stopped"
    except Exception as exc:  # noqa: BLE001 - any failure must reach the UI and the DB, not vanish
        log.exception("generation failed")
        error = f"{type(exc).__name__}: {exc}"
    finally:
        ticket.release()
        if error:
            status = "error"
        fe.store.update_message(mid, content=text, status=status, error=error)
        fe.store.touch(cid)
        fe.running.pop(cid, None)
        put({"type": status, "error": error, "code": error_code, "id": mid, "content": text})
        q.put_nowait(None)


async def refusal(fe: Frontend, opened: Opened, raw: bytes) -> tuple[str, float | None]:
    """A non-200 answer: its message, and how long to wait before asking again (None: give up)."""
    code = opened.response.status_code
    try:
        message = str(json.loads(raw)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = f"back end answered HTTP {code}"
    if code != 503:
        return message, None
    health = await fe.backend_health(opened.backend, fresh=True)
    if health.state == "error":  # the model failed to load: waiting will not help
        return health.detail or message, None
    try:
        wait_s = float(opened.response.headers.get("retry-after") or 1.0)
    except ValueError:
        wait_s = 1.0
    return message, min(max(wait_s, 0.5), 5.0)


def chat_body(fe: Frontend, conv: dict[str, Any], mid: int, question: str, hits: list[Hit]) -> dict[str, Any]:
    """The streamed chat completion request for the answer ``mid``: mode prompt, passages, history, question."""
    msgs = [{"role": "system", "content": system_message(fe.prompt(conv["mode"]), hits, question)}]
    msgs += history(fe, conv["id"], mid)
    if msgs[-1]["role"] != "user":
        msgs.append({"role": "user", "content": question})
    return {
        **fe.cfg.request_defaults,
        "messages": msgs,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": fe.cfg.max_tokens,
    }
