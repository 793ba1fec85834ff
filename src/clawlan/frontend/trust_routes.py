"""Admin routes to see advertised back ends and accept (pin) or forget one.

    GET  /api/backends             every advertised server with its state (trusted, new, changed, mismatch, plain)
    POST /api/backends/accept      {"fingerprint": ...}  admin only: pin it, discovery picks again
    POST /api/backends/forget      {"fingerprint": ...}  admin only
    GET  /admin/backends           a minimal page for the above (the chat page shows pending ones in /api/status)

A server is never used before an admin accepts it here or lists its
fingerprint in ``frontend.trusted_backends``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from clawlan.discovery.service import normalize_fingerprint, show_fingerprint
from clawlan.errors import InvalidRequest

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Clawdbot: back ends</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/app.css"></head>
<body class="admin-backends"><main style="max-width:60rem;margin:1rem auto;padding:0 1rem">
<h1>Back ends on this network</h1>
<p>A server is used only once its key is trusted. Compare the fingerprint with the one
<code>clawlan serve</code> logs on the server before accepting.</p>
<table><thead><tr><th>Name</th><th>Address</th><th>State</th><th>Fingerprint (SHA-256)</th><th></th></tr></thead>
<tbody id="rows"></tbody></table>
<p id="msg" role="status"></p>
<p><a href="/">Back to the chat</a></p>
</main><script src="/admin/backends.js"></script></body></html>
"""

SCRIPT = """
"use strict";
async function load() {
  const res = await fetch("/api/backends");
  const data = await res.json();
  const rows = document.getElementById("rows");
  rows.replaceChildren();
  for (const c of data.candidates) {
    const tr = document.createElement("tr");
    for (const v of [c.name, c.base_url, c.state + (c.in_use ? " (in use)" : ""), c.fingerprint_shown]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    const td = document.createElement("td");
    if (data.admin && c.fingerprint && c.state !== "trusted") {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "Accept";
      b.addEventListener("click", () => act("accept", c.fingerprint));
      td.appendChild(b);
    }
    tr.appendChild(td); rows.appendChild(tr);
  }
}
async function act(what, fingerprint) {
  const res = await fetch("/api/backends/" + what, {
    method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify({fingerprint}),
  });
  const body = await res.json();
  document.getElementById("msg").textContent = res.ok ? what + "ed" : body.error.message;
  load();
}
load();
"""


def routes(fe: Any, require_admin: Callable[[Request], None]) -> list[Route]:
    async def list_backends(request: Request) -> Response:
        cur = fe.discoverer.current
        return JSONResponse({
            "candidates": fe.discoverer.candidates(),
            "pins": [{"fingerprint": show_fingerprint(fp), "name": m.get("name", ""), "address": m.get("address", ""),
                      "accepted": m.get("accepted")} for fp, m in fe.trust.pins().items()],
            "configured": [show_fingerprint(fp) for fp in fe.trust.configured],
            "current": cur.to_json() if cur else None,
            "admin": fe.admin_allowed(request),
        })

    async def fingerprint_of(request: Request) -> str:
        try:
            body = await request.json()
        except ValueError:
            raise InvalidRequest("the body must be JSON") from None
        fp = normalize_fingerprint(str((body or {}).get("fingerprint", ""))) if isinstance(body, dict) else ""
        if not fp:
            raise InvalidRequest("fingerprint must be a SHA-256 fingerprint (64 hex digits)", param="fingerprint")
        return fp

    async def accept(request: Request) -> Response:
        require_admin(request)
        fp = await fingerprint_of(request)
        cand = next((c for c in fe.discoverer.candidates() if c["fingerprint"] == fp), None)
        await asyncio.to_thread(fe.trust.accept, fp, cand["name"] if cand else "", cand["base_url"] if cand else "")
        fe.discoverer.trust_changed()
        # Pick now, not at the next question: the chat page's status then shows the accepted server.
        fe.in_background(fe.discoverer.aresolve())
        return JSONResponse({"accepted": show_fingerprint(fp), "name": cand["name"] if cand else ""})

    async def forget(request: Request) -> Response:
        require_admin(request)
        fp = await fingerprint_of(request)
        gone = await asyncio.to_thread(fe.trust.forget, fp)
        fe.discoverer.trust_changed()
        fe.in_background(fe.discoverer.aresolve())
        return JSONResponse({"forgotten": gone})

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers={"cache-control": "no-cache"})

    async def script(request: Request) -> Response:
        return Response(SCRIPT, media_type="text/javascript", headers={"cache-control": "no-cache"})

    return [
        Route("/api/backends", list_backends),
        Route("/api/backends/accept", accept, methods=["POST"]),
        Route("/api/backends/forget", forget, methods=["POST"]),
        Route("/admin/backends", page),
        Route("/admin/backends.js", script),
    ]
