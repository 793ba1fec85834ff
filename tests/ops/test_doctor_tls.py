"""clawlan doctor against HTTPS back ends and the front end's pins, with real servers and mDNS on loopback.

Each test browses its own random service type, so advertisers of other tests
(or other sessions on this machine) cannot answer it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.discovery.tls_stub import Advertiser, Rogue, TLSStub

from clawlan.cli import main
from clawlan.discovery.service import show_fingerprint
from clawlan.discovery.trust import PINS_FILE, TrustStore
from clawlan.ops.doctor import Check, Doctor, Status, Target, render
from clawlan.web.identity import ensure_identity

SKIP = ["config", "model", "gpu", "firewall"]


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def pins(checks: list[dict], name: str) -> dict:
    """The pin result about one advertised instance."""
    (found,) = [c for c in checks if c["name"] == "pin" and c["detail"].startswith(name + ".")]
    return found


def test_https_backend_verified_against_its_pin(tmp_path: Path, service_type: str, advertiser: Advertiser,
                                                servers: list) -> None:
    server = TLSStub(tmp_path / "srv").start()
    servers.append(server)
    advertiser.register(server.port, name="office", fingerprint=server.fingerprint)
    front = tmp_path / "front"
    TrustStore(front / PINS_FILE).accept(server.fingerprint, name=f"office.{service_type}")
    # HOST:PORT without a scheme, as people type it: the TXT record's tls flag makes it HTTPS.
    d = Doctor(Target("127.0.0.1", server.port), service_type=service_type, frontend_data_dir=str(front),
               mdns_timeout=2.0)
    c = by_name(d.run(skip=SKIP))
    assert d.target.scheme == "https"
    assert c["tls"].status is Status.PASS and "pinned on this front end" in c["tls"].detail
    assert show_fingerprint(server.fingerprint) in c["tls"].detail
    assert c["health"].status is Status.PASS and f"https://127.0.0.1:{server.port}/health" in c["health"].detail
    assert c["mdns"].status is Status.PASS and "office." in c["mdns"].detail
    assert c["pin"].status is Status.PASS and "trusted (pinned)" in c["pin"].detail


def test_pin_mismatch_is_explained_with_the_fix(tmp_path: Path, service_type: str, advertiser: Advertiser,
                                                servers: list, capsys: pytest.CaptureFixture[str]) -> None:
    front = tmp_path / "front"
    office = f"office.{service_type}"
    old = ensure_identity(tmp_path / "old")  # the key the admin accepted for "office"
    TrustStore(front / PINS_FILE).accept(old.fingerprint, name=office)
    # "office" was reinstalled: same name, a new key.
    server = TLSStub(tmp_path / "reinstalled").start()
    # A rogue copies the accepted fingerprint into its TXT record but holds another key.
    rogue = Rogue(ensure_identity(tmp_path / "rogue")).start()
    newcomer = TLSStub(tmp_path / "newcomer").start()
    plain = Rogue().start()
    servers.extend([server, rogue, newcomer, plain])
    advertiser.register(server.port, name="office", fingerprint=server.fingerprint)
    advertiser.register(rogue.port, name="rogue", fingerprint=old.fingerprint)
    advertiser.register(newcomer.port, name="newcomer", fingerprint=newcomer.fingerprint)
    advertiser.register(plain.port, name="plain")

    rc = main(["doctor", "--backend", f"127.0.0.1:{server.port}", "--data-dir", str(front),
               "--mdns-service-type", service_type, "--mdns-timeout", "3", "--json",
               *(a for s in SKIP if s != "config" for a in ("--skip", s))])
    out = json.loads(capsys.readouterr().out)
    checks = out["checks"]
    by = {c["name"]: c for c in checks if c["name"] != "pin"}
    assert rc == out["exit"] == 2

    # The back end checked: its certificate is judged (changed key), and /health is still measured over a
    # connection that accepts exactly that certificate.
    tls = by["tls"]
    assert tls["status"] == "FAIL" and show_fingerprint(server.fingerprint) in tls["detail"]
    assert tls["fix"] == f"see the pin result for {office} below"  # explained once, in its pin result
    assert by["health"]["status"] == "PASS" and "https://" in by["health"]["detail"]

    changed = pins(checks, "office")
    assert changed["status"] == "FAIL" and "changed" in changed["detail"]
    assert f"accepted {show_fingerprint(old.fingerprint)} for that name ({front / PINS_FILE})" in changed["fix"]
    # The exact ways to accept it: the admin page of this box's front end, or the config key.
    assert "accept it as admin at http://127.0.0.1:8081/admin/backends" in changed["fix"]
    assert "frontend.trusted_backends" in changed["fix"] and "openssl x509" in changed["fix"]

    mismatch = pins(checks, "rogue")
    assert mismatch["status"] == "FAIL" and "mismatch" in mismatch["detail"]
    assert f"presents {show_fingerprint(rogue.identity.fingerprint)}" in mismatch["detail"]
    assert f"advertises fingerprint {show_fingerprint(old.fingerprint)}" in mismatch["fix"]
    assert "does not hold the key it claims" in mismatch["fix"] and "pretending" in mismatch["fix"]
    assert "/admin/backends" in mismatch["fix"] and "frontend.trusted_backends" in mismatch["fix"]

    new = pins(checks, "newcomer")
    assert new["status"] == "WARN" and "new" in new["detail"] and "never accepted" in new["fix"]
    assert "/admin/backends" in new["fix"]

    assert pins(checks, "plain")["status"] == "WARN" and "plain HTTP" in pins(checks, "plain")["detail"]
    assert not rogue.seen and not plain.seen  # advertised servers other than the back end get no request

    # Once the admin accepts the new key, "office" is trusted; the rogue, checked as the back end itself, is
    # still caught at its handshake.
    TrustStore(front / PINS_FILE).accept(server.fingerprint, name=office)
    d = Doctor(Target("127.0.0.1", rogue.port), service_type=service_type, frontend_data_dir=str(front),
               mdns_timeout=2.0)
    d.run(skip=SKIP)
    after = [c.to_dict() for c in d.checks]
    tls = by_name(d.checks)["tls"]
    assert tls.status is Status.FAIL and f"presents {show_fingerprint(rogue.identity.fingerprint)}" in tls.detail
    assert f"advertises {show_fingerprint(old.fingerprint)}" in tls.detail and "rogue." in tls.fix
    assert pins(after, "office")["status"] == "PASS" and "trusted (pinned)" in pins(after, "office")["detail"]
    assert pins(after, "rogue")["status"] == "FAIL"


def test_plain_http_to_an_https_server_names_the_scheme(tmp_path: Path, servers: list) -> None:
    server = TLSStub(tmp_path / "srv").start()
    servers.append(server)
    d = Doctor(Target("127.0.0.1", server.port, "http", explicit_scheme=True), timeout=2.0)
    d.run(skip=[*SKIP, "mdns"])
    health = by_name(d.checks)["health"]
    assert health.status is Status.FAIL and f"use --backend https://127.0.0.1:{server.port}" in health.fix


def test_https_without_a_tls_server_fails_the_handshake(tmp_path: Path, servers: list) -> None:
    plain = Rogue().start()
    servers.append(plain)
    d = Doctor(Target("127.0.0.1", plain.port, "https", explicit_scheme=True), timeout=2.0)
    c = by_name(d.run(skip=[*SKIP, "mdns"]))
    assert c["tls"].status is Status.FAIL and f"--backend http://127.0.0.1:{plain.port}" in c["tls"].fix
    assert "health" not in c and not plain.seen


def test_render_indents_a_multi_line_fix() -> None:
    text = render([Check("pin", Status.WARN, "x: new", "first line\n  second line")], Target("h", 1))
    assert "fix: first line\n" in text and text.splitlines()[4].strip() == "second line"
    assert text.splitlines()[4].index("second") == text.splitlines()[3].index("first")  # aligned under the fix
