"""The network path to the back end: name, route, TCP, the listening socket, firewall and subnet.

Facts come from this machine only (its interfaces, routing table, sockets and
firewall rules); the one packet sent is the TCP connect to the back end.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from clawlan.ops.doctor.firewall import iptables_verdicts, nft_verdicts, read_firewall
from clawlan.ops.doctor.report import Results, Status, Target, ranges

PORT_RANGE = range(8080, 8091)  # the seed: "open TCP/UDP 8080-8090"


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


class NetworkChecks(Results):
    """dns, tcp, listening, firewall and subnet; each appends results and never raises."""

    target: Target
    timeout: float

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
                f"{v} TCP {ranges([p for p in blocked if verdicts[p] == v])}"
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
