"""Run the HTTP service with uvicorn: on the main thread (CLI) or a background one (tests, ``run``).

The socket is bound here, before uvicorn starts, so a port in use is a clear
one-line error and port 0 (tests) reports the port it got. mDNS advertising
starts once the socket is listening and stops with the server.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import uvicorn

from clawlan import __version__
from clawlan.config import Settings
from clawlan.discovery.advertiser import Advertiser
from clawlan.discovery.service import ServiceRecord
from clawlan.server.app import create_app
from clawlan.server.backend import Backend
from clawlan.web.identity import Identity, server_identity
from clawlan.web.limits import guarded_protocol
from clawlan.web.listen import bind

log = logging.getLogger(__name__)


class RunningServer:
    """A clawlan server bound to a socket; ``start()`` runs it on a thread, ``run()`` on this one."""

    def __init__(self, settings: Settings, backend: Backend | None = None, port: int | None = None) -> None:
        self.settings = settings
        self.backend = backend or Backend(settings)
        self.app = create_app(settings, self.backend)
        s = settings.server
        self.sock = bind(s.host, settings.backend.service_port if port is None else port,
                         port_name="backend.service_port =", host_name="server.host =")
        self.port = self.sock.getsockname()[1]
        self.host = s.host
        # On the LAN the server speaks HTTPS with its own pinned identity by default (web/identity.py).
        self.identity: Identity | None = server_identity(s.tls_cert, s.tls_key, settings.lan, s.tls, s.state_dir)
        self.tls = self.identity is not None
        if self.identity is not None:
            log.info("TLS identity: SHA-256 fingerprint %s (front ends pin it)", self.identity.fingerprint)
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            ssl_certfile=str(self.identity.cert) if self.identity else None,
            ssl_keyfile=str(self.identity.key) if self.identity else None,
            # SIGTERM stops accepting at once (readiness fails) and lets running streams finish this long.
            timeout_graceful_shutdown=s.drain_seconds,
            access_log=False,
            http=guarded_protocol(s.header_timeout_ms / 1000.0),  # slow-loris: a deadline for request heads
        )
        self.server = uvicorn.Server(config)
        self.advertiser: Advertiser | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def service(self) -> Any:
        return self.app.state.service

    def _advertise(self) -> None:
        if not self.settings.advertise:
            return
        name = self.settings.discovery.service_name or f"clawlan on {socket.gethostname().split('.')[0]}"
        record = ServiceRecord(
            name=name,
            host=self.host,
            port=self.port,
            model=self.backend.model_id,
            version=__version__,
            auth=bool(self.settings.server.api_keys),
            tls=self.tls,
            fingerprint=self.identity.fingerprint if self.identity else "",
        )
        self.advertiser = Advertiser(record, self.host)
        try:
            self.advertiser.start()
        except OSError as exc:  # no multicast on this network: serve anyway
            log.warning("mDNS advertising failed (%s); front ends must use a static address", exc)
            self.advertiser = None

    def run(self) -> None:
        """Serve until interrupted (the CLI)."""
        log.info("clawlan %s listening on %s (model loading in the background)", __version__, self.base_url)
        self._advertise()
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self._cleanup()

    def start(self, timeout: float = 120.0) -> RunningServer:
        """Serve on a background thread; return once the model is loaded (or failed)."""
        self._advertise()
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self._thread.start()
        if not self.backend.loaded.wait(timeout):
            raise TimeoutError("the model did not load in time")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._cleanup()

    def _cleanup(self) -> None:
        if self.advertiser is not None:
            self.advertiser.stop()
            self.advertiser = None
        self.sock.close()
