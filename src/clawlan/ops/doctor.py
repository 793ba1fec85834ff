"""``clawlan doctor``: why can't this NUC reach the server, and what to do about it.

Each check reports PASS, WARN, FAIL or SKIP with the fix written out, in the
order a person would debug: is the config valid, does the name resolve, does
TCP connect, does the service answer, how far away is it, is the port open
and the firewall letting 8080-8090 through, are both ends on one subnet, is
the mDNS advertisement visible, is the model file sound, is there a GPU. The
exit status is the worst result: 0 pass, 1 warn, 2 fail.

Only the back end named (or configured) is contacted; mDNS is browsed only on
the interface that faces it, so a doctor run never sprays the whole LAN.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from urllib.parse import urlsplit

from clawlan.errors import ClawlanError, ConfigError

LAN_RTT_MS = 5.0  # the seed: "LAN latency under 5 ms"
PORT_RANGE = range(8080, 8091)  # the seed: "open TCP/UDP 8080-8090"
SEED_FILES = ("network_config.json", "clawbot_config.json")


class Status(IntEnum):
    PASS = 0
    SKIP = -1  # shown, but never worsens the exit status
    WARN = 1
    FAIL = 2


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status.name, "detail": self.detail, "fix": self.fix}


@dataclass
class Target:
    host: str
    port: int
    scheme: str = "http"
    source: str = "flag --backend"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_backend(text: str, source: str = "flag --backend") -> Target:
    """HOST:PORT or a URL; the port defaults to the seed's 8080."""
    raw = text.strip()
    u = urlsplit(raw if "://" in raw else f"http://{raw}")
    try:
        port = u.port or 8080
    except ValueError:
        raise ConfigError(
            f"{source} {text!r}: the port is not a number 1-65535; write HOST:PORT, e.g. 192.168.1.100:8080"
        ) from None
    if not u.hostname:
        raise ConfigError(f"{source} {text!r} has no host; write HOST:PORT, e.g. 192.168.1.100:8080")
    return Target(u.hostname, port, u.scheme or "http", source)


# --- network facts ------------------------------------------------------------------------------


@dataclass
class Iface:
    name: str
    address: str
    netmask: str

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_interface(f"{self.address}/{self.netmask}").network

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.network.prefixlen}"


def interfaces() -> list[Iface]:
    import psutil

    out = []
    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6) and a.netmask and "%" not in a.address:
                with contextlib.suppress(ValueError):
                    out.append(Iface(name, a.address, a.netmask))
    return out


def source_address(addr: str, port: int) -> str | None:
    """The local address the kernel would use to reach ``addr``; None when there is no route.

    A UDP connect() only consults the routing table: no packet leaves the machine.
    """
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.connect((addr, port))
        except OSError:
            return None
        return s.getsockname()[0]


def iface_for(address: str | None, ifaces: Iterable[Iface]) -> Iface | None:
    return next((i for i in ifaces if i.address == address), None) if address else None


def tcpdump_command(iface: str, addr: str, port: int) -> str:
    # The seed's capture command, filled in with the interface that faces the back end.
    return f"tcpdump -i {iface} host {addr} and port {port} -w capture.pcap"


# --- firewall rules -----------------------------------------------------------------------------


