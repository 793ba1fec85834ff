"""The front end's JSON API and local OpenAI endpoint, against the stub back end (no browser)."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from tests.frontend.conftest import StubBackend, wait_until


def sse(resp: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]


def test_send_streams_and_persists(stub_backend: StubBackend, start_front: Any) -> None:
    fp = start_front(stub_backend.base_url)
    c = httpx.post(fp.url + "api/conversations", json={"mode": "code"}).json()
    with httpx.stream("POST", fp.url + f"api/conversations/{c['id']}/messages", json={"content": "hi there"}) as r:
        assert r.status_code == 200
        events = sse(r)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "begin" and "start" in kinds and kinds[-1] == "done"
    text = "".join(e["text"] for e in events if e["type"] == "delta")
    assert text == stub_backend.reply
    conv = httpx.get(fp.url + f"api/conversations/{c['id']}").json()
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
    assert conv["messages"][1]["content"] == stub_backend.reply
    assert conv["title"] == "hi there"
    # The code prompt went to the back end as the system message.
    assert "coding assistant" in stub_backend.requests[-1]["messages"][0]["content"]
    assert stub_backend.requests[-1]["model"] == "stub-model"


def test_conversation_crud_and_search(stub_backend: StubBackend, start_front: Any) -> None:
    fp = start_front(stub_backend.base_url)
    a = httpx.post(fp.url + "api/conversations", json={"title": "报销流程"}).json()
    b = httpx.post(fp.url + "api/conversations", json={"title": "holiday"}).json()
    httpx.patch(fp.url + f"api/conversations/{b['id']}", json={"title": "annual leave"})
    found = httpx.get(fp.url + "api/conversations", params={"q": "报销"}).json()["data"]
    assert [c["id"] for c in found] == [a["id"]]
    assert httpx.get(fp.url + "api/conversations", params={"q": "annual"}).json()["data"][0]["id"] == b["id"]
    assert httpx.delete(fp.url + f"api/conversations/{a['id']}").json() == {"deleted": True}
    assert httpx.get(fp.url + f"api/conversations/{a['id']}").status_code == 404
    bad = httpx.post(fp.url + "api/conversations", json={"mode": "nope"})
    assert bad.status_code == 400 and "unknown mode" in bad.json()["error"]["message"]


def test_regenerate_replaces_answer(stub_backend: StubBackend, start_front: Any) -> None:
    fp = start_front(stub_backend.base_url)
    c = httpx.post(fp.url + "api/conversations", json={}).json()
    url = fp.url + f"api/conversations/{c['id']}/messages"
    with httpx.stream("POST", url, json={"content": "q"}) as r:
        sse(r)
    stub_backend.reply = "second answer"
    with httpx.stream("POST", url, json={"regenerate": True}) as r:
        sse(r)
    msgs = httpx.get(fp.url + f"api/conversations/{c['id']}").json()["messages"]
    assert [(m["role"], m["content"]) for m in msgs] == [("user", "q"), ("assistant", "second answer")]


def test_stop_keeps_partial_text(stub_backend: StubBackend, start_front: Any) -> None:
    fp = start_front(stub_backend.base_url)
    stub_backend.reply = "one two three four"
    stub_backend.gate = threading.Event()  # holds the stream before its last word
    c = httpx.post(fp.url + "api/conversations", json={}).json()
    seen: list[dict[str, Any]] = []
    with httpx.stream("POST", fp.url + f"api/conversations/{c['id']}/messages", json={"content": "count"}) as r:
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            ev = json.loads(line[5:])
            seen.append(ev)
            if ev["type"] == "delta" and "three" in ev["text"]:
                assert httpx.post(fp.url + f"api/conversations/{c['id']}/stop").json() == {"stopped": True}
    assert seen[-1]["type"] == "stopped"
    msg = httpx.get(fp.url + f"api/conversations/{c['id']}").json()["messages"][-1]
    assert msg["status"] == "stopped" and msg["content"] == "one two three "


def test_local_openai_endpoint_streams_through(stub_backend: StubBackend, start_front: Any) -> None:
    from openai import OpenAI

    fp = start_front(stub_backend.base_url)
    client = OpenAI(base_url=fp.url + "v1", api_key="unused")
    assert client.models.list().data[0].id == "stub-model"
    stream = client.chat.completions.create(
        model="stub-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join((ch.choices[0].delta.content or "") for ch in stream if ch.choices)
    assert text == stub_backend.reply
    full = client.chat.completions.create(model="stub-model", messages=[{"role": "user", "content": "hi"}])
    assert full.choices[0].message.content == stub_backend.reply


def test_status_says_how_backend_was_found(stub_backend: StubBackend, start_front: Any) -> None:
    fp = start_front(stub_backend.base_url)
    st = wait_until(lambda: (s := httpx.get(fp.url + "api/status").json())["backend"] and s, what="status")
    assert st["backend"]["base_url"] == stub_backend.base_url
    assert st["backend"]["how"] == "static"
    assert st["sessions"] == {"limit": 5, "active": 0, "queued": 0}


def test_backend_down_before_first_token_is_retried(stub_backend: StubBackend, start_front: Any) -> None:
    """With no back end at all the UI gets an error event, not a hang; once it is back, the next send works."""
    fp = start_front(stub_backend.base_url)
    port = stub_backend.port
    stub_backend.stop()
    c = httpx.post(fp.url + "api/conversations", json={}).json()
    url = fp.url + f"api/conversations/{c['id']}/messages"
    with httpx.stream("POST", url, json={"content": "anyone?"}, timeout=60) as r:
        events = sse(r)
    assert events[-1]["type"] == "error" and "unavailable" in events[-1]["error"]
    stub_backend.start(port)
    with httpx.stream("POST", url, json={"content": "now?"}, timeout=60) as r:
        events = sse(r)
    assert events[-1]["type"] == "done"


@pytest.mark.parametrize("who", ["loopback"])
def test_admin_edits_prompt(stub_backend: StubBackend, start_front: Any, who: str) -> None:
    fp = start_front(stub_backend.base_url)
    r = httpx.put(fp.url + "api/modes/code", json={"prompt": "Answer in haiku."})
    assert r.status_code == 200 and r.json()["customised"]
    c = httpx.post(fp.url + "api/conversations", json={"mode": "code"}).json()
    with httpx.stream("POST", fp.url + f"api/conversations/{c['id']}/messages", json={"content": "x"}) as s:
        sse(s)
    # The admin's prompt, then only the answer-language line the front end adds.
    assert stub_backend.requests[-1]["messages"][0]["content"] == "Answer in haiku.\n\nAnswer in English."
    assert httpx.delete(fp.url + "api/modes/code").json()["customised"] is False


def test_page_gone_while_queued_frees_its_place(stub_backend: StubBackend, start_front: Any) -> None:
    fp = start_front(stub_backend.base_url, "--max-sessions", "1")
    stub_backend.gate = threading.Event()
    a = httpx.post(fp.url + "api/conversations", json={}).json()
    b = httpx.post(fp.url + "api/conversations", json={}).json()
    result: list[str] = []

    def hold() -> None:
        with httpx.stream("POST", fp.url + f"api/conversations/{a['id']}/messages", json={"content": "a"},
                          timeout=60) as r:
            result.append(sse(r)[-1]["type"])

    t = threading.Thread(target=hold)
    t.start()
    try:
        wait_until(lambda: httpx.get(fp.url + "api/status").json()["sessions"]["active"] == 1, what="A running")
        with httpx.stream("POST", fp.url + f"api/conversations/{b['id']}/messages", json={"content": "b"}) as r:
            for line in r.iter_lines():
                if line.startswith("data:") and json.loads(line[5:])["type"] == "queued":
                    break  # the page closes while queued
        assert httpx.get(fp.url + "api/status").json()["sessions"]["queued"] in (0, 1)
        wait_until(lambda: httpx.get(fp.url + "api/status").json()["sessions"]["queued"] == 0, timeout=15,
                   what="the abandoned request to leave the queue")
        msg = httpx.get(fp.url + f"api/conversations/{b['id']}").json()["messages"][-1]
        assert msg["status"] == "stopped"
    finally:
        stub_backend.gate.set()
        t.join(30)
    assert result == ["done"]
