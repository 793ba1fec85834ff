"""clawlan doctor: rule parsing, and runs against loopback (network namespaces: test_doctor_netns.py;
HTTPS and pins: test_doctor_tls.py). Traffic only ever goes to loopback."""

from __future__ import annotations

import json
import os
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


def report_rtt(detail: str) -> None:
    # The round trip is a figure for the reader, not a test outcome: a loaded shared machine can exceed 5 ms.
    print(f"rtt: {detail}")


def test_loopback_backend_passes(health_server: int, capsys) -> None:
    from zeroconf import IPVersion, ServiceInfo, Zeroconf

    # This test's own service type: other advertisers on this loopback (other tests, other sessions) cannot
    # answer it, and the doctor must pick out the record at its back end's address and port.
    service_type = f"_clw{uuid.uuid4().hex[:8]}._tcp.local."
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    info = ServiceInfo(
        service_type,
        f"doctor-test-{uuid.uuid4().hex[:6]}.{service_type}",
        addresses=[bytes([127, 0, 0, 1])],
        port=health_server,
        properties={"model": "t"},
    )
    zc.register_service(info)
    try:
        d = Doctor(Target("localhost", health_server), mdns_timeout=3.0, service_type=service_type)
        c = by_name(d.run(skip=["model", "gpu", "firewall"]))
    finally:
        zc.unregister_service(info)
        zc.close()
    assert c["dns"].status is Status.PASS and "127.0.0.1" in c["dns"].detail
    assert c["tcp"].status is Status.PASS
    assert c["health"].status is Status.PASS and "http://127.0.0.1" in c["health"].detail
    assert c["rtt"].status in (Status.PASS, Status.WARN) and "median /health round trip" in c["rtt"].detail
    with capsys.disabled():
        report_rtt(c["rtt"].detail)
    assert c["listening"].status is Status.WARN and "--host 0.0.0.0" in c["listening"].fix  # loopback only
    assert c["subnet"].status is Status.PASS
    assert c["mdns"].status is Status.PASS and "doctor-test-" in c["mdns"].detail
    assert f"127.0.0.1:{health_server}" in c["mdns"].detail
    # It advertises plain HTTP: front ends would not use it from mDNS, and doctor says so.
    assert c["pin"].status is Status.WARN and "plain HTTP" in c["pin"].detail


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