def _ports(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.replace(" ", "").strip("{}").split(","):
        if not part:
            continue
        lo, _, hi = part.replace("-", ":").partition(":")
        with contextlib.suppress(ValueError):
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


# A rule: the ports it covers (None: every port) and its target, a verdict (ACCEPT, DROP,
# REJECT), RETURN, or another chain to jump to. Only unconditional rules are kept (protocol and
# destination-port matches only): the others apply to some traffic (one source, interface or
# connection state), so they cannot decide what a new connection from the LAN meets.
Rule = tuple[set[int] | None, str]
VERDICTS = ("ACCEPT", "DROP", "REJECT")
MAX_JUMPS = 16  # chains calling chains deeper than this are a loop, not a firewall


def chain_verdict(chains: dict[str, list[Rule]], chain: str, port: int, depth: int = 0) -> str | None:
    """What ``chain`` does with a TCP connection to ``port``: a verdict, or None when it falls off
    the end or RETURNs (the caller's next rule then applies). User chains are followed, as ufw's
    INPUT -> ufw-before-input -> ufw-user-input, where ``ufw allow 8080`` puts its ACCEPT."""
    if depth > MAX_JUMPS:
        return None
    for covered, target in chains.get(chain, []):
        if covered is not None and port not in covered:
            continue
        if target in VERDICTS:
            return target
        if target == "RETURN":
            return None
        found = chain_verdict(chains, target, port, depth + 1)
        if found is not None:
            return found
    return None


def iptables_verdicts(rules: str, ports: Iterable[int]) -> dict[int, str]:
    """For each TCP port, what the INPUT chain of ``iptables-save``/``iptables -S`` output does.

    Rules are walked in order, into the chains they jump to; the first verdict that covers the
    port decides, else the INPUT chain's policy.
    """
    policy = "ACCEPT"
    chains: dict[str, list[Rule]] = {}
    for line in rules.splitlines():
        line = line.strip()
        m = re.match(r"^(?::INPUT|-P INPUT)\s+(\w+)", line)
        if m:
            policy = m.group(1)
            continue
        m = re.match(r"^-A (\S+) (.*)$", line)
        if not m:
            continue
        chain, body = m.groups()
        target = re.search(r"-[jg] (\S+)", body)
        if not target or target.group(1) in ("LOG", "NFLOG", "ULOG", "MARK", "CONNMARK"):
            continue  # non-terminating targets: the next rule decides
        body = body[: target.start()]
        body = re.sub(r'-m comment --comment ("[^"]*"|\S+)', "", body)
        body = re.sub(r"-m (tcp|multiport)\b", "", body)
        portspec = re.search(r"--dports? (\S+)", body)
        body = re.sub(r"--dports? \S+", "", body)
        proto = re.search(r"-p (\w+)", body)
        body = re.sub(r"-p \w+", "", body).strip()
        if body:  # conditional on something else
            continue
        if proto and proto.group(1) not in ("tcp", "all"):
            continue
        chains.setdefault(chain, []).append((_ports(portspec.group(1)) if portspec else None, target.group(1)))
    return {port: chain_verdict(chains, "INPUT", port) or policy for port in ports}


def nft_verdicts(ruleset: str, ports: Iterable[int]) -> dict[int, str]:
    """The same for ``nft list ruleset``: every chain hooked on input, into the chains it jumps to,
    first verdict, else its policy; any input chain that drops a port wins."""
    out: dict[int, str] = {p: "ACCEPT" for p in ports}
    for table in re.finditer(r"^table (\S+ \S+) \{(.*?)^\}", ruleset, re.S | re.M):
        chains: dict[str, list[Rule]] = {}
        policies: dict[str, str] = {}
        for chain in re.finditer(r"chain (\S+) \{(.*?)\n\s*\}", table.group(2), re.S):
            name, body = chain.groups()
            if re.search(r"hook input", body):
                pol = re.search(r"policy (\w+);", body)
                policies[name] = (pol.group(1) if pol else "accept").upper()
            rules: list[Rule] = chains.setdefault(name, [])
            for line in body.splitlines():
                line = line.strip()
                m = re.search(r"\b(accept|drop|reject|return)\b|\b(?:jump|goto) (\S+)", line)
                if not m or line.startswith("type "):
                    continue
                dport = re.search(r"tcp dport (\{[^}]*\}|\S+)", line)
                rest = re.sub(
                    r"tcp dport (\{[^}]*\}|\S+)|\b(accept|drop|reject|return)\b|\b(jump|goto) \S+"
                    r'|counter( packets \d+ bytes \d+)?|ip protocol tcp|meta l4proto tcp|comment "[^"]*"',
                    "",
                    line,
                )
                rest = re.sub(r"with \S+ \S+( \S+)?", "", rest).strip()
                if rest:
                    continue
                rules.append((_ports(dport.group(1)) if dport else None, (m.group(1) or "").upper() or m.group(2)))
        for name, policy in policies.items():
            for port in out:
                verdict = chain_verdict(chains, name, port) or policy
                if verdict != "ACCEPT":
                    out[port] = verdict
    return out


def read_firewall() -> list[tuple[str, str]]:
    """(tool, rules text) from every one of nft and iptables that can be read (both, on iptables-nft
    systems: each may hold rules the other does not show)."""
    out = []
    for tool, cmd in (("nft", ["nft", "list", "ruleset"]), ("iptables", ["iptables-save"])):
        exe = shutil.which(cmd[0])
        if not exe:
            continue
        try:
            r = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            out.append((tool, r.stdout))
    return out


# --- the checks ---------------------------------------------------------------------------------


@dataclass
class Doctor:
    target: Target
    config_files: list[str] = field(default_factory=list)
    model: str | None = None
    model_sha256: str | None = None
    mdns_timeout: float = 2.0
    timeout: float = 3.0
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: Status, detail: str, fix: str = "") -> Check:
        c = Check(name, status, detail, fix)
        self.checks.append(c)
        return c

    @property
    def worst(self) -> Status:
        return max((c.status for c in self.checks), default=Status.PASS)

    # Each check below appends one or more results; none raises.

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

    def check_dns(self) -> str | None:
        host = self.target.host
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            self.add("dns", Status.PASS, f"{host} is an address; no lookup needed")
            return host
        t0 = time.perf_counter()
        try:
            infos = socket.getaddrinfo(host, self.target.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            self.add(
                "dns",
                Status.FAIL,
                f"cannot resolve {host}: {exc.strerror}",
                f"use the server's IP address (--backend 192.168.x.y:{self.target.port}), or add '{host}' to "
                "/etc/hosts; give the server a static IP (a DHCP change breaks the link)",
            )
            return None
        addr = str(infos[0][4][0])
        ms = (time.perf_counter() - t0) * 1000
        self.add("dns", Status.PASS, f"{host} -> {addr} in {ms:.0f} ms")
        return addr

    def check_tcp(self, addr: str) -> bool:
        port = self.target.port
        src = source_address(addr, port)
        iface = iface_for(src, interfaces())
        dump = tcpdump_command(iface.name if iface else "any", addr, port)
        t0 = time.perf_counter()
        try:
            with socket.create_connection((addr, port), timeout=self.timeout):
                pass
        except OSError as exc:
            ms = (time.perf_counter() - t0) * 1000
            code = exc.errno
            if isinstance(exc, TimeoutError) or code in (errno.ETIMEDOUT, errno.EAGAIN):
                why = f"no answer from {addr}:{port} within {self.timeout:g} s (packets dropped)"
                fix = (
                    f"a firewall on the server (or between) drops the traffic: allow TCP 8080-8090 there "
                    f"(iptables -I INPUT -p tcp --dport 8080:8090 -j ACCEPT, or ufw allow 8080:8090/tcp); capture with: {dump}"
                )
            elif code == errno.ECONNREFUSED:
                why = f"{addr}:{port} refused the connection after {ms:.1f} ms: the host is up but nothing listens on {port}"
                fix = (
                    f"start the server there (clawlan serve --host 0.0.0.0), check backend.service_port is {port}, "
                    f"or a firewall REJECT rule; capture with: {dump}"
                )
            elif code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                why = f"no route to {addr} ({os.strerror(code)})"
                fix = (
                    "this machine has no route to the back end: check both ends' IP address and subnet mask "
                    f"(see the subnet check) and the cable/Wi-Fi; capture with: {dump}"
                )
            else:
                why = f"connect to {addr}:{port} failed: {exc}"
                fix = f"capture with: {dump}"
            self.add("tcp", Status.FAIL, why, fix)
            return False
        ms = (time.perf_counter() - t0) * 1000
        self.add(
            "tcp",
            Status.PASS,
            f"connected to {addr}:{port} in {ms:.2f} ms" + (f" via {iface.name}" if iface else ""),
        )
        return True

    def check_health(self, addr: str) -> None:
        import httpx

        host = f"[{addr}]" if ":" in addr else addr
        url = f"{self.target.scheme}://{host}:{self.target.port}/health"
        times = []
        try:
            with httpx.Client(timeout=self.timeout, verify=False, trust_env=False) as client:
                r = client.get(url)
                # A few more requests on the same connection: the RTT a front end will see per call.
                for _ in range(5):
                    t0 = time.perf_counter()
                    client.get(url)
                    times.append((time.perf_counter() - t0) * 1000)
        except httpx.HTTPError as exc:
            self.add(
                "health",
                Status.FAIL,
                f"GET {url} failed: {type(exc).__name__}: {exc}",
                "the port answers TCP but not HTTP: is this clawlan serve (or another program on that port)? "
                "check --backend's scheme (http/https)",
            )
            return
        if r.status_code != 200:
            body = " ".join(r.text.split())[:100]
            fix = (
                "another program answers on this port (clawlan serves /health): check the port number"
                if r.status_code == 404
                else "the server is up but not ready (still loading the model?); see its log"
            )
            self.add("health", Status.FAIL, f"GET {url} returned {r.status_code}: {body!r}", fix)
        else:
            self.add("health", Status.PASS, f"GET {url} -> 200 {r.text[:80].strip()}")
        rtt = statistics.median(times)
        if rtt <= LAN_RTT_MS:
            self.add("rtt", Status.PASS, f"median /health round trip {rtt:.2f} ms (target {LAN_RTT_MS:g} ms)")
        else:
            self.add(
                "rtt",
                Status.WARN,
                f"median /health round trip {rtt:.1f} ms, above the {LAN_RTT_MS:g} ms a wired LAN should give",
                "use wired Ethernet (2.5 GbE recommended), keep front end and server on one switch, "
                "and check the server is not swapping or overloaded",
            )

    def check_listening(self, addr: str | None) -> None:
        """On the server itself: is the port in LISTEN, and on which address."""
        import psutil

        local = {i.address for i in interfaces()} | {"127.0.0.1", "::1"}
        port = self.target.port
        if addr is None or addr not in local:
            self.add(
                "listening",
                Status.SKIP,
                f"back end {addr or self.target.host} is another machine; TCP check covers it",
            )
            return
        try:
            conns = psutil.net_connections(kind="tcp")
        except (psutil.AccessDenied, OSError) as exc:
            self.add(
                "listening", Status.SKIP, f"cannot list sockets: {exc}", "run as root to see every socket"
            )
            return
        binds = sorted(
            {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port}
        )
        if not binds:
            self.add(
                "listening",
                Status.FAIL,
                f"nothing on this machine listens on TCP {port}",
                f"start it: clawlan serve --host 0.0.0.0 (backend.service_port = {port})",
            )
        elif all(b in ("127.0.0.1", "::1") for b in binds):
            self.add(
                "listening",
                Status.WARN,
                f"port {port} listens on {', '.join(binds)} only: other machines cannot reach it",
                "serve the LAN: clawlan serve --host 0.0.0.0 (or server.host in the config)",
            )
        else:
            self.add("listening", Status.PASS, f"port {port} listens on {', '.join(binds)}")

    def check_firewall(self, addr: str | None) -> None:
        local = {i.address for i in interfaces()} | {"127.0.0.1", "::1"}
        if addr is not None and addr not in local:
            self.add(
                "firewall",
                Status.SKIP,
                "the back end's firewall is on the other machine",
                "run clawlan doctor on the server to read its rules",
            )
            return
        found = read_firewall()
        if not found:
            self.add(
                "firewall",
                Status.SKIP,
                "no readable nft/iptables rules (tool missing or not root)",
                "check by hand that TCP 8080-8090 is allowed (clawlan's ports)",
            )
            return
        verdicts = dict.fromkeys(PORT_RANGE, "ACCEPT")
        for tool, text in found:
            for port, v in (nft_verdicts if tool == "nft" else iptables_verdicts)(text, PORT_RANGE).items():
                if v != "ACCEPT":
                    verdicts[port] = f"{tool} {v}"
        tools = "/".join(t for t, _ in found)
        blocked = [p for p, v in verdicts.items() if v != "ACCEPT"]
        if not blocked:
            self.add("firewall", Status.PASS, f"{tools}: TCP 8080-8090 allowed")
            return
        status = Status.FAIL if self.target.port in blocked else Status.WARN
        fix = (
            "nft add rule inet filter input tcp dport 8080-8090 accept"
            if verdicts[blocked[0]].startswith("nft")
            else "iptables -I INPUT -p tcp --dport 8080:8090 -j ACCEPT"
        )
        self.add(
            "firewall",
            status,
            "INPUT rules: "
            + "; ".join(
                f"{v} TCP {_ranges([p for p in blocked if verdicts[p] == v])}"
                for v in dict.fromkeys(verdicts[p] for p in blocked)
            ),
            f"allow clawlan's ports 8080-8090: {fix} (or ufw allow 8080:8090/tcp)",
        )

    def check_subnet(self, addr: str | None) -> None:
        if addr is None:
            self.add("subnet", Status.SKIP, "no address to compare")
            return
        ip = ipaddress.ip_address(addr)
        if ip.is_loopback:
            self.add("subnet", Status.PASS, f"{addr} is this machine (loopback)")
            return
        ifaces = [i for i in interfaces() if ipaddress.ip_address(i.address).version == ip.version]
        inside = [i for i in ifaces if ip in i.network]
        if inside:
            self.add("subnet", Status.PASS, f"{addr} is on {inside[0].name}'s subnet {inside[0].network}")
            return
        lan = [i for i in ifaces if not ipaddress.ip_address(i.address).is_loopback]
        # Would a shorter mask on one of our interfaces put the back end on it? Then the two ends
        # most likely disagree about the mask (one /16, the other /24): the seed's "check the masks".
        for i in lan:
            for prefix in range(i.network.prefixlen - 1, max(i.network.prefixlen - 9, 7), -1):
                wider = ipaddress.ip_interface(f"{i.address}/{prefix}").network
                if ip in wider:
                    self.add(
                        "subnet",
                        Status.FAIL,
                        f"{addr} is outside {i.name}'s {i.cidr} ({i.network}) but inside {wider}: "
                        "the two ends' subnet masks disagree",
                        f"give both machines the same netmask (e.g. both /{prefix}: "
                        f"ip addr replace {i.address}/{prefix} dev {i.name}), or move the server into {i.network}",
                    )
                    return
        mine = ", ".join(f"{i.name} {i.cidr}" for i in lan) or "none"
        self.add(
            "subnet",
            Status.WARN,
            f"{addr} is on none of this machine's subnets ({mine}); traffic goes through a router",
            "put front ends and the server on one subnet (mDNS does not cross routers), or use a static back end",
        )

    def check_mdns(self, addr: str | None) -> None:
        from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

        from clawlan.discovery.service import SERVICE_TYPE

        src = source_address(addr, self.target.port) if addr else None
        if not src or ":" in src:
            self.add("mdns", Status.SKIP, "no IPv4 interface faces the back end; mDNS not browsed")
            return
        found: list[str] = []
        seen = threading.Event()

        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            if state_change is ServiceStateChange.Added:
                found.append(name)
                seen.set()

        # Browse only on the interface facing the back end: the question is whether *this* path sees it.
        try:
            zc = Zeroconf(interfaces=[src], ip_version=IPVersion.V4Only)
        except OSError as exc:
            self.add(
                "mdns",
                Status.WARN,
                f"cannot open mDNS on {src}: {exc}",
                "check UDP 5353 is free and multicast allowed",
            )
            return
        try:
            browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
            seen.wait(self.mdns_timeout)  # an event with a bounded wait, not a sleep
            browser.cancel()
        finally:
            zc.close()
        if found:
            self.add("mdns", Status.PASS, f"{SERVICE_TYPE} seen on {src}: {', '.join(sorted(set(found)))}")
        else:
            self.add(
                "mdns",
                Status.WARN,
                f"no {SERVICE_TYPE} service seen on {src} within {self.mdns_timeout:g} s",
                "on the server: clawlan serve --host 0.0.0.0 advertises on the LAN (discovery.advertise); "
                'allow UDP 5353 multicast; or set frontend.discovery_protocol = "static" with frontend.static_backend',
            )

    def check_model(self) -> None:
        from clawlan.model import store

        if self.model:
            path = Path(self.model).expanduser()
            want = self.model_sha256
        else:
            path = store.cache_dir() / store.EMBEDDED_NAME
            want = store.EMBEDDED_SHA256
            if not path.exists():
                self.add(
                    "model",
                    Status.SKIP,
                    f"embedded model not assembled yet ({path})",
                    "clawlan serve assembles it on first start",
                )
                self._disk(path.parent, store.EMBEDDED_SIZE)
                return
        if not path.exists():
            self.add(
                "model", Status.FAIL, f"model file {path} does not exist", "check server.model / --model"
            )
            return
        st = path.stat()
        readable_by_others = bool(st.st_mode & 0o004)
        dir_ok = bool(path.parent.stat().st_mode & 0o001)
        if not os.access(path, os.R_OK) or not st.st_mode & 0o444:
            self.add(
                "model-perms",
                Status.FAIL,
                f"{path} is not readable (mode {st.st_mode & 0o777:o})",
                f"chmod 644 {path}",
            )
        elif not readable_by_others or not dir_ok:
            self.add(
                "model-perms",
                Status.WARN,
                f"{path} mode {st.st_mode & 0o777:o}, folder mode {path.parent.stat().st_mode & 0o777:o}: "
                "a service user other than the owner cannot read it",
                f"chmod 755 {path.parent} && chmod 644 {path}",
            )
        else:
            self.add("model-perms", Status.PASS, f"{path} readable (mode {st.st_mode & 0o777:o})")
        self._disk(path.parent, st.st_size)
        want = (want or store.expected_sha256(path) or "").lower()
        if not want:
            self.add(
                "model-checksum",
                Status.WARN,
                f"no checksum known for {path.name}",
                f"record one: sha256sum {path.name} > {path.parent / store.SUMS_NAME} (or set server.model_sha256)",
            )
            return
        stamp = path.with_suffix(".verified")
        if stamp.is_file() and stamp.read_text().strip() == want and stamp.stat().st_mtime >= st.st_mtime:
            self.add("model-checksum", Status.PASS, f"sha256 {want[:16]}... verified earlier ({stamp.name})")
            return
        got = store.sha256_file(path)
        if got == want:
            self.add("model-checksum", Status.PASS, f"sha256 {got[:16]}... matches")
        else:
            self.add(
                "model-checksum",
                Status.FAIL,
                f"sha256 of {path.name} is {got[:16]}..., expected {want[:16]}...",
                "the file is damaged or a different version: copy the model again",
            )

    def _disk(self, folder: Path, model_bytes: int) -> None:
        folder = folder if folder.exists() else Path.home()
        du = shutil.disk_usage(folder)
        pct = du.used / du.total * 100
        if du.free < 1 << 30:
            self.add(
                "disk",
                Status.FAIL if du.free < model_bytes else Status.WARN,
                f"{du.free / 1e9:.2f} GB free on {folder} ({pct:.0f}% used)",
                f"free space: df -h {folder}; remove old models or logs",
            )
        else:
            self.add("disk", Status.PASS, f"{du.free / 1e9:.1f} GB free on {folder} ({pct:.0f}% used)")

    def check_gpu(self) -> None:
        exe = shutil.which("nvidia-smi")
        if not exe:
            self.add(
                "gpu", Status.SKIP, "no NVIDIA GPU driver (nvidia-smi not found): inference runs on the CPU"
            )
            return
        try:
            r = subprocess.run(
                [
                    exe,
                    "--query-gpu=name,driver_version,memory.total,memory.free",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.add(
                "gpu", Status.FAIL, f"nvidia-smi failed: {exc}", "reinstall the NVIDIA driver; check dmesg"
            )
            return
        if r.returncode != 0:
            self.add(
                "gpu",
                Status.FAIL,
                f"nvidia-smi: {r.stderr.strip() or r.stdout.strip()}",
                "reinstall or reload the NVIDIA driver",
            )
            return
        for line in r.stdout.strip().splitlines():
            name, driver, total, free = (x.strip() for x in line.split(","))
            st = Status.PASS if float(free) > 0.1 * float(total) else Status.WARN
            self.add(
                "gpu",
                st,
                f"{name}, driver {driver}, {float(free) / 1024:.1f} of {float(total) / 1024:.1f} GiB free",
                ""
                if st is Status.PASS
                else "stop other GPU processes (nvidia-smi lists them) or lower batch_size",
            )

    def check_backend(self) -> None:
        """Which backend and devices this machine's llama.cpp library has (CPU, CUDA, Vulkan, ROCm)."""
        try:
            from clawlan.engine.devices import GPU_BUILD_HINT, backend_info

            info = backend_info()
        except Exception as exc:  # no server extras here (a front-end box), or a library that does not load
            self.add("llama-backend", Status.SKIP, f"llama.cpp not loadable here ({type(exc).__name__}: {exc})")
            return
        gpus = [d for d in info.devices if d.type in ("GPU", "IGPU")]
        listed = "; ".join(
            f"{d.name} {d.description}" + (f" ({d.memory_free / 2**30:.1f} of {d.memory_total / 2**30:.1f} GiB free)" if d.memory_total else "")
            for d in gpus
        )
        if gpus:
            self.add("llama-backend", Status.PASS, f"llama.cpp {info.name} build: {listed}")
        elif any(c.name == "gpu" and c.status is not Status.SKIP for c in self.checks):
            self.add(
                "llama-backend",
                Status.WARN,
                "a GPU is present but this llama.cpp build is CPU-only: --gpu-layers has no effect",
                f"build for the GPU: {GPU_BUILD_HINT}",
            )
        else:
            self.add("llama-backend", Status.PASS, f"llama.cpp {info.name} build (no GPU backend compiled in)")

    def run(self, skip: Iterable[str] = ()) -> list[Check]:
        skip = set(skip)
        if "config" not in skip:
            self.check_config()
        addr = self.check_dns()
        reached = addr is not None and self.check_tcp(addr)
        if reached and addr is not None:
            self.check_health(addr)
        self.check_listening(addr)
        if "firewall" not in skip:
            self.check_firewall(addr)
        self.check_subnet(addr)
        if "mdns" not in skip:
            self.check_mdns(addr)
        if "model" not in skip:
            self.check_model()
        if "gpu" not in skip:
            self.check_gpu()
            self.check_backend()
        return self.checks


def _ranges(ports: list[int]) -> str:
    ports = sorted(ports)
    out, start = [], ports[0]
    for a, b in zip(ports, ports[1:] + [None], strict=True):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            if b is not None:
                start = b
    return ", ".join(out)


def render(checks: list[Check], target: Target) -> str:
    lines = [f"clawlan doctor: back end {target.url} (from {target.source})", ""]
    for c in checks:
        lines.append(f"{c.status.name:<5} {c.name:<15} {c.detail}")
        if c.fix and c.status is not Status.PASS:
            lines.append(f"{'':6}{'':15} fix: {c.fix}")
    worst = max((c.status for c in checks), default=Status.PASS)
    counts = {s: sum(1 for c in checks if c.status is s) for s in (Status.PASS, Status.WARN, Status.FAIL)}
    lines.append("")
    lines.append(
        f"{counts[Status.PASS]} passed, {counts[Status.WARN]} warnings, {counts[Status.FAIL]} failed; "
        f"exit status {max(int(worst), 0)}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import logging

    from clawlan.config import load_settings

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe would bury the report

    files = list(args.config or [])
    if not files and not os.environ.get("CLAWLAN_CONFIG"):
        # The seed's two files, where an installer following it leaves them.
        files = [name for name in SEED_FILES if Path(name).is_file()]
    try:
        settings = load_settings(files).settings
    except ClawlanError:
        settings = None  # reported by the config check; fall back to defaults for the rest
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
    sp.add_argument("--json", action="store_true", help="results as JSON")
    sp.set_defaults(func=run)
