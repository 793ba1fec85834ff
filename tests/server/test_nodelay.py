"""Accepted connections have TCP_NODELAY, so a reused keep-alive connection does not wait for Nagle.

The listening socket comes from ``serving.bind``; uvicorn hands it to asyncio,
which sets TCP_NODELAY on each accepted connection only if the socket says it
is TCP. The probe is uvicorn's own HTTP protocol class, subclassed to read the
option off the accepted socket (speed itself is measured in bench/keepalive.py).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from clawlan.web.listen import bind


async def tiny_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_accepted_connection_has_tcp_nodelay() -> None:
    seen: list[int] = []

    class Probe(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            sock = transport.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            super().connection_made(transport)

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(tiny_app, http=Probe, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with httpx.Client() as client:  # one keep-alive connection, two requests
            for _ in range(2):
                assert client.get(f"http://127.0.0.1:{port}/").text == "ok"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert seen and all(v != 0 for v in seen), seen


def test_asyncio_sets_nodelay_on_the_bound_socket() -> None:
    """The root cause, without uvicorn: asyncio recognises the socket as TCP."""

    async def run() -> int:
        got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class P(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:  # type: ignore[override]
                s = transport.get_extra_info("socket")
                got.set_result(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        sock = bind("127.0.0.1", 0)
        srv = await asyncio.get_running_loop().create_server(P, sock=sock)
        _, w = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        try:
            return await asyncio.wait_for(got, 10)
        finally:
            w.close()
            srv.close()
            await srv.wait_closed()

    sock = bind("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    sock.close()
    assert asyncio.run(run()) != 0
