"""The listening socket, bound before anything starts: a taken port is a one-line error naming its flag."""

from __future__ import annotations

import errno
import socket

from clawlan.errors import ConfigError


def bind(host: str, port: int, *, port_name: str = "--port", host_name: str = "--host") -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks one); ``*_name`` is what the error tells the user to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the socket says it
    # is TCP. Without it every response on a reused keep-alive connection (an SSE event is small) waits
    # for the peer's delayed ACK (Nagle). Set on the listener as well; Linux copies it to accepted sockets.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"{port_name} {port}: the port is already in use on {host}; stop the other program or choose another"
            ) from None
        raise ConfigError(f"{host_name} {host}: cannot bind ({exc.strerror}); use 127.0.0.1 or an address of this host") from None
    sock.listen(2048)
    return sock
