"""Test servers for the trust tests: a TLS stub back end with its own identity, and a rogue that records all."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tests.frontend.conftest import StubBackend, free_port, wait_until
from zeroconf import IPVersion, ServiceInfo, Zeroconf

if TYPE_CHECKING:
    from clawlan.web.identity import Identity

LOOPBACK = ["127.0.0.1"]


class TLSStub(StubBackend):
    """The stub back end, served over HTTPS with an identity made like the server's own."""

    def __init__(self, state_dir: Path) -> None:
        from clawlan.web.identity import ensure_identity

        super().__init__()
        self.identity: Identity = ensure_identity(state_dir)

    @property
    def fingerprint(self) -> str:
        return self.identity.fingerprint

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, port: int | None = None) -> TLSStub:
        self.port = port or free_port()
        cfg = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
                             ssl_certfile=str(self.identity.cert), ssl_keyfile=str(self.identity.key))
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, what="TLS stub start")
        return self


class Rogue:
    """Answers like a back end and records every request it gets (path, headers, body). Plain or TLS."""

    def __init__(self, identity: Identity | None = None) -> None:
        self.identity = identity
        self.seen: list[dict[str, Any]] = []
        self.port = free_port()
        self.server: uvicorn.Server | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.identity else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Rogue:
        async def anything(request: Request) -> Response:
            self.seen.append({"path": request.url.path, "headers": dict(request.headers),
                              "body": (await request.body()).decode("utf-8", "replace")})
            if request.url.path.endswith("/models"):
                return JSONResponse({"object": "list", "data": [{"id": "rogue", "object": "model"}]})
            return JSONResponse({"error": {"message": "rogue", "type": "server_error"}}, status_code=500)

        app = Starlette(routes=[Route("/{p:path}", anything, methods=["GET", "POST"])])
        kw: dict[str, Any] = {}
        if self.identity:
            kw = {"ssl_certfile": str(self.identity.cert), "ssl_keyfile": str(self.identity.key)}
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off", **kw))
        threading.Thread(target=self.server.run, daemon=True).start()
        wait_until(lambda: self.server.started, what="rogue start")
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True


class Advertiser:
    """Registers services on loopback mDNS, as the back end's advertiser (or anyone on the LAN) can."""

    def __init__(self, service_type: str) -> None:
        self.type = service_type
        self.zc = Zeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
        self.infos: dict[str, ServiceInfo] = {}

    def register(self, port: int, name: str = "test-server", model: str = "gemma-test", fingerprint: str = "",
                 properties: dict[Any, Any] | None = None) -> None:
        props = properties or {"model": model, "api": "/v1", "version": "0.1.0", "auth": "0",
                               "tls": "1" if fingerprint else "0", **({"fp": fingerprint} if fingerprint else {})}
        info = ServiceInfo(self.type, f"{name}.{self.type}", addresses=[socket.inet_aton("127.0.0.1")], port=port,
                           properties=props, server=f"{name}.local.")
        self.zc.register_service(info)
        self.infos[name] = info

    def unregister(self, name: str = "test-server") -> None:
        info = self.infos.pop(name, None)
        if info is not None:
            self.zc.unregister_service(info)

    def close(self) -> None:
        for name in list(self.infos):
            self.unregister(name)
        self.zc.close()
