"""The back end's mDNS advertisement, found by a real zeroconf browser on loopback."""

from __future__ import annotations

import threading

from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

from clawlan import __version__
from clawlan.discovery.service import SERVICE_TYPE, ServiceRecord


def test_browser_finds_server_with_txt(serve):
    server = serve(advertise=True, api_keys=["k"], service_name="clawlan-test-advertiser")
    found: dict[str, ServiceRecord] = {}
    seen = threading.Event()
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Added:
            return
        info = zeroconf.get_service_info(service_type, name, timeout=3000)
        if info and name.startswith("clawlan-test-advertiser"):
            found[name] = ServiceRecord.from_txt(name, info.parsed_addresses()[0], info.port, info.properties)
            seen.set()

    browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
    try:
        assert seen.wait(10), "no _clawlan._tcp service found"
    finally:
        browser.cancel()
        zc.close()
        server.stop()  # unregister now: later tests browse the same service type
    rec = next(iter(found.values()))
    assert rec.port == server.port and rec.host == "127.0.0.1"
    assert rec.model == "gemma-3-270m" and rec.api == "/v1" and rec.version == __version__
    assert rec.auth is True and rec.tls is False
    assert rec.base_url == server.base_url
