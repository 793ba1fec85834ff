"""Real pieces on loopback for the router tests: ``clawlan serve`` nodes as child processes (so one
can be SIGKILLed), stub workers for the membership tests, and ``clawlan router`` in this process.

Every advertisement carries a name with this run's random prefix and the router only takes names
matching it (``--match``), so other test runs on the machine are never routed to.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from clawlan.cli import build_parser
from clawlan.discovery.service import SERVICE_TYPE

pytest.importorskip("zeroconf")
from zeroconf import IPVersion, ServiceInfo, Zeroconf  # noqa: E402

from clawlan.router.command import Router  # noqa: E402
from clawlan.router.process import find_binary, free_port  # noqa: E402

SRC = str(Path(__file__).resolve().parents[2] / "src")
LOOPBACK = "127.0.0.1"


def have_router() -> bool:
    try:
        find_binary()
    except Exception:  # noqa: BLE001 - not installed: the tests that need it skip
        return False
    return True


needs_router = pytest.mark.skipif(not have_router(), reason="vllm-router is not installed (pip install 'clawlan[router]')")


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.1) -> Any:
    """Poll ``cond`` until it is truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(step_s)


def status(url: str, path: str = "/health") -> int:
    try:
        return httpx.get(url + path, timeout=2.0).status_code
    except httpx.HTTPError:
        return 0


@pytest.fixture(scope="module")
def prefix() -> str:
    # One per test module: the cluster's nodes advertise under theirs while they run, and a
    # membership test's router (``--match PREFIX-*``) must not see them.
    return f"rt{uuid.uuid4().hex[:8]}"


class Node:
    """``clawlan serve --threads 1`` as a child process, advertised on loopback as ``name``."""

    def __init__(self, name: str, port: int, ctx: int, log_dir: Path) -> None:
        self.name, self.port, self.ctx = name, port, ctx
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Node:
        # A long drain, as in the Kubernetes manifests: SIGTERM lets running streams finish. A long
        # progress timeout: an 11k-token prefill on one thread of a shared 2-core machine can pass 30 s.
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "CLAWLAN_DISCOVERY_SERVICE_NAME": self.name, "CLAWLAN_SERVER_DRAIN_SECONDS": "120"}  # fmt: skip
        argv = [sys.executable, "-m", "clawlan", "serve", "--host", LOOPBACK, "--port", str(self.port), "--threads", "1",
                "--batch-size", "2", "--ctx", str(self.ctx), "--kv-tokens", str(2 * self.ctx), "--timeout-ms", "600000", "--advertise"]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def wait_healthy(self, timeout_s: float = 300) -> float:
        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-2000:]
            return status(self.url) == 200

        wait_for(up, timeout_s, f"{self.name} /health 200", step_s=0.05)
        return time.monotonic()

    def load(self) -> int:
        try:
            return int(httpx.get(self.url + "/get_load", timeout=2.0).json()["load"])
        except httpx.HTTPError:
            return 0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def nodes(prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    """Three real nodes on the embedded model. Context 16k: the OpenClaw-sized request needs ~11k."""
    log_dir = tmp_path_factory.mktemp("nodes")
    started = [Node(f"{prefix}-node{i}", free_port(), 16384, log_dir).start() for i in range(3)]
    try:
        for n in started:
            n.wait_healthy()
        yield started
    finally:
        for n in started:
            n.stop()


def router_args(prefix: str, *extra: str) -> Any:
    argv = ["router", "--port", str(free_port()), "--metrics-port", str(free_port()), "--match", f"{prefix}-*",
            "--mdns-interface", LOOPBACK, "--sync-interval", "0.5", *extra]  # fmt: skip
    return build_parser().parse_args(argv)


@pytest.fixture
def make_router(prefix: str) -> Iterator[Callable[..., Router]]:
    made: list[Router] = []

    def make(*extra: str) -> Router:
        r = Router(router_args(prefix, *extra))
        made.append(r)
        return r.start()

    yield make
    for r in made:
        r.stop()


def members(router: Router) -> set[str]:
    try:
        r = httpx.get(router.process.url + "/list_workers", timeout=2.0)
    except httpx.HTTPError:
        return set()
    return {u.rstrip("/") for u in r.json()["urls"]}


class StubWorker:
    """A worker without a model: /health answers ``health`` (200 or 503); enough for membership tests."""

    def __init__(self) -> None:
        self.health = 200
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                code, body = (stub.health, b'{"status":"ok"}') if self.path == "/health" else (200, b'{"load":0}')
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Announcer:
    """Advertises stub workers as ``_clawlan._tcp`` services on loopback, the way ``clawlan serve`` does."""

    def __init__(self) -> None:
        self.zc = Zeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
        self.infos: dict[str, ServiceInfo] = {}

    def announce(self, name: str, port: int, **txt: str) -> None:
        info = ServiceInfo(
            SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", addresses=[socket.inet_aton(LOOPBACK)], port=port,
            properties={"model": "stub", "api": "/v1", "version": "0", "auth": "0", "tls": "0", **txt},
            server=f"{name}.local.",
        )  # fmt: skip
        self.zc.register_service(info)
        self.infos[name] = info

    def withdraw(self, name: str) -> None:
        self.zc.unregister_service(self.infos.pop(name))

    def close(self) -> None:
        for name in list(self.infos):
            self.withdraw(name)
        self.zc.close()


@pytest.fixture
def announcer() -> Iterator[Announcer]:
    a = Announcer()
    yield a
    a.close()


@pytest.fixture
def stub_worker() -> Iterator[Callable[[], StubWorker]]:
    made: list[StubWorker] = []

    def make() -> StubWorker:
        w = StubWorker()
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
