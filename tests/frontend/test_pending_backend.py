"""The chat page says when a server found by mDNS waits for an admin, and leads an admin to accept it.

Real multicast on loopback (python-zeroconf on 127.0.0.1) on this test's own service type, a
TLS stub back end with its own identity, the front end as its own process, headless Chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.discovery.tls_stub import Advertiser, TLSStub
from tests.frontend.conftest import StubBackend, free_port, wait_until

from clawlan.frontend.command import FrontProcess, launch

NOTE = "#pending-note"


@pytest.fixture
def advertiser(service_type: str) -> Iterator[Advertiser]:
    # Made off the main thread: Playwright's event loop runs there, and zeroconf would take a running
    # loop for its own and then block it waiting on itself (EventLoopBlocked).
    with ThreadPoolExecutor(1) as pool:
        adv = pool.submit(Advertiser, service_type).result()
    yield adv
    adv.close()


@pytest.fixture
def pending(tmp_path: Path, service_type: str, advertiser: Advertiser, servers: list[Any]) -> Iterator[Any]:
    """A front end browsing loopback mDNS, where one TLS server with an unpinned key is advertised.
    The front end uses its configured (stub) back end meanwhile."""
    new = TLSStub(tmp_path / "new").start()
    fallback = StubBackend().start()
    servers += [new, fallback]
    advertiser.register(new.port, name="office-server", fingerprint=new.fingerprint)
    fe: FrontProcess = launch(backend=fallback.base_url, port=free_port(), extra_args=[
        "--data-dir", str(tmp_path / "front"), "--discovery", "mDNS", "--fallback-timeout", "1500",
        "--mdns-interface", "127.0.0.1", "--mdns-service-type", service_type])  # fmt: skip
    try:
        # Known to the front end before the page opens, so the page's first status poll has it.
        wait_until(lambda: [c for c in httpx.get(fe.url + "api/status").json()["backends"] if c["state"] == "new"],
                   timeout=20, what="the new server seen")  # fmt: skip
        yield fe, new
    finally:
        fe.stop()


def open_chat(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")


def test_admin_is_told_of_a_new_server_and_led_to_accept_it(pending: Any, page: Any) -> None:
    fe, new = pending
    open_chat(page, fe.url)
    page.wait_for_selector(f"{NOTE}:not([hidden])")
    assert page.inner_text(f"{NOTE} .text") == (
        "A new server was found on the network; it waits for an admin to accept it.")
    # The chip says it too: in its line, and in full in its tooltip and label.
    chip = page.locator("#backend")
    assert "1 awaiting an admin" in chip.locator(".label").inner_text()
    assert "waits for an admin" in chip.get_attribute("title")
    assert "waits for an admin" in chip.get_attribute("aria-label")
    # This page is at the box: its admin gets the way to the back-end list.
    link = page.locator(f"{NOTE} a.review")
    assert link.is_visible() and link.get_attribute("href") == "/admin/backends"
    link.click()
    page.wait_for_selector("#rows tr")
    assert "office-server" in page.inner_text("#rows") and "new" in page.inner_text("#rows")
    r = httpx.post(fe.url + "api/backends/accept", json={"fingerprint": new.fingerprint})
    assert r.status_code == 200, r.text
    # Accepted: the front end picks it at once (the chip shows it, no question needed) and nothing waits.
    open_chat(page, fe.url)
    page.wait_for_function("url => { const b = document.querySelector('#backend');"
                           " return b.dataset.state === 'ok' && b.dataset.url === url; }", arg=new.base_url)
    assert page.locator(NOTE).is_hidden()
    assert "awaiting" not in page.inner_text("#backend .label")


def test_others_are_told_in_chinese_without_the_admin_link(pending: Any, browser: Any) -> None:
    fe, _ = pending
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1200, "height": 800})
    try:
        pg = ctx.new_page()

        def as_lan_user(route: Any) -> None:
            # The page as someone elsewhere on the LAN sees it (loopback is always the admin).
            body = route.fetch().json()
            route.fulfill(json={**body, "admin": False})

        pg.route("**/api/status", as_lan_user)
        open_chat(pg, fe.url)
        pg.wait_for_selector(f"{NOTE}:not([hidden])")
        assert pg.inner_text(f"{NOTE} .text") == "在局域网中发现一台新服务器，等待管理员确认后才会使用。"
        assert "1 台待管理员确认" in pg.inner_text("#backend .label")
        assert pg.locator(f"{NOTE} a.review").is_hidden()
    finally:
        ctx.close()

