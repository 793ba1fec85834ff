"""The first minutes with the chat page, in a real headless Chromium (issue 14, items 1-8).

Each test here failed on the page as it was before the fix. Where the point is
timing against a model (a message sent while the model loads) the back end is
a real clawlan server on the embedded model whose loading the test holds back;
where the point is what the page does with a scripted answer (a chat held
open, a back end that goes away) it is the stub back end of conftest.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import make_settings
from tests.frontend.conftest import StubBackend, wait_until

DOCS = Path(__file__).with_name("data") / "library"
LAST = "[...document.querySelectorAll('#messages .msg.assistant')].pop()"


def open_chat(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")


def ask(page: Any, text: str) -> None:
    page.fill("#prompt", text)
    page.keyboard.press("Enter")


def last_state(page: Any) -> str | None:
    return page.evaluate(f"(() => {{ const m = {LAST}; return m ? m.dataset.state : null; }})()")


# ---------------------------------------------------------------- 1. the model is still loading


@pytest.fixture
def loading_server(llama_model: Any, model_info: Any) -> Iterator[Any]:
    """A real clawlan server whose model load waits for ``server.backend.release``."""
    from clawlan.server.backend import Backend
    from clawlan.server.serving import RunningServer

    class HeldBackend(Backend):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.release = threading.Event()

        def load(self) -> None:
            self.release.wait(300)
            super().load()

    settings = make_settings()
    server = RunningServer(settings, HeldBackend(settings, model=llama_model, info=model_info), port=0)
    with pytest.raises(TimeoutError):
        server.start(timeout=0)  # serves at once; the model is not loaded yet
    yield server
    server.backend.release.set()
    server.stop()
    server.backend.close()


def test_first_message_while_the_model_loads_waits_then_goes_through(
    loading_server: Any, start_front: Any, page: Any
) -> None:
    fp = start_front(loading_server.base_url, "--max-tokens", "16", "--request-defaults", '{"temperature": 0}')
    assert httpx.get(loading_server.base_url + "/health").status_code == 503  # really loading
    open_chat(page, fp.url)
    ask(page, "Say hello.")
    # The page says the model is loading, and keeps the message (no error).
    page.wait_for_selector("#messages .msg.assistant[data-state='loading']", timeout=30_000)
    assert "loading" in page.locator("#messages .msg.assistant .state").inner_text().lower()
    page.wait_for_selector("#backend[data-state='loading']", timeout=15_000)
    assert page.locator("#messages .msg.assistant .error").count() == 0
    loading_server.backend.release.set()
    page.wait_for_selector("#messages .msg.assistant[data-state='done']", timeout=180_000)
    assert page.locator("#messages .msg.assistant .error").count() == 0
    assert page.locator("#messages .msg.assistant .body").inner_text().strip()
    page.wait_for_selector("#backend[data-state='ok']", timeout=15_000)


# ---------------------------------------------------------------- 2. the back end is down


def test_backend_down_says_so_with_retry_and_red_chip_then_recovers(
    stub_backend: StubBackend, start_front: Any, page: Any
) -> None:
    fp = start_front(stub_backend.base_url)
    open_chat(page, fp.url)
    page.wait_for_selector("#backend[data-state='ok']", timeout=15_000)
    port = stub_backend.port
    stub_backend.stop()
    ask(page, "Are you there?")
    page.wait_for_selector("#messages .msg.assistant[data-state='error']", timeout=15_000)
    err = page.locator("#messages .msg.assistant .error")
    assert "not answering" in err.inner_text()  # plain words, not "ConnectError"
    assert "ConnectError" not in err.inner_text()
    page.wait_for_selector("#backend.bad[data-state='bad']", timeout=15_000)
    assert "unreachable" in page.locator("#backend").inner_text().lower()
    # The back end comes back: Retry answers, and the chip turns green again.
    stub_backend.start(port=port)
    page.locator("#messages .msg.assistant .error button.retry").click()
    page.wait_for_selector("#messages .msg.assistant[data-state='done']", timeout=30_000)
    assert "stub" in page.locator("#messages .msg.assistant .body").inner_text()
    page.wait_for_selector("#backend[data-state='ok']", timeout=15_000)
    # And the next message works too.
    ask(page, "Again?")
    page.wait_for_function(f"() => document.querySelectorAll('#messages .msg.assistant').length === 2"
                           f" && {LAST}.dataset.state === 'done'", timeout=30_000)


# ---------------------------------------------------------------- 3. switching chats while one streams


def test_switching_back_shows_the_live_stream_and_other_chats_work(
    stub_backend: StubBackend, start_front: Any, page: Any
) -> None:
    stub_backend.reply = "one two three four five six seven eight"
    stub_backend.gate = threading.Event()
    stub_backend.gate_word = "slow"  # only the first chat waits before its last word
    fp = start_front(stub_backend.base_url)
    open_chat(page, fp.url)
    ask(page, "a slow answer please")
    page.wait_for_function(f"() => {LAST} && {LAST}.querySelector('.body').textContent.includes('seven')",
                           timeout=30_000)
    first = page.evaluate("location.hash")
    # Another chat, while the first still streams: sending there works.
    page.click("#new-chat")
    page.wait_for_function("() => document.querySelectorAll('#messages .msg').length === 0")
    ask(page, "quick one")
    page.wait_for_selector("#messages .msg.assistant[data-state='done']", timeout=30_000)
    assert page.locator("#prompt").input_value() == ""
    assert "eight" in page.locator("#messages .msg.assistant .body").inner_text()
    # Back to the first: its answer is there as streamed so far, still live.
    page.click(f"#conv-list li[data-id='{first[3:]}'] button.open")
    page.wait_for_function(f"() => location.hash === '{first}'")
    page.wait_for_function(f"() => {LAST}.dataset.state === 'streaming'"
                           f" && {LAST}.querySelector('.body').textContent.includes('seven')")
    assert "Waiting for the first words" not in page.locator("#messages .msg.assistant .state").inner_text()
    # Pressing Send here says why nothing is sent, instead of nothing.
    ask(page, "more?")
    page.wait_for_selector("#notice:not([hidden])")
    assert "still answering" in page.locator("#notice").inner_text()
    stub_backend.gate.set()
    page.wait_for_function(f"() => {LAST}.dataset.state === 'done'"
                           f" && {LAST}.querySelector('.body').textContent.includes('eight')", timeout=30_000)


# ---------------------------------------------------------------- 4. the phone drawer


def test_phone_drawer_closes_by_backdrop_and_escape(stub_backend: StubBackend, start_front: Any,
                                                   browser: Any) -> None:
    fp = start_front(stub_backend.base_url)
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US", has_touch=True)
    try:
        pg = ctx.new_page()
        open_chat(pg, fp.url)
        opened = "() => document.querySelector('#sidebar').getBoundingClientRect().x >= 0"
        closed = "() => document.querySelector('#sidebar').getBoundingClientRect().right <= 0"
        pg.click("#toggle-sidebar")
        pg.wait_for_function(opened)
        # ☰ is not under the drawer: it is what a tap there reaches.
        box = pg.locator("#toggle-sidebar").bounding_box()
        hit = pg.evaluate("([x, y]) => document.elementFromPoint(x, y).id",
                          [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
        assert hit == "toggle-sidebar"
        # A tap on the dimmed page beside the drawer closes it.
        pg.mouse.click(370, 600)
        pg.wait_for_function(closed)
        assert pg.get_attribute("#toggle-sidebar", "aria-expanded") == "false"
        pg.click("#toggle-sidebar")
        pg.wait_for_function(opened)
        pg.keyboard.press("Escape")
        pg.wait_for_function(closed)
        # And ☰ toggles it shut as well.
        pg.click("#toggle-sidebar")
        pg.wait_for_function(opened)
        pg.click("#toggle-sidebar")
        pg.wait_for_function(closed)
    finally:
        ctx.close()


# ---------------------------------------------------------------- 6. the status chip


def chip(page: Any) -> dict[str, Any]:
    return page.evaluate("(() => { const e = document.querySelector('#backend');"
                         " return {...e.dataset, text: e.innerText, title: e.title}; })()")


def test_status_chip_names_the_model_and_counts_right(stub_backend: StubBackend, start_front: Any,
                                                      page: Any) -> None:
    stub_backend.gate = threading.Event()
    stub_backend.gate_word = "hold"
    fp = start_front(stub_backend.base_url, "--max-sessions", "5")
    open_chat(page, fp.url)
    page.wait_for_selector("#backend[data-state='ok']", timeout=15_000)
    c = chip(page)
    assert "stub-model" in c["text"] and "0/5" in c["text"], c
    assert "mDNS" not in c["title"] and "fallback" not in c["title"]
    assert "the configured address" in c["title"] and stub_backend.base_url in c["title"]
    # The title is not squeezed by the chip at 1280 px.
    page.set_viewport_size({"width": 1280, "height": 800})
    assert page.locator("#conv-title").bounding_box()["width"] > 300

    errors: list[BaseException] = []

    def hold(i: int) -> None:
        try:
            cid = httpx.post(fp.url + "api/conversations", json={"mode": "code"}).json()["id"]
            with httpx.stream("POST", fp.url + f"api/conversations/{cid}/messages",
                              json={"content": f"hold {i}"}, timeout=60) as r:
                for _ in r.iter_lines():
                    pass
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: stub_backend.active == 5, timeout=30, what="five answers held open")
        ask(page, "hold me too")  # the sixth: queued
        page.wait_for_selector("#messages .msg.assistant[data-state='queued']", timeout=15_000)
        page.wait_for_function("() => { const d = document.querySelector('#backend').dataset;"
                               " return d.active === '5' && d.queued === '1'; }", timeout=10_000)
        assert "5/5" in chip(page)["text"] and "1 waiting" in chip(page)["text"]
        stub_backend.gate.set()
        page.wait_for_selector("#messages .msg.assistant[data-state='done']", timeout=30_000)
        page.wait_for_function("() => { const d = document.querySelector('#backend').dataset;"
                               " return d.active === '0' && d.queued === '0'; }", timeout=15_000)
        assert "0/5" in chip(page)["text"]
    finally:
        stub_backend.gate.set()
        for t in threads:
            t.join(60)
    assert not errors


def test_status_events_carry_the_counts(stub_backend: StubBackend, start_front: Any) -> None:
    fp = start_front(stub_backend.base_url)
    cid = httpx.post(fp.url + "api/conversations", json={}).json()["id"]
    with httpx.stream("POST", fp.url + f"api/conversations/{cid}/messages", json={"content": "hi"}) as r:
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert all("sessions" in ev for ev in events)
    assert events[-1]["type"] == "done" and events[-1]["sessions"]["active"] == 0
    assert any(ev["sessions"]["active"] == 1 for ev in events if ev["type"] == "delta")


# ---------------------------------------------------------------- 5. the default mode fits what is set up


def test_default_mode_is_general_until_a_library_exists(stub_backend: StubBackend, start_front: Any, page: Any,
                                                        tmp_path: Path) -> None:
    fp = start_front(stub_backend.base_url)  # no --docs-dir: no knowledge base
    open_chat(page, fp.url)
    page.wait_for_selector("#backend[data-state='ok']", timeout=15_000)
    assert page.locator("#mode").input_value() == "general"
    assert page.locator("#library-note").is_hidden()
    ask(page, "hello")
    page.wait_for_selector("#messages .msg.assistant[data-state='done']")
    cid = page.evaluate("location.hash.slice(3)")
    assert httpx.get(fp.url + f"api/conversations/{cid}").json()["mode"] == "general"
    # Customer service without a library: the page says why it cannot answer from documents.
    page.select_option("#mode", "service")
    page.wait_for_selector("#library-note:not([hidden])")
    assert "knowledge base is empty" in page.locator("#library-note").inner_text()

    # With a library, customer service is the default and the note is gone.
    fp2 = start_front(stub_backend.base_url, "--docs-dir", str(DOCS), data_dir=tmp_path / "front-lib")
    open_chat(page, fp2.url)
    page.wait_for_function("() => document.querySelector('#mode').value === 'service'", timeout=30_000)
    assert page.locator("#library-note").is_hidden()


def test_clawlan_run_accepts_the_front_end_options(tmp_path: Path) -> None:
    from clawlan.cli import build_parser

    args = build_parser().parse_args(["run", "--docs-dir", str(tmp_path), "--front-port", "9090",
                                      "--max-sessions", "3", "--kiosk", "--port", "8085"])
    assert args.port == 8085 and args.front_port == 9090  # --port stays the server's
    from clawlan.frontend.command import run_args

    assert run_args(args) == ["--docs-dir", str(tmp_path), "--max-sessions", "3", "--kiosk"]
    front = build_parser().parse_args(["front", *run_args(args)])  # the front end takes what run passes on
    assert front.docs_dir == str(tmp_path) and front.max_sessions == 3 and front.kiosk


# ---------------------------------------------------------------- 7. upload errors


def test_upload_error_is_a_distinct_dismissible_chip_in_the_page_language(
    stub_backend: StubBackend, start_front: Any, browser: Any, tmp_path: Path
) -> None:
    fp = start_front(stub_backend.base_url)
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"\x89PNG not a document")
    good = tmp_path / "notes.txt"
    good.write_text("The printer is on the second floor.", encoding="utf-8")
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
    try:
        pg = ctx.new_page()
        open_chat(pg, fp.url)
        pg.wait_for_selector("#backend[data-state='ok']", timeout=15_000)
        chip_before = pg.locator("#backend").inner_text()
        pg.set_input_files("#file", str(bad))
        err = pg.locator("#docs .chip.bad")
        err.wait_for(timeout=15_000)
        assert "不是" in err.inner_text() and "unsupported" not in err.inner_text()  # Chinese, plain
        assert err.evaluate("e => getComputedStyle(e).color") != pg.locator("#backend").evaluate(
            "e => getComputedStyle(e).color")
        err.locator("button").click()  # ✕ dismisses it
        pg.wait_for_function("() => !document.querySelector('#docs .chip.bad')")
        pg.set_input_files("#file", str(good))
        pg.wait_for_selector("#docs .chip button[aria-label*='notes.txt']", timeout=15_000)
        assert "notes.txt" not in pg.locator("#backend").inner_text()  # not written into the status
        assert pg.locator("#backend").inner_text() == chip_before
    finally:
        ctx.close()


# ---------------------------------------------------------------- 8. the prompts dialog


def test_prompts_dialog_fits_and_behaves(stub_backend: StubBackend, start_front: Any, page: Any) -> None:
    fp = start_front(stub_backend.base_url)
    page.set_viewport_size({"width": 1280, "height": 800})
    open_chat(page, fp.url)
    page.click("#open-settings")
    page.wait_for_selector("#settings[open]")
    # Opens at the top: the dialog and the first prompt unscrolled.
    assert page.evaluate("document.querySelector('#prompt-editors').scrollTop") == 0
    assert page.evaluate("document.querySelector('#prompt-editors textarea').scrollTop") == 0
    assert page.locator("#settings-title").bounding_box()["y"] >= 0
    # Close is on screen at 800 px.
    close = page.locator("#settings button[value='close']").bounding_box()
    assert close["y"] + close["height"] <= 800
    # No docs folder: nothing to re-read.
    assert page.locator("#rescan").is_disabled()
    # Save and Reset are apart; "Saved" goes away after Reset.
    fs = page.locator("#prompt-editors fieldset").first
    save, reset = fs.locator("button.save"), fs.locator("button.reset")
    gap = reset.bounding_box()["x"] - (save.bounding_box()["x"] + save.bounding_box()["width"])
    assert gap >= 6
    fs.locator("textarea").fill("Be brief.")
    save.click()
    page.wait_for_function("() => document.querySelector('#prompt-editors button.save').textContent === 'Saved'")
    reset.click()
    page.wait_for_function("() => document.querySelector('#prompt-editors textarea').value !== 'Be brief.'")
    assert save.inner_text() == "Save"
    page.click("#settings button[value='close']")
    page.wait_for_selector("#settings:not([open])", state="attached")


# ---------------------------------------------------------------- 10. the answer's language


def test_the_model_is_told_to_answer_in_the_question_language(stub_backend: StubBackend, start_front: Any,
                                                               page: Any) -> None:
    fp = start_front(stub_backend.base_url)
    open_chat(page, fp.url)
    ask(page, "How many days of annual leave do I get?")
    page.wait_for_selector("#messages .msg.assistant[data-state='done']")
    assert "\n\nAnswer in English." in stub_backend.requests[-1]["messages"][0]["content"]
    page.click("#new-chat")
    ask(page, "年假有几天？")
    page.wait_for_selector("#messages .msg.assistant[data-state='done']")
    assert "\n\n请用中文回答。" in stub_backend.requests[-1]["messages"][0]["content"]


# ---------------------------------------------------------------- 11. dialogs, icon, dated titles, links


def test_rename_delete_in_page_dated_titles_icon_and_inert_links(stub_backend: StubBackend, start_front: Any,
                                                                 page: Any) -> None:
    stub_backend.reply = "See [the portal](https://evil.example/login) or https://10.0.0.9/x for details."
    fp = start_front(stub_backend.base_url)
    native: list[str] = []
    page.on("dialog", lambda d: (native.append(d.type), d.dismiss()))
    open_chat(page, fp.url)
    icon = page.evaluate("document.querySelector('link[rel=icon]').href")
    assert httpx.get(icon).headers["content-type"].startswith("image/svg")
    for _ in range(2):
        page.click("#new-chat")
        ask(page, "Hello")
        page.wait_for_selector("#messages .msg.assistant[data-state='done']")
    # Model-made links are text, with the address shown, not clickable.
    body = page.locator("#messages .msg.assistant .body")
    assert body.locator("a").count() == 0
    assert "https://evil.example/login" in body.inner_text() and "https://10.0.0.9/x" in body.inner_text()
    # Two "Hello" chats: each entry shows a time beside the title.
    page.wait_for_function("() => document.querySelectorAll('#conv-list li').length === 2")
    whens = page.locator("#conv-list li .when").all_inner_texts()
    assert len(whens) == 2 and all(w.strip() for w in whens)
    # Rename in a page dialog.
    page.locator("#conv-list li").first.locator("button.rename").click()
    page.wait_for_selector("#ask[open]")
    page.fill("#ask-input", "Printer question")
    page.click("#ask-ok")
    page.wait_for_function("() => [...document.querySelectorAll('#conv-list .name')]"
                           ".some(e => e.textContent === 'Printer question')")
    # The first entry is the open conversation: its heading follows, and the buttons name it.
    assert page.inner_text("#conv-title") == "Printer question"
    tools = page.locator("#conv-list li").first.locator("button.tool")
    assert [tools.nth(i).get_attribute("aria-label") for i in range(2)] == [
        "Rename: Printer question", "Delete: Printer question"]
    # Delete asks in a page dialog; Cancel keeps it, Delete removes it.
    page.locator("#conv-list li").first.locator("button.delete").click()
    page.wait_for_selector("#ask[open]")
    page.click("#ask button[value='cancel']")
    assert page.locator("#conv-list li").count() == 2
    page.locator("#conv-list li").first.locator("button.delete").click()
    page.wait_for_selector("#ask[open]")
    page.click("#ask-ok")
    page.wait_for_function("() => document.querySelectorAll('#conv-list li').length === 1")
    # Deleting the open conversation leaves a new, empty chat on screen.
    assert page.inner_text("#conv-title") == "New chat" and page.locator("#messages .msg").count() == 0
    assert native == []  # no prompt() or confirm()


def test_another_tab_follows_a_streaming_answer(stub_backend: StubBackend, start_front: Any, browser: Any) -> None:
    stub_backend.reply = "one two three four five six seven eight"
    stub_backend.gate = threading.Event()
    fp = start_front(stub_backend.base_url)
    ctx = browser.new_context(locale="en-US")
    try:
        a = ctx.new_page()
        open_chat(a, fp.url)
        ask(a, "slow please")
        a.wait_for_function(f"() => {LAST} && {LAST}.querySelector('.body').textContent.includes('seven')",
                            timeout=30_000)
        b = ctx.new_page()
        open_chat(b, fp.url + a.evaluate("location.hash"))
        b.wait_for_function(f"() => {LAST} && {LAST}.querySelector('.body').textContent.includes('seven')",
                            timeout=15_000)
        stub_backend.gate.set()
        b.wait_for_function(f"() => {LAST}.dataset.state === 'done'"
                            f" && {LAST}.querySelector('.body').textContent.includes('eight')", timeout=15_000)
    finally:
        stub_backend.gate.set()
        ctx.close()
