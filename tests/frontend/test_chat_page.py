"""A real headless Chromium drives the chat page.

Against the real back end (the ``backend`` fixture: the embedded Gemma 3 270M
base model, so answers are low-quality text): send, stream, stop; a new
conversation; reload keeps history; upload a document and see the retrieved
snippet; the sixth simultaneous conversation shows "queued", then completes.
Long answers are forced with the server's ``ignore_eos`` (passed through
``--request-defaults``) so "still streaming" is a fact, not a race.

The untrusted-output test points the front end at the stub back end of
conftest.py, because only a scripted back end can be made to answer with
``<img src=x onerror=...>`` and ``<script>`` on demand.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.frontend.conftest import StubBackend, wait_until

LONG = '{"ignore_eos": true, "temperature": 0}'
SHORT = '{"temperature": 0}'
DOCS = Path(__file__).with_name("data") / "library"


def open_chat(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")


def test_send_stream_stop_new_chat_reload(backend: Any, start_front: Any, page: Any) -> None:
    fp = start_front(backend.base_url, "--max-tokens", "120", "--request-defaults", LONG)
    open_chat(page, fp.url)
    page.fill("#prompt", "Tell me a long story about a cat.")
    page.keyboard.press("Enter")
    answer = page.locator("#messages .msg.assistant").last
    # Streaming: text grows while the state is "streaming".
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll('#messages .msg.assistant')].pop();"
        " return m && m.dataset.state === 'streaming' && m.querySelector('.body').textContent.length > 20; }",
        timeout=60_000,
    )
    first = answer.locator(".body").inner_text()
    page.wait_for_function(
        "n => [...document.querySelectorAll('#messages .msg.assistant')].pop().querySelector('.body')"
        ".textContent.length > n", arg=len(first) + 5, timeout=60_000,
    )
    page.keyboard.press("Escape")  # the stop shortcut
    page.wait_for_function(
        "() => [...document.querySelectorAll('#messages .msg.assistant')].pop().dataset.state === 'stopped'",
        timeout=30_000,
    )
    stopped_text = answer.locator(".body").inner_text()
    assert len(stopped_text) > len(first)
    assert page.locator("#backend").get_attribute("data-how") == "static"
    conv1 = page.evaluate("location.hash")

    # A new conversation (Ctrl+Shift+O), answered to the end.
    page.keyboard.press("Control+Shift+O")
    page.wait_for_function("() => document.querySelectorAll('#messages .msg').length === 0")
    page.fill("#prompt", "Say hello.")
    page.click("#send")
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll('#messages .msg.assistant')].pop();"
        " return m && m.dataset.state === 'done'; }", timeout=120_000,
    )
    assert page.locator("#conv-list li").count() == 2

    # Reload: the first conversation, with what was shown when it stopped, is still there.
    page.goto(fp.url + conv1)
    page.reload()
    page.wait_for_selector("#messages .msg.assistant[data-state='stopped']")
    assert page.locator("#messages .msg.user").first.inner_text().endswith("Tell me a long story about a cat.")
    reloaded = page.locator("#messages .msg.assistant .body").first.inner_text()
    assert reloaded.strip()[:40] == stopped_text.strip()[:40]
    assert len(reloaded) >= len(stopped_text) - 5
    assert page.locator("#conv-list li").count() == 2


def test_upload_document_and_see_the_snippet(backend: Any, start_front: Any, page: Any, tmp_path: Path) -> None:
    fp = start_front(backend.base_url, "--max-tokens", "48", "--request-defaults", SHORT)
    open_chat(page, fp.url)
    page.set_input_files("#file", str(DOCS / "员工休假制度.md"))
    # The chip with a remove button is the indexed document (the "Reading…" chip has none).
    page.wait_for_selector("#docs .chip button[aria-label*='员工休假制度.md']", timeout=30_000)
    assert page.locator("#mode").input_value() == "document"
    page.fill("#prompt", "陪产假有几天？")
    page.keyboard.press("Enter")
    # Sources are folded under their summary; opening it shows the snippet.
    page.locator("#messages .msg.assistant .sources summary").click(timeout=30_000)
    snippet = page.locator("#messages .msg.assistant .sources .snippet").first
    snippet.wait_for(timeout=30_000)
    assert "十五天陪产假" in page.locator("#messages .msg.assistant .sources").inner_text()
    assert "员工休假制度.md" in page.locator("#messages .msg.assistant .sources").inner_text()
    page.wait_for_selector("#messages .msg.assistant[data-state='done']", timeout=120_000)
    # The snippet went to the model as well as to the page.
    conv = httpx.get(fp.url + "api/conversations/" + page.evaluate("location.hash.slice(3)")).json()
    assert conv["messages"][-1]["sources"][0]["doc"] == "员工休假制度.md"


def test_model_output_is_inert(stub_backend: StubBackend, start_front: Any, page: Any) -> None:
    """Uses the stub back end: it is told to answer with live-looking HTML and script."""
    stub_backend.reply = (
        'Look: <img src=x onerror="window.__pwned=1"> and <script>window.__pwned=2</script> '
        '[click](javascript:window.__pwned=3) <iframe src="javascript:window.__pwned=4"></iframe> '
        '<a href="#" onclick="window.__pwned=5">x</a> ![pic](http://10.0.0.1/x.png)\n\n```html\n<b>ok</b>\n```'
    )
    fp = start_front(stub_backend.base_url)
    open_chat(page, fp.url)
    page.fill("#prompt", "show me html")
    page.keyboard.press("Enter")
    page.wait_for_selector("#messages .msg.assistant[data-state='done']")
    body = page.locator("#messages .msg.assistant .body")
    for sel in ("img", "script", "iframe", "[onerror]", "[onclick]", "a[href^='javascript']"):
        assert body.locator(sel).count() == 0, sel
    page.locator("#messages .msg.assistant pre button.copy").click()
    assert page.evaluate("window.__pwned") is None
    text = body.inner_text()
    assert "<img src=x" in text and "<script>" in text  # shown as text, not run


def test_sixth_conversation_is_queued_then_completes(backend: Any, start_front: Any, page: Any) -> None:
    fp = start_front(backend.base_url, "--max-sessions", "5", "--max-tokens", "120", "--request-defaults", LONG)
    done: list[str] = []
    errors: list[BaseException] = []

    def hold(i: int) -> None:
        try:
            c = httpx.post(fp.url + "api/conversations", json={"mode": "code"}).json()
            with httpx.stream("POST", fp.url + f"api/conversations/{c['id']}/messages",
                              json={"content": f"Count to {i + 50}."}, timeout=300) as r:
                events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
            done.append(events[-1]["type"])
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: httpx.get(fp.url + "api/status").json()["sessions"]["active"] == 5,
                   timeout=60, what="five conversations generating")
        open_chat(page, fp.url)
        page.fill("#prompt", "I am the sixth.")
        page.keyboard.press("Enter")
        page.wait_for_selector("#messages .msg.assistant[data-state='queued']", timeout=30_000)
        assert "Queued" in page.locator("#messages .msg.assistant .state").inner_text()
        page.wait_for_selector("#messages .msg.assistant[data-state='done']", timeout=240_000)
        assert page.locator("#messages .msg.assistant .body").inner_text().strip()
    finally:
        for t in threads:
            t.join(300)
    assert not errors and done == ["done"] * 5


@pytest.mark.parametrize("lang,expect", [("zh-CN", "发送"), ("en-US", "Send")])
def test_ui_language_follows_browser(browser: Any, stub_backend: StubBackend, start_front: Any,
                                     lang: str, expect: str) -> None:
    fp = start_front(stub_backend.base_url)
    ctx = browser.new_context(locale=lang)
    try:
        pg = ctx.new_page()
        open_chat(pg, fp.url)
        assert pg.locator("#send").inner_text() == expect
        assert pg.evaluate("document.documentElement.lang").startswith(lang[:2])
    finally:
        ctx.close()


def test_narrow_screen_and_labels(stub_backend: StubBackend, start_front: Any, browser: Any) -> None:
    fp = start_front(stub_backend.base_url)
    ctx = browser.new_context(viewport={"width": 380, "height": 740}, locale="en-US")
    try:
        pg = ctx.new_page()
        open_chat(pg, fp.url)
        # Focus order: the skip link, then (the drawer being closed) the menu button, then the mode.
        order = []
        for _ in range(3):
            pg.keyboard.press("Tab")
            order.append(pg.evaluate("document.activeElement.id || document.activeElement.className"))
        assert order == ["skip", "toggle-sidebar", "mode"], order
        assert not pg.locator("#sidebar").is_visible() or pg.locator("#sidebar").bounding_box()["x"] < 0
        pg.click("#toggle-sidebar")
        pg.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().x >= 0")
        assert pg.get_attribute("#toggle-sidebar", "aria-expanded") == "true"
        # Every form control has an accessible name.
        unnamed = pg.evaluate("""() => [...document.querySelectorAll('button, textarea, input:not([type=file]), select')]
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
            .map(e => e.id || e.outerHTML.slice(0, 60))""")
        assert unnamed == []
    finally:
        ctx.close()


@pytest.mark.parametrize("mode,animation", [("hardware_accelerated", "appear"), ("software", "none")])
def test_render_mode_switches_animations(stub_backend: StubBackend, start_front: Any, page: Any,
                                         mode: str, animation: str) -> None:
    fp = start_front(stub_backend.base_url, "--render-mode", mode)
    open_chat(page, fp.url)
    assert page.evaluate("document.documentElement.className") == f"render-{mode}"
    page.fill("#prompt", "hi")
    page.keyboard.press("Enter")
    page.wait_for_selector("#messages .msg.assistant[data-state='done']")
    assert page.evaluate("getComputedStyle(document.querySelector('#messages .msg')).animationName") == animation


def test_backend_lost_mid_answer_keeps_the_text(stub_backend: StubBackend, start_front: Any, page: Any) -> None:
    """Stub back end: it drops the connection after three words, as a crashed server would."""
    stub_backend.reply = "alpha beta gamma delta epsilon"
    stub_backend.die_after = 3
    fp = start_front(stub_backend.base_url)
    open_chat(page, fp.url)
    page.fill("#prompt", "go")
    page.keyboard.press("Enter")
    page.wait_for_selector("#messages .msg.assistant[data-state='error']", timeout=30_000)
    assert page.locator("#messages .msg.assistant .body").inner_text().strip() == "alpha beta gamma"
    assert "text so far is kept" in page.locator("#messages .msg.assistant .error").inner_text()
    page.reload()
    page.wait_for_selector("#messages .msg.assistant[data-state='error']")
    assert page.locator("#messages .msg.assistant .body").inner_text().strip() == "alpha beta gamma"
