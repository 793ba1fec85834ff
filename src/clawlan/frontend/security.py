"""The front end's web defences: who may reach it, from which page, and with what.

The chat page trusts the browser at the box (loopback is the admin) and the
conversations are readable by any page the browser can be made to load. So:

* **Trusted hosts.** A request whose ``Host`` is not a name of this box
  (loopback names, its hostname, its addresses, ``frontend.trusted_hosts``)
  gets 400. That ends DNS rebinding: a web page at ``evil.example`` that
  re-points its name to 127.0.0.1 still sends ``Host: evil.example``.
* **No cross-site writes.** A state-changing request (POST, PUT, PATCH,
  DELETE) from another origin (``Origin`` / ``Sec-Fetch-Site``) gets 403, and
  one with a body must be ``application/json`` (uploads: a raw body with the
  ``X-Filename`` header), since a plain HTML form or a ``text/plain`` fetch
  can be sent cross-site without a CORS preflight; JSON and custom headers
  cannot.
* **Headers.** A CSP that allows only this origin's scripts and no framing
  (``frame-ancestors 'none'``), ``nosniff``, no referrer.

Also here: the admin check (constant-time token comparison; the box itself
stays admin) and the local ``/v1`` endpoint's rules (which caller gets the
box's key, which paths exist).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import posixpath
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import psutil

from clawlan.errors import error_body

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
                   Awaitable[None]]

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_upload(path: str) -> bool:
    """A document upload (``POST /api/conversations/{id}/documents``): a raw body with its own size cap."""
    return path.endswith("/documents")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

# The OpenAI routes the local endpoint forwards; nothing else of the back end (/metrics, /admin...) is reachable.
V1_ALLOWED = ("/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def own_names(bind_host: str, extra: Iterable[str] = ()) -> set[str]:
    """Every name a browser may legitimately use for this box (lowercase, without port)."""
    names = {"localhost", "127.0.0.1", "::1"}
    host = socket.gethostname().lower()
    if host:
        names |= {host, host.split(".")[0], host.split(".")[0] + ".local"}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn().lower())
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                names.add(a.address.split("%")[0].lower())
    if bind_host not in ("", "0.0.0.0", "::"):
        names.add(bind_host.lower())
    names |= {e.strip().lower() for e in extra if e.strip()}
    return names


def host_of(header: str) -> str:
    """``Host`` header without its port; IPv6 brackets removed."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class WebGuard:
    """ASGI middleware: trusted hosts, no cross-site state changes, security headers on every answer."""

    def __init__(self, app: ASGIApp, allowed_hosts: set[str], refresh: Callable[[], set[str]] | None = None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self._refresh = refresh
        self._refreshed = time.monotonic()

    def host_allowed(self, host: str) -> bool:
        if host in self.allowed_hosts:
            return True
        # DHCP may have given the box a new address since start: look again, at most every few seconds.
        if self._refresh is not None and time.monotonic() - self._refreshed > 5.0:
            self._refreshed = time.monotonic()
            self.allowed_hosts = self._refresh()
            return host in self.allowed_hosts
        return False

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self.check(scope, headers)
        if problem is not None:
            status, code, message = problem
            await self._refuse(send, status, code, message)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in present
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def check(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, str] | None:
        host = host_of(headers.get("host", ""))
        if not self.host_allowed(host):
            return 400, "untrusted_host", (f"Host {host or '(none)'!r} is not a name of this box; add it to "
                                           "frontend.trusted_hosts if it is")
        if scope["method"] not in UNSAFE:
            return None
        origin = headers.get("origin")
        if origin and origin != "null":
            o = urlsplit(origin)
            if (o.netloc or "").lower() != headers.get("host", "").lower():
                return 403, "cross_origin", f"requests from {origin} may not change anything here"
        elif origin == "null" or headers.get("sec-fetch-site") == "cross-site":
            return 403, "cross_origin", "cross-site requests may not change anything here"
        if not _has_body(headers):
            return None
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            return None
        if "x-filename" in headers and is_upload(scope["path"]):
            return None  # an upload: a custom header, which no cross-site page can send without a preflight
        return 415, "unsupported_media_type", "send JSON (content-type: application/json)"

    @staticmethod
    async def _refuse(send: Any, status: int, code: str, message: str) -> None:
        body = json.dumps(error_body(message, code, "invalid_request_error")).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *SECURITY_HEADERS]})
        await send({"type": "http.response.body", "body": body})


def _has_body(headers: dict[str, str]) -> bool:
    if "transfer-encoding" in headers:
        return True
    try:
        return int(headers.get("content-length", "0") or 0) > 0
    except ValueError:
        return True


# -- admin --------------------------------------------------------------------------


def admin_allowed(client_host: str | None, presented: str | None, token: str | None) -> bool:
    """The person at the box is its admin; anyone else needs the token (compared in constant time)."""
    if is_loopback(client_host):
        return True
    if not token or not presented:
        return False
    return hmac.compare_digest(presented.encode(), token.encode())


# -- the local /v1 endpoint -----------------------------------------------------------


def proxied_path(raw_path: str) -> str | None:
    """The normalized /v1 path to forward, or None when it is not one of the OpenAI routes.

    Dot segments and encoded slashes are resolved first, so ``/v1/../metrics`` or
    ``/v1/%2e%2e/metrics`` cannot reach the back end's other routes.
    """
    path = unquote(raw_path)
    if "\\" in path or "\x00" in path:
        return None
    norm = posixpath.normpath(path)
    if norm in V1_ALLOWED:
        return norm
    if norm.startswith("/v1/models/") and norm.count("/") == 3:
        return norm
    return None


def caller_gets_key(client_host: str | None, authorization: str | None, local_keys: Iterable[str]) -> bool:
    """Does this caller of the local endpoint get the box's key added? Loopback, or one holding a local key."""
    if is_loopback(client_host):
        return True
    token = (authorization or "").removeprefix("Bearer ").strip()
    return bool(token) and any(hmac.compare_digest(token.encode(), k.encode()) for k in local_keys if k)
