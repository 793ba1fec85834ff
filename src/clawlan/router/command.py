"""``clawlan router``: vLLM's router in front of every model server on the LAN, at one address.

It starts vllm-router as a child on a free loopback port, fills its worker
list from mDNS (and ``--worker`` URLs) as servers appear and leave, and
listens on ``--port`` itself through a thin pass-through (router/front.py):
HTTPS with its own pinned identity on the LAN, an SSE error event when a
node dies mid-stream. It advertises itself as ``_clawlan._tcp`` with TXT
``role=router`` and ``fp``, so a front end that pins the router's
fingerprint uses it in place of one node.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from typing import Any

from clawlan import __version__
from clawlan.discovery.service import ROUTER_ROLE, ServiceRecord, show_fingerprint
from clawlan.errors import ConfigError
from clawlan.router.browse import NodeBrowser
from clawlan.router.front import DEFAULT_MAX_BODY, Front, FrontServer
from clawlan.router.pool import Pool
from clawlan.router.process import POLICIES, RouterOptions, RouterProcess, WorkerAdmin, free_port
from clawlan.web.identity import Identity, server_identity
from clawlan.web.listen import bind

log = logging.getLogger(__name__)

DEFAULT_PORT = 8088  # a node keeps 8080 and a front end 8081 on the same box


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 serves the LAN)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"router port (default {DEFAULT_PORT})")
    p.add_argument("--policy", choices=POLICIES, default="cache_aware", help="routing policy (default cache_aware)")
    p.add_argument("--worker", action="append", default=[], metavar="URL", help="a model server to route to besides those mDNS finds (repeatable)")
    p.add_argument("--discover", action=argparse.BooleanOptionalAction, default=True, help="take model servers from mDNS (default on)")
    p.add_argument("--match", default="*", metavar="GLOB", help="only mDNS instance names matching this glob (default: all)")
    p.add_argument("--mdns-interface", action="append", default=[], metavar="ADDR", help="interface address to browse and advertise on (repeatable; default all)")
    p.add_argument("--advertise", action=argparse.BooleanOptionalAction, default=None, help="advertise the router by mDNS (default: on when bound to the LAN)")
    p.add_argument("--name", help="mDNS instance name (default: clawlan (router) on HOSTNAME)")
    p.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None, help="HTTPS with the router's own pinned certificate (default: on when bound to the LAN)")
    p.add_argument("--tls-cert", metavar="PEM", help="TLS certificate (default: the router's own, made at first start)")
    p.add_argument("--tls-key", metavar="PEM", help="TLS private key")
    p.add_argument("--state-dir", metavar="DIR", help="where the router keeps its TLS identity (default ~/.local/state/clawlan/router)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY, help=f"largest request body, more gets 413 (default {DEFAULT_MAX_BODY})")
    p.add_argument("--k8s-selector", action="append", default=[], metavar="KEY=VALUE", help="in Kubernetes: route to the pods with these labels, found by vllm-router's pod discovery (repeatable; use with --no-discover)")
    p.add_argument("--k8s-port", type=int, default=8080, help="the model servers' port in their pods (default 8080)")
    p.add_argument("--k8s-namespace", metavar="NS", help="the namespace to watch (default: all, which needs cluster-wide RBAC)")
    p.add_argument("--router-port", type=int, default=0, help="vllm-router's own port on 127.0.0.1 (default: a free one)")
    p.add_argument("--metrics-port", type=int, default=29000, help="the router's Prometheus port (default 29000)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="the router's Prometheus bind address (default 127.0.0.1)")
    p.add_argument("--sync-interval", type=float, default=1.0, metavar="S", help="seconds between worker-list passes (default 1)")
    p.add_argument("--router-binary", metavar="PATH", help="vllm-router launcher (default: the installed one)")
    p.add_argument("--router-arg", action="append", default=[], metavar="ARG", help="extra vllm-router flag, e.g. --router-arg=--queue-size=200 (repeatable)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity")


def check(args: argparse.Namespace) -> None:
    for name in ("port", "metrics_port", "router_port", "k8s_port"):
        v = getattr(args, name)
        if not (0 if name == "router_port" else 1) <= v <= 65535:
            raise ConfigError(f"--{name.replace('_', '-')} {v}: a port is 1..65535")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    if args.max_body_bytes < 1024:
        raise ConfigError(f"--max-body-bytes {args.max_body_bytes}: at least 1024")
    if args.sync_interval <= 0:
        raise ConfigError(f"--sync-interval {args.sync_interval}: must be more than 0")
    for url in args.worker:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--worker {url}: give a URL such as http://10.0.0.5:8080")
    for sel in args.k8s_selector:
        if "=" not in sel or not sel.split("=", 1)[0]:
            raise ConfigError(f"--k8s-selector {sel}: give a label as KEY=VALUE, e.g. app.kubernetes.io/component=model-server")
    if args.k8s_selector and (args.worker or args.discover):
        raise ConfigError("--k8s-selector: vllm-router's pod discovery keeps the worker list alone; "
                          "use it with --no-discover and no --worker")
    if not args.worker and not args.discover and not args.k8s_selector:
        raise ConfigError("--no-discover needs at least one --worker URL or --k8s-selector")


def options_from(args: argparse.Namespace) -> RouterOptions:
    """What vllm-router is asked to do. It listens on loopback only: the LAN reaches it through our front
    (TLS, error events, no worker-management paths); its URL (``process.url``) stays usable on this box."""
    extra = list(args.router_arg)
    if args.k8s_selector:  # Kubernetes pod discovery is vllm-router's own; we only pass it on
        extra += ["--service-discovery", "--selector", *args.k8s_selector, "--service-discovery-port", str(args.k8s_port)]
        extra += ["--service-discovery-namespace", args.k8s_namespace] if args.k8s_namespace else []
    return RouterOptions(
        host="127.0.0.1", port=args.router_port or free_port(), policy=args.policy, metrics_host=args.metrics_host,
        metrics_port=args.metrics_port, log_level="debug" if args.log_level == "debug" else "warning", extra=extra,
    )  # fmt: skip


class Router:
    """The router process, the browser and the pool, started and stopped together."""

    def __init__(self, args: argparse.Namespace) -> None:
        check(args)
        self.args = args
        self.process = RouterProcess(options_from(args), args.router_binary)
        self.lan = args.host not in ("127.0.0.1", "localhost", "::1")
        # Same rule as `clawlan serve`: HTTPS with our own identity on the LAN, plain on loopback unless asked.
        try:
            self.identity: Identity | None = server_identity(args.tls_cert, args.tls_key, self.lan, args.tls,
                                                             args.state_dir, kind="router")
        except (OSError, ValueError) as exc:  # a missing or non-PEM certificate, an unwritable state dir
            where = f"--tls-cert {args.tls_cert}" if args.tls_cert else f"--state-dir {args.state_dir or '(default)'}"
            raise ConfigError(f"{where}: {getattr(exc, 'strerror', None) or exc}") from None
        self.sock = bind(args.host, args.port)
        self.port = int(self.sock.getsockname()[1])
        self.front: FrontServer | None = None
        self.browser: NodeBrowser | None = None
        self.pool: Pool | None = None
        self.advertiser: Any = None
        self._advertised = threading.Event()

    @property
    def url(self) -> str:
        """Where clients reach the router (the front): https:// when it has an identity."""
        host = "127.0.0.1" if self.args.host in ("0.0.0.0", "") else self.args.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.identity else 'http'}://{host}:{self.port}"

    def start(self) -> Router:
        a = self.args
        self.process.start()
        self.front = FrontServer(Front(self.process.url, max_body_bytes=a.max_body_bytes), self.sock, self.identity)
        self.front.start()
        if a.discover:
            self.browser = NodeBrowser(match=a.match, interfaces=a.mdns_interface or None, on_change=self._changed)
        if not a.k8s_selector:  # in Kubernetes the worker list is vllm-router's own (pod discovery)
            self.pool = Pool(
                WorkerAdmin(self.process.url), static=a.worker,
                discovered=self.browser.urls if self.browser else None, interval_s=a.sync_interval,
            )  # fmt: skip
            self.pool.start()
        if self.browser is not None:
            self.browser.start()
        if a.advertise if a.advertise is not None else self.lan:
            self._advertise()
        return self

    def _changed(self) -> None:
        if self.pool is not None:
            self.pool.poke()

    def _advertise(self) -> None:
        from clawlan.discovery.advertiser import Advertiser

        found = self.browser.nodes() if self.browser else []
        model = next((r.model for r in found if r.model), "")
        a = self.args
        # "(" sorts before letters: a front end that picks the first name in order (today's rule)
        # takes the router over "clawlan on HOST" nodes; TXT role=router says it outright.
        name = a.name or f"clawlan (router) on {socket.gethostname().split('.')[0]}"
        record = ServiceRecord(name=name, host=a.host, port=self.port, model=model, version=__version__, role=ROUTER_ROLE,
                              auth=any(r.auth for r in found), tls=self.identity is not None,
                              fingerprint=self.identity.fingerprint if self.identity else "")
        bind = a.mdns_interface[0] if a.mdns_interface else a.host
        self.advertiser = Advertiser(record, bind)
        try:
            self.advertiser.start()
        except OSError as exc:  # no multicast here: route anyway, clients use the address
            log.warning("mDNS advertising failed (%s); clients must be given %s", exc, self.url)
            self.advertiser = None

    def stop(self) -> None:
        if self.advertiser is not None:
            self.advertiser.stop()  # goodbye first, so clients stop choosing us
            self.advertiser = None
        if self.front is not None:
            self.front.stop()  # running streams get a few seconds; vllm-router is still there for them
            self.front = None
        else:
            self.sock.close()
        if self.browser is not None:
            self.browser.close()
        if self.pool is not None:
            self.pool.stop()
        self.process.stop()


def cmd_router(args: argparse.Namespace) -> int:
    if args.log_level:
        logging.getLogger().setLevel(args.log_level.upper())
    router = Router(args)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        router.start()
    except BaseException:
        router.stop()
        raise
    print(f"clawlan: routing the OpenAI API at {router.url}/v1 ({args.policy})", flush=True)
    if router.identity is not None:
        print(f"clawlan: TLS fingerprint {show_fingerprint(router.identity.fingerprint)}; front ends pin it "
              "(frontend.trusted_backends, or accept it at the front end's /admin/backends)", flush=True)
    try:
        while not done.wait(1.0):
            if not router.process.alive():
                log.error("vllm-router exited with status %s", router.process.proc and router.process.proc.returncode)
                return 1
    finally:
        router.stop()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("router", help="route to several model servers found on the LAN (vLLM's router)")
    add_flags(p)
    p.set_defaults(func=cmd_router)
