"""clawlan doctor between network namespaces the tests create and remove: one per "machine".

Traffic only ever goes to addresses inside the namespaces made here: the doctor under test runs
*inside* a client namespace whose only routes are its veth link, so even a misconfigured address
cannot leave the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .test_doctor import report_rtt

if TYPE_CHECKING:
    from clawlan.web.identity import Identity


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def netns_usable() -> str | None:
    if not shutil.which("ip"):
        return "iproute2 'ip' is not installed"
    name = f"clwprobe{os.getpid()}"
    r = _ip("netns", "add", name, check=False)
    if r.returncode != 0:
        return f"'ip netns add' is not permitted here: {r.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


SERVER = r"""
import ssl, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zeroconf import IPVersion, ServiceInfo, Zeroconf
addr, port = sys.argv[1], int(sys.argv[2])
cert, key, fp = (sys.argv[3:6] + ["", "", ""])[:3]  # HTTPS with this identity when given
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"status":"ok"}'
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = ThreadingHTTPServer((addr, port), H)
props = {"model": "t"}
if cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    props.update({"tls": "1", "fp": fp})
zc = Zeroconf(interfaces=[addr], ip_version=IPVersion.V4Only)
zc.register_service(ServiceInfo("_clawlan._tcp.local.", "netns-backend._clawlan._tcp.local.",
    addresses=[bytes(int(x) for x in addr.split("."))], port=port, properties=props))
