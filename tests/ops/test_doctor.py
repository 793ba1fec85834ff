"""clawlan doctor on loopback and in network namespaces the tests create and remove.

Traffic only ever goes to loopback or to addresses inside the namespaces made here: the doctor
under test runs *inside* a client namespace whose only routes are its veth link, so even a
misconfigured address cannot leave the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clawlan.cli import main
from clawlan.ops.doctor import Doctor, Status, Target, iptables_verdicts, nft_verdicts, parse_backend

# --- pure parsing -------------------------------------------------------------------------------


def test_parse_backend() -> None:
    assert parse_backend("192.168.1.100") == Target("192.168.1.100", 8080)
    assert parse_backend("http://srv.local:8085").port == 8085
    assert parse_backend("[fd00::1]:8081").host == "fd00::1"
    with pytest.raises(Exception, match="port is not a number"):
        parse_backend("srv:http")


IPTABLES = """*filter
:INPUT DROP [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 8085 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT
-A INPUT -p tcp -m multiport --dports 8081:8083 -j REJECT --reject-with icmp-port-unreachable
-A INPUT -p tcp -m tcp --dport 8081:8090 -j ACCEPT
COMMIT
"""


def test_iptables_first_matching_rule_then_policy() -> None:
    v = iptables_verdicts(IPTABLES, range(8080, 8092))
    assert v[8080] == "ACCEPT"
    assert v[8081] == v[8083] == "REJECT"  # the REJECT comes before the wider ACCEPT
    assert v[8084] == v[8090] == "ACCEPT"
    assert v[8091] == "DROP"  # policy; the -i lo and -s rules apply to some traffic only


NFT = """table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		tcp dport { 22, 8080-8084 } accept
		meta l4proto tcp tcp dport 8085 counter packets 0 bytes 0 reject with tcp reset
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
"""


def test_nft_verdicts() -> None:
    v = nft_verdicts(NFT, range(8080, 8091))
    assert v[8080] == v[8084] == "ACCEPT"
    assert v[8085] == "REJECT"
    assert v[8086] == "DROP"


# `ufw default deny incoming` then `ufw allow 8080` (iptables-save, trimmed): INPUT only jumps to
# ufw's chains; the ACCEPT is two jumps down, in ufw-user-input.
UFW_IPTABLES = """*filter
:INPUT DROP [0:0]
:ufw-after-input - [0:0]
:ufw-before-input - [0:0]
:ufw-before-logging-input - [0:0]
:ufw-skip-to-policy-input - [0:0]
:ufw-user-input - [0:0]
-A INPUT -j ufw-before-logging-input
-A INPUT -j ufw-before-input
-A INPUT -j ufw-after-input
-A ufw-after-input -p udp -m udp --dport 137 -j ufw-skip-to-policy-input
-A ufw-after-input -p tcp -m tcp --dport 139 -j ufw-skip-to-policy-input
-A ufw-before-input -i lo -j ACCEPT
-A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-input -m conntrack --ctstate INVALID -j DROP
-A ufw-before-input -j ufw-user-input
-A ufw-before-logging-input -j RETURN
-A ufw-skip-to-policy-input -j DROP
-A ufw-user-input -p tcp -m tcp --dport 8080 -m comment --comment "'dapp_clawlan'" -j ACCEPT
-A ufw-user-input -p udp -m udp --dport 8080 -j ACCEPT
COMMIT
"""

# The same rules as iptables-nft shows them to `nft list ruleset`.
UFW_NFT = """table ip filter {
	chain INPUT {
		type filter hook input priority filter; policy drop;
		counter packets 10 bytes 600 jump ufw-before-logging-input
		counter packets 10 bytes 600 jump ufw-before-input
		counter packets 0 bytes 0 jump ufw-after-input
	}
	chain ufw-before-logging-input {
		counter packets 0 bytes 0 return
	}
	chain ufw-before-input {
		iifname "lo" counter packets 0 bytes 0 accept
		ct state related,established counter packets 0 bytes 0 accept
		counter packets 0 bytes 0 jump ufw-user-input
	}
	chain ufw-after-input {
		meta l4proto tcp tcp dport 139 counter packets 0 bytes 0 jump ufw-skip-to-policy-input
	}
	chain ufw-skip-to-policy-input {
		counter packets 0 bytes 0 drop
	}
	chain ufw-user-input {
		meta l4proto tcp tcp dport 8080 counter packets 0 bytes 0 accept comment "'dapp_clawlan'"
		meta l4proto udp udp dport 8080 counter packets 0 bytes 0 accept
	}
}
"""


@pytest.mark.parametrize("parse, text", [(iptables_verdicts, UFW_IPTABLES), (nft_verdicts, UFW_NFT)], ids=["iptables", "nft"])
def test_ufw_allow_is_read_through_its_chains(parse, text) -> None:
    v = parse(text, [139, *range(8080, 8091)])
    assert v[8080] == "ACCEPT"  # ufw allow 8080: INPUT -> ufw-before-input -> ufw-user-input
    assert v[8081] == v[8090] == "DROP"  # nothing allows them: the policy
    assert v[139] == "DROP"  # ufw-after-input -> ufw-skip-to-policy-input


def test_chain_loops_end() -> None:
    rules = ":INPUT DROP [0:0]\n-A INPUT -j a\n-A a -j b\n-A b -j a\n-A INPUT -p tcp --dport 8080 -j ACCEPT\n"
    assert iptables_verdicts(rules, [8080, 8081]) == {8080: "ACCEPT", 8081: "DROP"}


# --- loopback -----------------------------------------------------------------------------------


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        code, body = (200, b'{"status":"ok"}') if self.path == "/health" else (404, b"no")
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def by_name(checks: list) -> dict:
    return {c.name: c for c in checks}


def test_loopback_backend_passes(health_server: int) -> None:
    from zeroconf import IPVersion, ServiceInfo, Zeroconf

    from clawlan.discovery.service import SERVICE_TYPE

    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    info = ServiceInfo(
        SERVICE_TYPE,
        f"doctor-test-{uuid.uuid4().hex[:6]}.{SERVICE_TYPE}",
        addresses=[bytes([127, 0, 0, 1])],
        port=health_server,
        properties={"model": "t"},
    )
    zc.register_service(info)
    try:
        d = Doctor(Target("localhost", health_server), mdns_timeout=3.0)
        c = by_name(d.run(skip=["model", "gpu", "firewall"]))
    finally:
        zc.unregister_service(info)
        zc.close()
    assert c["dns"].status is Status.PASS and "127.0.0.1" in c["dns"].detail
    assert c["tcp"].status is Status.PASS
    assert c["health"].status is Status.PASS
    assert c["rtt"].status is Status.PASS  # loopback is well under 5 ms
    assert c["listening"].status is Status.WARN and "--host 0.0.0.0" in c["listening"].fix  # loopback only
    assert c["subnet"].status is Status.PASS
    assert c["mdns"].status is Status.PASS and "doctor-test-" in c["mdns"].detail


def test_loopback_closed_port_exit_code(capsys) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago, now closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["doctor", "--backend", f"127.0.0.1:{port}", "--skip", "mdns", "--skip", "model", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 2 == out["exit"]
    tcp = next(c for c in out["checks"] if c["name"] == "tcp")
    assert tcp["status"] == "FAIL" and "refused" in tcp["detail"]
    assert f"tcpdump -i lo host 127.0.0.1 and port {port} -w capture.pcap" in tcp["fix"]


def test_bad_config_fails(tmp_path, capsys) -> None:
    cfg = tmp_path / "network_config.json"
    cfg.write_text('{"backend": {"service_port": 99999}}')
    rc = main(
        [
            "doctor",
            "--config",
            str(cfg),
            "--backend",
            "127.0.0.1:1",
            "--skip",
            "mdns",
            "--skip",
            "model",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    conf = out["checks"][0]
    assert rc == 2 and conf["name"] == "config" and conf["status"] == "FAIL"
    assert "backend.service_port = 99999" in conf["detail"]


def test_bad_model_checksum(tmp_path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    (tmp_path / "SHA256SUMS").write_text("0" * 64 + "  m.gguf\n")
    model.chmod(0o600)
    d = Doctor(Target("127.0.0.1", 1), model=str(model))
    d.check_model()
    c = by_name(d.checks)
    assert c["model-perms"].status is Status.WARN and f"chmod 644 {model}" in c["model-perms"].fix
    assert c["model-checksum"].status is Status.FAIL and "copy the model again" in c["model-checksum"].fix
    assert c["disk"].status is Status.PASS


# --- network namespaces -------------------------------------------------------------------------


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
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zeroconf import IPVersion, ServiceInfo, Zeroconf
addr, port = sys.argv[1], int(sys.argv[2])
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"status":"ok"}'
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = ThreadingHTTPServer((addr, port), H)
zc = Zeroconf(interfaces=[addr], ip_version=IPVersion.V4Only)
zc.register_service(ServiceInfo("_clawlan._tcp.local.", "netns-backend._clawlan._tcp.local.",
    addresses=[bytes(int(x) for x in addr.split("."))], port=port, properties={"model": "t"}))
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

    def start_backend(self, port: int = 8080) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.server, sys.executable, "-c", SERVER, self.server_addr, str(port)],
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
def lan(netns: None) -> Iterator[Pair]:
    pair = Pair("a", "10.231.0.2/24", "10.231.0.1/24")
    try:
        pair.start_backend(8080)
        yield pair
    finally:
        pair.close()


def test_netns_backend_reachable(lan: Pair) -> None:
    out = lan.doctor("10.231.0.1:8080")
    c = out["by"]
    assert c["tcp"]["status"] == "PASS" and lan.cif in c["tcp"]["detail"]
    assert c["health"]["status"] == "PASS"
    assert c["rtt"]["status"] == "PASS"
    assert c["subnet"]["status"] == "PASS" and "10.231.0.0/24" in c["subnet"]["detail"]
    assert c["listening"]["status"] == "SKIP" and c["firewall"]["status"] == "SKIP"  # another machine
    assert c["mdns"]["status"] == "PASS" and "netns-backend" in c["mdns"]["detail"]
    assert out["exit"] == 0


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


def test_seed_config_files_found_in_cwd(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLAWLAN_CONFIG", raising=False)
    (tmp_path / "network_config.json").write_text(
        '{"backend": {"service_port": 8080, "max_connections": 100, "timeout_ms": 30000},'
        ' "frontend": {"discovery_protocol": "mDNS", "fallback_timeout": 5000}}'
    )
    (tmp_path / "clawbot_config.json").write_text(
        '{"frontend": {"render_mode": "fast", "max_concurrent_sessions": 5}}'
    )
    main(["doctor", "--backend", "127.0.0.1:1", "--skip", "mdns", "--skip", "model", "--json"])
    conf = json.loads(capsys.readouterr().out)["checks"][0]
    assert (
        conf["status"] == "FAIL"
        and "clawbot_config.json" in conf["detail"]
        and "render_mode" in conf["detail"]
    )


def test_gpu_check_reads_nvidia_smi(tmp_path, monkeypatch) -> None:
    from .test_planner import fake_nvidia_smi

    fake_nvidia_smi(tmp_path, 20480, 1000)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    d = Doctor(Target("127.0.0.1", 1))
    d.check_gpu()
    (gpu,) = d.checks
    assert gpu.status is Status.WARN and "NVIDIA RTX 4000 Ada, driver 550.54.14" in gpu.detail
    assert "1.0 of 20.0 GiB free" in gpu.detail and "nvidia-smi" in gpu.fix
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    d = Doctor(Target("127.0.0.1", 1))
    d.check_gpu()
    assert d.checks[0].status is Status.SKIP


def test_backend_check_names_the_build(tmp_path, monkeypatch) -> None:
    d = Doctor(Target("127.0.0.1", 1))
    d.check_backend()
    (c,) = d.checks
    assert c.status is Status.PASS and "llama.cpp CPU build" in c.detail
    # An NVIDIA GPU beside a CPU-only llama.cpp: say so, and how to build for it.
    from .test_planner import fake_nvidia_smi

    fake_nvidia_smi(tmp_path, 20480, 19000)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    d = Doctor(Target("127.0.0.1", 1))
    d.check_gpu()
    d.check_backend()
    c = by_name(d.checks)["llama-backend"]
    assert c.status is Status.WARN and "CPU-only" in c.detail and "make run GPU=cuda" in c.fix
