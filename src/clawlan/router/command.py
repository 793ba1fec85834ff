"""``clawlan router``: vLLM's router in front of every model server on the LAN, at one address.

It starts vllm-router as a child, fills its worker list from mDNS (and
``--worker`` URLs) as servers appear and leave, and advertises itself as
``_clawlan._tcp`` with TXT ``role=router`` so front ends and OpenClaw can use
it in place of one node.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from typing import Any

from clawlan import __version__
from clawlan.errors import ConfigError
from clawlan.router.browse import NodeBrowser, RouterRecord
from clawlan.router.pool import Pool
from clawlan.router.process import POLICIES, RouterOptions, RouterProcess, WorkerAdmin

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
    p.add_argument("--metrics-port", type=int, default=29000, help="the router's Prometheus port (default 29000)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="the router's Prometheus bind address (default 127.0.0.1)")
    p.add_argument("--sync-interval", type=float, default=1.0, metavar="S", help="seconds between worker-list passes (default 1)")
    p.add_argument("--router-binary", metavar="PATH", help="vllm-router launcher (default: the installed one)")
    p.add_argument("--router-arg", action="append", default=[], metavar="ARG", help="extra vllm-router flag, e.g. --router-arg=--queue-size=200 (repeatable)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity")


def check(args: argparse.Namespace) -> None:
    for name in ("port", "metrics_port"):
        v = getattr(args, name)
        if not 1 <= v <= 65535:
            raise ConfigError(f"--{name.replace('_', '-')} {v}: a port is 1..65535")
    if args.sync_interval <= 0:
        raise ConfigError(f"--sync-interval {args.sync_interval}: must be more than 0")
    for url in args.worker:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--worker {url}: give a URL such as http://10.0.0.5:8080")
    if not args.worker and not args.discover:
        raise ConfigError("--no-discover needs at least one --worker URL")


class Router:
    """The router process, the browser and the pool, started and stopped together."""

    def __init__(self, args: argparse.Namespace) -> None:
        check(args)
        self.args = args
        options = RouterOptions(
            host=args.host, port=args.port, policy=args.policy, metrics_host=args.metrics_host,
            metrics_port=args.metrics_port, log_level="debug" if args.log_level == "debug" else "warning",
            extra=list(args.router_arg),
        )  # fmt: skip
        self.process = RouterProcess(options, args.router_binary)
        self.browser: NodeBrowser | None = None
        self.pool: Pool | None = None
        self.advertiser: Any = None
        self._advertised = threading.Event()

    def start(self) -> Router:
        a = self.args
        self.process.start()
        if a.discover:
            self.browser = NodeBrowser(match=a.match, interfaces=a.mdns_interface or None, on_change=self._changed)
        self.pool = Pool(
            WorkerAdmin(self.process.url), static=a.worker,
            discovered=self.browser.urls if self.browser else None, interval_s=a.sync_interval,
        )  # fmt: skip
        self.pool.start()
        if self.browser is not None:
            self.browser.start()
        if a.advertise if a.advertise is not None else a.host not in ("127.0.0.1", "localhost", "::1"):
            self._advertise()
        return self

    def _changed(self) -> None:
        if self.pool is not None:
            self.pool.poke()

    def _advertise(self) -> None:
        from clawlan.discovery.advertiser import Advertiser

        model = next((r.model for r in (self.browser.nodes() if self.browser else []) if r.model), "")
        a = self.args
        # "(" sorts before letters: a front end that picks the first name in order (today's rule)
        # takes the router over "clawlan on HOST" nodes; TXT role=router says it outright.
        name = a.name or f"clawlan (router) on {socket.gethostname().split('.')[0]}"
        record = RouterRecord(name=name, host=a.host, port=a.port, model=model, version=__version__)
        bind = a.mdns_interface[0] if a.mdns_interface else a.host
        self.advertiser = Advertiser(record, bind)
        try:
            self.advertiser.start()
        except OSError as exc:  # no multicast here: route anyway, clients use the address
            log.warning("mDNS advertising failed (%s); clients must be given %s", exc, self.process.url)
            self.advertiser = None

    def stop(self) -> None:
        if self.advertiser is not None:
            self.advertiser.stop()  # goodbye first, so clients stop choosing us
            self.advertiser = None
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
    router.start()
    print(f"clawlan: routing the OpenAI API at {router.process.url}/v1 ({args.policy})", flush=True)
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