print("ready", flush=True)
threading.Thread(target=srv.serve_forever, daemon=True).start()
sys.stdin.read()  # runs until the test closes stdin
zc.close()
"""


class Pair:
    """A client and a server namespace joined by a veth pair; removed on close."""

    def __init__(self, tag: str, client_cidr: str, server_cidr: str) -> None:
        uid = f"{os.getpid() % 100000}{tag}"
        self.client, self.server = f"clwc{uid}", f"clws{uid}"
        self.cif, self.sif = f"vc{uid}", f"vs{uid}"
        self.server_addr = server_cidr.split("/")[0]
        self.proc: subprocess.Popen | None = None
        self.identity: Identity | None = None
        _ip("netns", "add", self.client)
        _ip("netns", "add", self.server)
        _ip(
            "link",
            "add",
            self.cif,
            "netns",
            self.client,
            "type",
            "veth",
            "peer",
            "name",
            self.sif,
            "netns",
            self.server,
        )
        for ns, dev, cidr in ((self.client, self.cif, client_cidr), (self.server, self.sif, server_cidr)):
            _ip("-n", ns, "addr", "add", cidr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def start_backend(self, port: int = 8080, identity: Identity | None = None) -> None:
        tls = [str(identity.cert), str(identity.key), identity.fingerprint] if identity else []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.server, sys.executable, "-c", SERVER, self.server_addr, str(port), *tls],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        # Readiness by handshake: the child prints "ready" once bound and advertised. The veth link
        # needs a moment after "up" before the bind succeeds only for IPv6 (DAD); IPv4 binds at once.
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        assert line.strip() == "ready", "the namespace back end did not start"

    def doctor(self, backend: str, *extra: str) -> dict:
        r = subprocess.run(
            ["ip", "netns", "exec", self.client, sys.executable, "-m", "clawlan", "doctor", "--backend", backend,
             "--skip", "model", "--skip", "gpu", "--json", "--timeout", "1.5", "--mdns-timeout", "3", *extra],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        out = json.loads(r.stdout)
        assert r.returncode == out["exit"]
        out["by"] = {c["name"]: c for c in out["checks"]}
        return out

    def close(self) -> None:
        if self.proc:
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for ns in (self.client, self.server):
            _ip("netns", "del", ns, check=False)  # deleting a namespace removes its veth end too


@pytest.fixture(scope="module")
def netns() -> None:
    why = netns_usable()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def lan(netns: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    from clawlan.web.identity import ensure_identity

    # The back end serves HTTPS with a certificate of its own, as a LAN server does by default.
    pair = Pair("a", "10.231.0.2/24", "10.231.0.1/24")
    pair.identity = ensure_identity(tmp_path_factory.mktemp("netns-server"))
    try:
        pair.start_backend(8080, pair.identity)
        yield pair
    finally:
        pair.close()


def test_netns_backend_reachable(lan: Pair, tmp_path, capsys) -> None:
    # The front end on the client trusts this server's key by config; its pin file is this test's own.
    cfg = tmp_path / "front.json"
    cfg.write_text(json.dumps({"frontend": {"trusted_backends": [lan.identity.fingerprint]}}))
    out = lan.doctor("10.231.0.1:8080", "--config", str(cfg), "--data-dir", str(tmp_path / "front"))
    c = out["by"]
    assert c["tcp"]["status"] == "PASS" and lan.cif in c["tcp"]["detail"]
    # No scheme given: the TXT record's tls flag makes it HTTPS, verified against the configured fingerprint.
    assert out["backend"]["scheme"] == "https"
    assert c["tls"]["status"] == "PASS" and "frontend.trusted_backends" in c["tls"]["detail"]
    assert c["health"]["status"] == "PASS" and "https://10.231.0.1:8080/health" in c["health"]["detail"]
    assert "median /health round trip" in c["rtt"]["detail"]
    with capsys.disabled():
        report_rtt(c["rtt"]["detail"])
    assert c["subnet"]["status"] == "PASS" and "10.231.0.0/24" in c["subnet"]["detail"]
    assert c["listening"]["status"] == "SKIP" and c["firewall"]["status"] == "SKIP"  # another machine
    assert c["mdns"]["status"] == "PASS" and "netns-backend" in c["mdns"]["detail"]
    assert c["pin"]["status"] == "PASS" and "trusted (configured)" in c["pin"]["detail"]
    # Everything else passes; the round trip alone may warn on a loaded machine (a figure, not a verdict).
    others = [x for x in out["checks"] if x["name"] != "rtt"]
    assert all(x["status"] == "PASS" for x in others if x["status"] != "SKIP"), others
    assert out["exit"] == (0 if c["rtt"]["status"] == "PASS" else 1)


def test_netns_closed_port(lan: Pair) -> None:
    out = lan.doctor("10.231.0.1:8089")
    tcp = out["by"]["tcp"]
    assert tcp["status"] == "FAIL" and "refused" in tcp["detail"]
    assert "clawlan serve" in tcp["fix"]
    assert f"tcpdump -i {lan.cif} host 10.231.0.1 and port 8089 -w capture.pcap" in tcp["fix"]
    assert "health" not in out["by"] and out["exit"] == 2


def test_netns_mismatched_netmask(netns: None) -> None:
    # The server thinks it is on 10.232.0.0/16; the client was given a /24, so the server's
    # 10.232.1.1 is off-link for the client and it has no route.
    pair = Pair("m", "10.232.0.2/24", "10.232.1.1/16")
    try:
        out = pair.doctor("10.232.1.1:8080", "--skip", "mdns")
    finally:
        pair.close()
    c = out["by"]
    assert c["tcp"]["status"] == "FAIL" and "no route" in c["tcp"]["detail"]
    assert c["subnet"]["status"] == "FAIL" and "masks disagree" in c["subnet"]["detail"]
    assert f"ip addr replace 10.232.0.2/23 dev {pair.cif}" in c["subnet"]["fix"]
    assert out["exit"] == 2


def test_netns_firewall_drop(netns: None) -> None:
    if not shutil.which("iptables"):
        pytest.skip("iptables is not installed")
    pair = Pair("f", "10.233.0.2/24", "10.233.0.1/24")
    try:
        pair.start_backend(8080)
        r = subprocess.run(
            ["ip", "netns", "exec", pair.server, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP"],
            capture_output=True, text=True,
        )  # fmt: skip
        if r.returncode != 0:
            pytest.skip(f"iptables cannot add rules here: {r.stderr.strip()}")
        client = pair.doctor("10.233.0.1:8080", "--skip", "mdns")
        # On the server itself, doctor reads the rule that causes it.
        srv = subprocess.run(
            ["ip", "netns", "exec", pair.server, sys.executable, "-m", "clawlan", "doctor", "--backend",
             "10.233.0.1:8080", "--skip", "model", "--skip", "gpu", "--skip", "mdns", "--json", "--timeout", "1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        pair.close()
    tcp = client["by"]["tcp"]
    assert tcp["status"] == "FAIL" and "no answer" in tcp["detail"] and "allow TCP 8080-8090" in tcp["fix"]
    assert f"tcpdump -i {pair.cif} host 10.233.0.1 and port 8080" in tcp["fix"]
    fw = {c["name"]: c for c in json.loads(srv.stdout)["checks"]}["firewall"]
    assert (
        fw["status"] == "FAIL"
        and "DROP TCP 8080" in fw["detail"]
        and "--dport 8080:8090 -j ACCEPT" in fw["fix"]
    )


def test_netns_ufw_style_chains(netns: None) -> None:
    """ufw's layout built with real iptables in a namespace: doctor there reads 8080 as open."""
    if not shutil.which("iptables"):
        pytest.skip("iptables is not installed")
    pair = Pair("u", "10.234.0.2/24", "10.234.0.1/24")
    try:
        for rule in (
            ["-N", "ufw-before-input"], ["-N", "ufw-user-input"], ["-P", "INPUT", "DROP"],
            ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
            ["-A", "INPUT", "-j", "ufw-before-input"],
            ["-A", "ufw-before-input", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
            ["-A", "ufw-before-input", "-j", "ufw-user-input"],
            ["-A", "ufw-user-input", "-p", "tcp", "--dport", "8080", "-j", "ACCEPT"],
        ):  # fmt: skip
            r = subprocess.run(["ip", "netns", "exec", pair.server, "iptables", *rule], capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"iptables cannot add rules here: {r.stderr.strip()}")
        pair.start_backend(8080)
        srv = subprocess.run(
            ["ip", "netns", "exec", pair.server, sys.executable, "-m", "clawlan", "doctor", "--backend",
             "10.234.0.1:8080", "--skip", "model", "--skip", "gpu", "--skip", "mdns", "--json", "--timeout", "1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        client = pair.doctor("10.234.0.1:8080", "--skip", "mdns")
    finally:
        pair.close()
    assert client["by"]["tcp"]["status"] == "PASS"  # the rules really let 8080 through
    fw = {c["name"]: c for c in json.loads(srv.stdout)["checks"]}["firewall"]
    # 8080 is open; the rest of the range falls to the DROP policy: a warning, not a failure.
    assert fw["status"] == "WARN", fw
    assert "DROP TCP 8081-8090" in fw["detail"] and "8080," not in fw["detail"], fw
