"""Discovery with real multicast on loopback: found, static fallback on time, static skip, re-discovery.

Each test browses its own random service type so parallel test runs (and the
advertiser's own tests) never find each other's services.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.frontend.conftest import StubBackend

from clawlan.discovery.browser import Discoverer

zeroconf = pytest.importorskip("zeroconf")

from tests.discovery.tls_stub import LOOPBACK, Advertiser, TLSStub  # noqa: E402

from clawlan.discovery.trust import TrustStore  # noqa: E402

# Only trusted (pinned) TLS servers are used from mDNS; these fingerprints stand for a pinned key.
FP = "ab" * 32


@pytest.fixture
def service_type() -> str:
    return f"_clw{uuid.uuid4().hex[:8]}._tcp.local."


def trusting(*fps: str) -> TrustStore:
    return TrustStore(configured=list(fps))


@pytest.fixture
def advertiser(service_type: str) -> Iterator[Advertiser]:
    adv = Advertiser(service_type)
    yield adv
    adv.close()


def test_service_is_found_by_mdns(advertiser: Advertiser, service_type: str) -> None:
    advertiser.register(18080, fingerprint=FP)
    d = Discoverer("mDNS", 5000, "http://10.9.9.9:8080", interfaces=LOOPBACK, service_type=service_type,
                   trust=trusting(FP))
    try:
        b = d.resolve()
        assert b.how == "mDNS" and b.fingerprint == FP
        assert b.base_url == "https://127.0.0.1:18080"
        assert b.model == "gemma-test"
        assert b.found_after_ms is not None and b.found_after_ms < 5000
    finally:
        d.close()


@pytest.mark.parametrize("timeout_ms", [1000, 2500])
def test_static_fallback_after_timeout(service_type: str, timeout_ms: int) -> None:
    d = Discoverer("mDNS", timeout_ms, "http://10.9.9.9:8080", interfaces=LOOPBACK, service_type=service_type)
    try:
        t0 = time.monotonic()
        b = d.resolve()
        elapsed = (time.monotonic() - t0) * 1000
    finally:
        d.close()
    assert b.how == "fallback" and b.base_url == "http://10.9.9.9:8080"
    # It waited the whole timeout for mDNS (a minimum: a loaded machine only adds to it); the upper
    # bound catches a wait of twice the timeout while leaving a loaded machine a second of slack.
    assert 0.99 * timeout_ms <= elapsed < 2 * timeout_ms, f"fell back after {elapsed:.0f} ms, not ~{timeout_ms}"


def test_static_skips_mdns() -> None:
    d = Discoverer("static", 5000, "http://10.9.9.9:8080")
    b = d.resolve()
    # No mDNS wait (found at once, by its own clock) and never a multicast socket.
    assert b.how == "static" and b.found_after_ms == 0.0 and d._zc is None


def test_rediscovers_a_moved_service(advertiser: Advertiser, service_type: str) -> None:
    advertiser.register(18081, fingerprint=FP)
    d = Discoverer("mDNS", 5000, "http://10.9.9.9:8080", interfaces=LOOPBACK, service_type=service_type,
                   trust=trusting(FP))
    try:
        assert d.resolve().base_url == "https://127.0.0.1:18081"
        advertiser.unregister()  # the server restarts on another port (a DHCP change looks the same)
        advertiser.register(18082, fingerprint=FP)
        d.invalidate("https://127.0.0.1:18081")
        deadline = time.monotonic() + 5
        while (b := d.resolve()).base_url != "https://127.0.0.1:18082":
            assert time.monotonic() < deadline, f"still at {b.base_url}"
            d.invalidate(b.base_url)
        assert b.how == "mDNS"
    finally:
        d.close()


def test_late_service_replaces_fallback(advertiser: Advertiser, service_type: str) -> None:
    d = Discoverer("mDNS", 300, "http://10.9.9.9:8080", interfaces=LOOPBACK, service_type=service_type,
                   trust=trusting(FP))
    try:
        assert d.resolve().how == "fallback"
        advertiser.register(18083, fingerprint=FP)
        deadline = time.monotonic() + 5
        while (b := d.resolve()).how != "mDNS":
            assert time.monotonic() < deadline
            time.sleep(0.02)  # polling the discoverer; the announcement arrives on its own thread
        assert b.base_url == "https://127.0.0.1:18083"
    finally:
        d.close()


@pytest.fixture
def start_front(tmp_path: Any) -> Iterator[Any]:
    from tests.frontend.conftest import free_port

    from clawlan.frontend.command import launch

    started: list[Any] = []

    def start(backend_url: str, *extra: str) -> Any:
        fp = launch(backend=backend_url, port=free_port(), extra_args=["--data-dir", str(tmp_path / "front"), *extra])
        started.append(fp)
        return fp

    yield start
    for fp in started:
        fp.stop()


def test_front_end_follows_backend_to_a_new_port(advertiser: Advertiser, service_type: str, start_front: Any,
                                                  tmp_path: Any) -> None:
    """End to end: the front end finds the (trusted, TLS) stub by mDNS; it restarts on another port; the next works."""
    stub = TLSStub(tmp_path / "srv").start()
    advertiser.register(stub.port, fingerprint=stub.fingerprint)
    fp = start_front("http://10.9.9.9:8080", "--discovery", "mDNS", "--mdns-interface", "127.0.0.1",
                     "--mdns-service-type", service_type, "--trusted-backend", stub.fingerprint)
    try:
        c = httpx.post(fp.url + "api/conversations", json={}).json()
        url = fp.url + f"api/conversations/{c['id']}/messages"

        def ask(q: str) -> list[dict[str, Any]]:
            with httpx.stream("POST", url, json={"content": q}, timeout=60) as r:
                return [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]

        ev = ask("first")
        start = next(e for e in ev if e["type"] == "start")
        assert start["backend"]["how"] == "mDNS" and start["backend"]["base_url"] == stub.base_url
        assert ev[-1]["type"] == "done"
        # Restart on a new port, re-advertised.
        stub.stop()
        advertiser.unregister()
        stub2 = TLSStub(tmp_path / "srv").start()  # the same state dir: the same identity, as a restarted server
        advertiser.register(stub2.port, fingerprint=stub2.fingerprint)
        try:
            ev = ask("second")
            assert ev[-1]["type"] == "done", ev[-1]
            start = [e for e in ev if e["type"] == "start"][-1]
            assert start["backend"]["base_url"] == stub2.base_url
        finally:
            stub2.stop()
    finally:
        stub.stop()


def test_front_end_falls_back_to_static_on_time(service_type: str, start_front: Any) -> None:
    """No service advertised: the front end uses the static address after fallback_timeout (±20 %), and says so."""
    stub = StubBackend().start()
    try:
        fp = start_front(stub.base_url, "--discovery", "mDNS", "--fallback-timeout", "1500",
                         "--mdns-interface", "127.0.0.1", "--mdns-service-type", service_type)
        c = httpx.post(fp.url + "api/conversations", json={}).json()
        with httpx.stream("POST", fp.url + f"api/conversations/{c['id']}/messages", json={"content": "hi"},
                          timeout=30) as r:
            events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
        assert events[-1]["type"] == "done"
        backend = next(e for e in events if e["type"] == "start")["backend"]
        assert backend["how"] == "fallback" and backend["base_url"] == stub.base_url
        assert 1200 <= backend["found_after_ms"] <= 1800, backend
        status = httpx.get(fp.url + "api/status").json()
        assert status["backend"]["how"] == "fallback"
    finally:
        stub.stop()
