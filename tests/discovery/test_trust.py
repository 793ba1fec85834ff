"""A hostile LAN: rogue mDNS advertisers get nothing; only pinned TLS servers are used; an admin accepts new ones.

Real multicast on loopback (python-zeroconf on 127.0.0.1), each test on its
own random service type; front ends run as their own processes.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.discovery.tls_stub import LOOPBACK, Advertiser, Rogue, TLSStub
from tests.frontend.conftest import StubBackend, free_port, wait_until

from clawlan.discovery.browser import Backend, Discoverer
from clawlan.discovery.service import ServiceRecord
from clawlan.discovery.trust import TrustStore, explain_pin_mismatch, pin_report
from clawlan.frontend.command import launch
from clawlan.frontend.proxy import Upstream
from clawlan.web.identity import ensure_identity

KEY = "box-secret-key"


@pytest.fixture
def front(tmp_path: Path, service_type: str) -> Iterator[Any]:
    """Factory: a front end browsing this test's service type on loopback, with the box key in its environment."""
    procs: list[Any] = []

    def start(static: str, *extra: str, timeout_ms: int = 1500) -> Any:
        os.environ["CLAWLAN_FRONTEND_API_KEY"] = KEY  # how a box is given its key without a flag (main has none)
        try:
            fp = launch(backend=static, port=free_port(), extra_args=[
                "--data-dir", str(tmp_path / "front"), "--discovery", "mDNS", "--fallback-timeout", str(timeout_ms),
                "--mdns-interface", "127.0.0.1", "--mdns-service-type", service_type, *extra])
        finally:
            os.environ.pop("CLAWLAN_FRONTEND_API_KEY", None)
        procs.append(fp)
        return fp

    yield start
    for p in procs:
        p.stop()


