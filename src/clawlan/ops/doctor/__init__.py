"""``clawlan doctor``: why can't this NUC reach the server, and what to do about it.

Each check reports PASS, WARN, FAIL or SKIP with the fix written out, in the
order a person would debug: is the config valid, does the name resolve, does
TCP connect, does the service answer (over HTTPS with a verified certificate
when it serves the LAN), how far away is it, is the port open and the firewall
letting 8080-8090 through, are both ends on one subnet, is the mDNS
advertisement visible, would a front end here trust each advertised server
(and how to accept one), is the model file sound, is there a GPU. The exit
status is the worst result: 0 pass, 1 warn, 2 fail.

Only the back end named (or configured) is sent a request; mDNS is browsed
only on the interface that faces it, and the servers advertised there get a
TLS handshake, so a doctor run never sprays the whole LAN.

The checks live by concern: network.py (the path), firewall.py (reading the
rules), service.py (what answers, mDNS and pins), machine.py (model file and
GPU), report.py (results and the printed report); this module runs them.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clawlan.config.paths import frontend_data_dir
from clawlan.discovery.service import SERVICE_TYPE, ServiceRecord
from clawlan.errors import ClawlanError
from clawlan.ops.doctor.firewall import chain_verdict, iptables_verdicts, nft_verdicts, read_firewall
from clawlan.ops.doctor.machine import MachineChecks
from clawlan.ops.doctor.network import PORT_RANGE, Iface, NetworkChecks, interfaces, source_address
from clawlan.ops.doctor.report import Check, Status, Target, parse_backend, render
from clawlan.ops.doctor.service import LAN_RTT_MS, ServiceChecks

SEED_FILES = ("network_config.json", "clawbot_config.json")

__all__ = [
    "LAN_RTT_MS", "PORT_RANGE", "Check", "Doctor", "Iface", "Status", "Target", "chain_verdict",
    "interfaces", "iptables_verdicts", "nft_verdicts", "parse_backend",
    "read_firewall", "register", "render", "run", "source_address",
]


@dataclass
class Doctor(NetworkChecks, ServiceChecks, MachineChecks):
    target: Target
    config_files: list[str] = field(default_factory=list)
    model: str | None = None
    model_sha256: str | None = None
    mdns_timeout: float = 2.0
    timeout: float = 3.0
    service_type: str = SERVICE_TYPE
    trusted_backends: list[str] = field(default_factory=list)  # frontend.trusted_backends
    frontend_data_dir: str | None = None  # where the front end keeps trusted_backends.json; None: no pins
    admin_url: str = "http://127.0.0.1:8081/admin/backends"
    checks: list[Check] = field(default_factory=list)
    records: list[ServiceRecord] | None = None
    mdns_problem: str = ""
    mdns_src: str = ""

    # Each check appends one or more results; none raises.

    def check_config(self) -> None:
        from clawlan.config import load_settings

        try:
            loaded = load_settings(self.config_files)
        except ClawlanError as exc:
            self.add(
                "config", Status.FAIL, str(exc), "correct the value named above (see clawlan config show)"
            )
            return
        files = (
            ", ".join(self.config_files) or os.environ.get("CLAWLAN_CONFIG") or "no config file (defaults)"
        )
        if loaded.warnings:
            self.add(
                "config",
                Status.WARN,
                "; ".join(loaded.warnings),
                "remove or correct the keys named (typos are ignored)",
            )
        else:
            self.add("config", Status.PASS, f"valid: {files}")

    def run(self, skip: Iterable[str] = ()) -> list[Check]:
        skip = set(skip)
        if "config" not in skip:
            self.check_config()
        addr = self.check_dns()
        reached = addr is not None and self.check_tcp(addr)
        if "mdns" not in skip:
            # Browsed before /health: the TXT record says whether the back end speaks HTTPS and with which key.
            self.browse_mdns(addr)
        if reached and addr is not None:
            self.check_health(addr)
        self.check_listening(addr)
        if "firewall" not in skip:
            self.check_firewall(addr)
        self.check_subnet(addr)
        if "mdns" not in skip:
            self.check_mdns(addr)
            self.check_pins()
        if "model" not in skip:
            self.check_model()
        if "gpu" not in skip:
            self.check_gpu()
            self.check_backend()
        return self.checks


def run(args: argparse.Namespace) -> int:
    import logging

    from clawlan.config import load_settings
    from clawlan.config.settings import FrontendSection

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe would bury the report

    files = list(args.config or [])
    if not files and not os.environ.get("CLAWLAN_CONFIG"):
        # The seed's two files, where an installer following it leaves them.
        files = [name for name in SEED_FILES if Path(name).is_file()]
    try:
        settings = load_settings(files).settings
    except ClawlanError:
        settings = None  # reported by the config check; fall back to defaults for the rest
    front = settings.frontend if settings else FrontendSection()
    if args.backend:
        target = parse_backend(args.backend)
    elif settings is not None:
        # With no --backend, the back end this machine would use: its own server when it is one
        # (server.model set or bound to the LAN), else the front end's static back end.
        target = parse_backend(settings.frontend.static_backend, "frontend.static_backend")
    else:
        target = parse_backend("127.0.0.1:8080", "default")
    doc = Doctor(
        target,
        config_files=files,
        model=args.model or (settings.server.model if settings else None),
        model_sha256=settings.server.model_sha256 if settings else None,
        mdns_timeout=args.mdns_timeout,
        timeout=args.timeout,
        service_type=args.mdns_service_type,
        # The trust a front end on this box would apply: its configured fingerprints and its pin file.
        trusted_backends=list(front.trusted_backends),
        frontend_data_dir=str(frontend_data_dir(args.data_dir or front.data_dir)),
        admin_url=f"http://127.0.0.1:{front.port}/admin/backends",
    )
    checks = doc.run(skip=args.skip or ())
    if args.json:
        print(
            json.dumps(
                {
                    "backend": asdict(target),
                    "checks": [c.to_dict() for c in checks],
                    "exit": max(int(doc.worst), 0),
                },
                indent=2,
            )
        )
    else:
        print(render(checks, target))
    return max(int(doc.worst), 0)


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("doctor", help="check config, network path, firewall, mDNS, model file and GPU")
    sp.add_argument(
        "--backend", metavar="HOST:PORT", help="back end to check (default: frontend.static_backend)"
    )
    sp.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="config file(s) to validate (default: $CLAWLAN_CONFIG, or network_config.json and "
        "clawbot_config.json in the current folder)",
    )
    sp.add_argument("--model", help="model file to check (default: server.model or the embedded model)")
    sp.add_argument("--timeout", type=float, default=3.0, help="seconds for connect and HTTP (default 3)")
    sp.add_argument("--mdns-timeout", type=float, default=2.0, help="seconds to browse mDNS (default 2)")
    sp.add_argument(
        "--skip",
        action="append",
        choices=["config", "firewall", "mdns", "model", "gpu"],
        help="leave a check out",
    )
    sp.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the front end's data dir, whose trusted_backends.json holds accepted servers "
        "(default: frontend.data_dir or ~/.local/share/clawlan/front)",
    )
    # Tests browse their own service type so other advertisers on the same loopback cannot answer.
    sp.add_argument("--mdns-service-type", default=SERVICE_TYPE, help=argparse.SUPPRESS)
    sp.add_argument("--json", action="store_true", help="results as JSON")
    sp.set_defaults(func=run)