def ask(front_url: str, text: str, cid: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    if cid is None:
        cid = httpx.post(front_url + "api/conversations", json={}).json()["id"]
    with httpx.stream("POST", front_url + f"api/conversations/{cid}/messages", json={"content": text},
                      timeout=60) as r:
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    return cid, events


def used_backend(events: list[dict[str, Any]]) -> dict[str, Any]:
    return [e for e in events if e["type"] == "start"][-1]["backend"]


def test_rogue_advertiser_gets_no_conversation_and_no_key(advertiser: Advertiser, front: Any, servers: list[Any],
                                                          tmp_path: Path) -> None:
    """Must-show: rogues on loopback mDNS (plain HTTP, and TLS with their own key) receive nothing."""
    real = StubBackend().start()
    servers.append(real)
    plain = Rogue().start()
    tls = Rogue(ensure_identity(tmp_path / "rogue")).start()
    servers += [plain, tls]
    # Names that sort before anything: main's "first name in sort order" would pick them.
    advertiser.register(plain.port, name="aaa-rogue-plain", model="rogue")
    advertiser.register(tls.port, name="aab-rogue-tls", model="rogue", fingerprint=tls.identity.fingerprint)
    fe = front(real.base_url)
    # Both are known to the front end before the question (on main the first in sort order would win).
    wait_until(lambda: {plain.port, tls.port} <= {int(u.rsplit(":", 1)[1]) for u in
                                                 httpx.get(fe.url + "api/status").json()["discovery"]["services"]},
               what="rogues seen")
    cid, events = ask(fe.url, "our secret quarterly numbers")
    assert events[-1]["type"] == "done", events[-1]
    assert used_backend(events)["base_url"] == real.base_url  # the configured back end, after the timeout
    assert real.requests and "secret quarterly" in json.dumps(real.requests[-1])
    assert plain.seen == [] and tls.seen == [], (plain.seen, tls.seen)
    # The page lists them as waiting for an admin, not in use.
    cands = {c["name"].split(".")[0]: c for c in httpx.get(fe.url + "api/status").json()["backends"]}
    assert cands["aaa-rogue-plain"]["state"] == "plain" and not cands["aaa-rogue-plain"]["in_use"]
    assert cands["aab-rogue-tls"]["state"] == "new" and not cands["aab-rogue-tls"]["in_use"]
    # The local OpenAI endpoint does not reach them either.
    r = httpx.post(fe.url + "v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                   timeout=30)
    assert r.status_code == 200
    assert plain.seen == [] and tls.seen == []


def test_rogue_copying_a_trusted_fingerprint_fails_the_handshake(advertiser: Advertiser, front: Any,
                                                                 servers: list[Any], tmp_path: Path) -> None:
    """A rogue advertising the real server's (public) fingerprint cannot prove the key: no request reaches it."""
    real = TLSStub(tmp_path / "real").start()
    rogue = Rogue(ensure_identity(tmp_path / "rogue")).start()
    servers += [real, rogue]
    advertiser.register(rogue.port, name="aaa-impostor", fingerprint=real.fingerprint)
    fallback = StubBackend().start()
    servers.append(fallback)
    fe = front(fallback.base_url, "--trusted-backend", real.fingerprint)
    wait_until(lambda: any(c["name"].startswith("aaa-impostor")
                           for c in httpx.get(fe.url + "api/status").json()["backends"]), what="impostor seen")
    _, events = ask(fe.url, "payroll")
    assert events[-1]["type"] == "done", events[-1]
    assert used_backend(events)["base_url"] == fallback.base_url
    assert rogue.seen == []
    cand = next(c for c in httpx.get(fe.url + "api/status").json()["backends"] if c["name"].startswith("aaa-"))
    assert cand["state"] == "mismatch" and cand["fingerprint"] == rogue.identity.fingerprint


def test_spoofed_goodbye_does_not_move_to_an_unpinned_server(advertiser: Advertiser, front: Any,
                                                             servers: list[Any], tmp_path: Path) -> None:
    real = TLSStub(tmp_path / "real").start()
    rogue = Rogue(ensure_identity(tmp_path / "rogue")).start()
    servers += [real, rogue]
    advertiser.register(real.port, name="zz-real", fingerprint=real.fingerprint)
    fe = front("http://127.0.0.1:9", "--trusted-backend", real.fingerprint, timeout_ms=10000)
    cid, events = ask(fe.url, "first")
    assert used_backend(events)["base_url"] == real.base_url and used_backend(events)["verified"]
    advertiser.register(rogue.port, name="aa-rogue", fingerprint=rogue.identity.fingerprint)
    advertiser.unregister("zz-real")  # a goodbye for the real server: anyone on the LAN can send this packet
    wait_until(lambda: not any(c["name"].startswith("zz-real")
                               for c in httpx.get(fe.url + "api/status").json()["backends"]), what="goodbye seen")
    _, events = ask(fe.url, "second", cid)
    assert events[-1]["type"] == "done", events[-1]
    assert used_backend(events)["base_url"] == real.base_url
    assert rogue.seen == []


def test_admin_accepts_a_new_server_then_it_is_used_over_verified_tls(advertiser: Advertiser, front: Any,
                                                                      servers: list[Any], tmp_path: Path) -> None:
    new = TLSStub(tmp_path / "new").start()
    fallback = StubBackend().start()
    servers += [new, fallback]
    advertiser.register(new.port, name="office-server", fingerprint=new.fingerprint)
    fe = front(fallback.base_url)
    wait_until(lambda: any(c["state"] == "new" for c in httpx.get(fe.url + "api/status").json()["backends"]),
               what="pending server")
    _, events = ask(fe.url, "before")
    assert used_backend(events)["base_url"] == fallback.base_url and not new.requests
    assert "Back ends" in httpx.get(fe.url + "admin/backends").text
    r = httpx.post(fe.url + "api/backends/accept", json={"fingerprint": new.fingerprint})
    assert r.status_code == 200, r.text
    pins = tmp_path / "front" / "trusted_backends.json"
    assert stat.S_IMODE(pins.stat().st_mode) == 0o600
    _, events = ask(fe.url, "after")
    assert events[-1]["type"] == "done", events[-1]
    b = used_backend(events)
    assert b["base_url"] == new.base_url and b["how"] == "mDNS" and b["verified"]
    assert new.requests and "after" in json.dumps(new.requests[-1])


def test_changed_key_is_pending_and_explained(advertiser: Advertiser, service_type: str, tmp_path: Path) -> None:
    old_fp, new_fp = "11" * 32, "22" * 32
    trust = TrustStore(tmp_path / "pins.json")
    trust.accept(old_fp, name=f"srv.{service_type}", address="127.0.0.1:1")
    advertiser.register(18099, name="srv", fingerprint=new_fp)  # reinstalled, or an impostor
    d = Discoverer("mDNS", 1000, "http://127.0.0.1:9", interfaces=LOOPBACK, service_type=service_type, trust=trust)
    try:
        assert d.resolve().how == "fallback"
        cand = wait_until(lambda: d.candidates(), what="candidate")[0]
        assert cand["state"] == "changed" and cand["pinned"] == old_fp
        text = pin_report(d.services(), trust, tmp_path)[0]
    finally:
        d.close()
    assert "11:11" in text and "22:22" in text and "accept" in text and "trusted_backends" in text


def test_undecodable_txt_record_does_not_stop_discovery(advertiser: Advertiser, service_type: str) -> None:
    fp = "ab" * 32
    d = Discoverer("mDNS", 10000, "http://127.0.0.1:9", interfaces=LOOPBACK, service_type=service_type,
                   trust=TrustStore(configured=[fp]))
    d.start()
    try:
        advertiser.register(18097, name="bad", properties={b"model": b"\xff\xfe\xfa", b"tls": b"1", b"\xc3": b"x"})
        advertiser.register(18098, name="good", fingerprint=fp)
        b = d.resolve()
        assert b.how == "mDNS" and b.base_url == "https://127.0.0.1:18098"
        # The bad one is listed too (decoded with replacement characters), not fatal.
        wait_until(lambda: len(d.candidates()) == 2, what="both records")
    finally:
        d.close()


def test_txt_decoding_never_raises() -> None:
    rec = ServiceRecord.from_txt("x", "127.0.0.1", 1, {b"model": b"\xff", b"\xfe": None, b"fp": b"zz"})
    assert rec.model == "\ufffd" and rec.fingerprint == ""


def test_key_goes_only_to_verified_loopback_or_configured() -> None:
    assert Upstream.key_allowed(Backend("http://192.168.1.5:8080", "static"))
    assert Upstream.key_allowed(Backend("http://127.0.0.1:8080", "mDNS"))
    assert Upstream.key_allowed(Backend("https://192.168.1.5:8080", "mDNS", fingerprint="ab" * 32))
    assert not Upstream.key_allowed(Backend("http://192.168.1.5:8080", "mDNS"))
    assert not Upstream.key_allowed(Backend("https://192.168.1.5:8080", "mDNS"))


def test_explanation_names_both_keys_and_how_to_accept() -> None:
    text = explain_pin_mismatch("gpu-box", "10.0.0.2:8080", "aa" * 32, "bb" * 32, "/data")
    assert "AA:AA" in text and "BB:BB" in text and "/data/trusted_backends.json" in text
    assert "/admin/backends" in text


def test_server_identity_key_is_private_and_stable(tmp_path: Path) -> None:
    a = ensure_identity(tmp_path / "state")
    assert stat.S_IMODE(a.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert ensure_identity(tmp_path / "state") == a  # made once, reused at the next start
    assert len(a.fingerprint) == 64


def test_real_server_serves_its_identity_and_the_front_end_verifies_it(serve: Any, tmp_path: Path) -> None:
    """The real server with server.tls on: HTTPS with a key made at start, fingerprint in TXT, pinned connection."""
    import asyncio

    from clawlan.discovery.service import SERVICE_TYPE

    server = serve(tls=True, state_dir=str(tmp_path / "state"), advertise=True, service_name="clawlan-trust-e2e")
    try:
        assert server.identity is not None and server.base_url.startswith("https://")
        fp = server.identity.fingerprint
        assert stat.S_IMODE(server.identity.key.stat().st_mode) == 0o600
        d = Discoverer("mDNS", 10000, "http://127.0.0.1:9", interfaces=LOOPBACK, service_type=SERVICE_TYPE,
                       trust=TrustStore(configured=[fp]))
        try:
            b = d.resolve()
            assert b.how == "mDNS" and b.base_url == server.base_url and b.fingerprint == fp

            async def models() -> bytes:
                up = Upstream(d)
                try:
                    opened = await up.open("GET", "/v1/models")
                    return b"".join([c async for c in opened.chunks()])
                finally:
                    await up.close()

            assert b"gemma" in asyncio.run(models())
        finally:
            d.close()
    finally:
        server.stop()  # unregister now: other tests browse the same service type


def test_lan_server_defaults_to_tls_loopback_does_not(tmp_path: Path) -> None:
    from clawlan.web.identity import server_identity

    assert server_identity(None, None, lan=True, tls=None, state_dir=tmp_path / "a") is not None
    assert server_identity(None, None, lan=False, tls=None, state_dir=tmp_path / "b") is None
    assert server_identity(None, None, lan=True, tls=False, state_dir=tmp_path / "c") is None
    assert server_identity(None, None, lan=False, tls=True, state_dir=tmp_path / "d") is not None
