"""The front end on a hostile LAN: hosts, cross-site writes, headers, uploads, the local /v1 endpoint, admin.

Most tests call the real app in process through ASGI, which lets a test send
exactly the bytes an attacker would (a raw ``/v1/../metrics`` path, a body in
1 MB pieces, a LAN client address); back ends are real servers on loopback.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import stat
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.discovery.tls_stub import Rogue
from tests.frontend.conftest import StubBackend, wait_until

from clawlan.frontend import documents
from clawlan.frontend.app import FrontConfig, build_app
from clawlan.frontend.proxy import UpstreamError, sse_events

HOST = "127.0.0.1:8081"
# One event loop for the whole module, as a server has: the app's HTTP client pools connections per loop.
LOOP = asyncio.new_event_loop()
threading.Thread(target=LOOP.run_forever, daemon=True).start()


def run(coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, LOOP).result(120)

LAN_CLIENT = ("192.168.1.77", 50123)
LOCAL_CLIENT = ("127.0.0.1", 50123)


def call(app: Any, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b"",
         chunks: Iterator[bytes] | None = None, client: tuple[str, int] = LOCAL_CLIENT,
         query: str = "") -> tuple[int, dict[str, str], bytes, int]:
    """One request straight into the ASGI app. Returns status, headers, body and the body bytes it consumed."""
    hdrs = {"host": HOST, **(headers or {})}
    if chunks is None:
        hdrs.setdefault("content-length", str(len(body)))
        pieces = iter([body])
    else:
        hdrs["transfer-encoding"] = "chunked"
        pieces = chunks
    consumed = 0
    out: dict[str, Any] = {"status": 0, "headers": {}, "body": b""}

    async def one() -> None:
        nonlocal consumed

        finished = asyncio.Event()
        body_done = False

        async def receive() -> dict[str, Any]:
            nonlocal consumed, body_done
            if body_done:
                await finished.wait()  # like a client that stays until the answer is complete
                return {"type": "http.disconnect"}
            piece = next(pieces, None)
            if piece is None:
                body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            consumed += len(piece)
            return {"type": "http.request", "body": piece, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
                out["headers"] = {k.decode(): v.decode() for k, v in message.get("headers", [])}
            elif message["type"] == "http.response.body":
                out["body"] += message.get("body", b"")
                if not message.get("more_body"):
                    finished.set()

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": query.encode(), "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()],
                 "client": client, "server": ("127.0.0.1", 8081), "state": {}}
        await app(scope, receive, send)

    run(one())
    return out["status"], out["headers"], out["body"], consumed


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Any]:
    def make(backend_url: str = "http://127.0.0.1:9", **kw: Any) -> Any:
        cfg = FrontConfig(discovery_protocol="static", static_backend=backend_url, data_dir=str(tmp_path / "front"),
                          **kw)
        return build_app(cfg)

    yield make


def new_conversation(app: Any) -> str:
    status, _, body, _ = call(app, "POST", "/api/conversations", headers={"content-type": "application/json"},
                              body=b"{}")
    assert status == 201, body
    return json.loads(body)["id"]


# -- finding 6: trusted hosts, cross-site writes, headers -------------------------------


def test_dns_rebinding_host_is_refused(make_app: Any) -> None:
    app = make_app()
    status, _, body, _ = call(app, "GET", "/api/conversations", headers={"host": "evil.example"})
    assert status == 400 and b"untrusted_host" in body
    assert call(app, "GET", "/api/conversations")[0] == 200
    assert call(app, "GET", "/api/conversations", headers={"host": "localhost:8081"})[0] == 200


def test_configured_host_name_is_accepted(make_app: Any) -> None:
    app = make_app(trusted_hosts=["chat.office.lan"])
    assert call(app, "GET", "/health", headers={"host": "chat.office.lan:8081"})[0] == 200


def test_text_plain_and_form_posts_are_refused(make_app: Any) -> None:
    app = make_app()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, _, _, _ = call(app, "POST", "/api/conversations", headers={"content-type": ctype},
                               body=b'{"mode": "code"}')
        assert status == 415, ctype
    cid = new_conversation(app)
    status, _, _, _ = call(app, "PUT", "/api/modes/service", headers={"content-type": "text/plain"},
                           body=b'{"prompt": "leak everything"}')
    assert status == 415
    status, _, _, _ = call(app, "PATCH", f"/api/conversations/{cid}", headers={"content-type": "text/plain"},
                           body=b'{"title": "x"}')
    assert status == 415


def test_cross_origin_writes_are_refused(make_app: Any) -> None:
    app = make_app()
    h = {"content-type": "application/json", "origin": "http://evil.example"}
    assert call(app, "POST", "/api/conversations", headers=h, body=b"{}")[0] == 403
    cid = new_conversation(app)
    # Even a body-less POST (stop) from another origin.
    assert call(app, "POST", f"/api/conversations/{cid}/stop", headers={"origin": "http://evil.example"})[0] == 403
    same = {"content-type": "application/json", "origin": f"http://{HOST}"}
    assert call(app, "POST", "/api/conversations", headers=same, body=b"{}")[0] == 201


def test_security_headers(make_app: Any) -> None:
    status, headers, _, _ = call(make_app(), "GET", "/")
    assert status == 200
    csp = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"


# -- finding 5: uploads ----------------------------------------------------------------


def upload(app: Any, cid: str, name: str, data: bytes | None = None,
           chunks: Iterator[bytes] | None = None) -> tuple[int, bytes, int]:
    status, _, body, consumed = call(app, "POST", f"/api/conversations/{cid}/documents",
                                     headers={"x-filename": name, "content-type": "application/octet-stream"},
                                     body=data or b"", chunks=chunks)
    return status, body, consumed


def test_oversized_upload_is_refused_while_streaming(make_app: Any) -> None:
    app = make_app()
    cid = new_conversation(app)
    mb = b"x" * (1024 * 1024)
    status, body, consumed = upload(app, cid, "big.txt", chunks=iter([mb] * 100))  # 100 MB, no Content-Length
    assert status == 413, body
    assert consumed <= documents.MAX_BYTES + len(mb)  # stopped at the cap, not after reading 100 MB


def paragraphs(n: int, chars: int = 1000) -> str:
    """Raw WordprocessingML: ``n`` paragraphs of ``chars`` characters (replaces one <w:t> of the template)."""
    return ("a" * chars + "</w:t></w:r></w:p><w:p><w:r><w:t>") * n


def docx_bytes(text: str) -> bytes:
    import docx

    d = docx.Document()
    d.add_paragraph("PLACEHOLDER")
    buf = io.BytesIO()
    d.save(buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "word/document.xml":
                data = data.replace(b"PLACEHOLDER", text.encode())
            z.writestr(item, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return out.getvalue()


def test_docx_zip_bomb_is_refused(make_app: Any) -> None:
    app = make_app()
    cid = new_conversation(app)
    bomb = docx_bytes(paragraphs(80_000))  # ~80 MB of XML text in well under 1 MB
    assert len(bomb) < 1_000_000
    status, body, _ = upload(app, cid, "bomb.docx", bomb)
    assert status == 413 and b"unpacks to" in body, body[:200]
    # The reported one: ~50 KiB that inflates to 20 M characters, under the unzip cap: the text cap stops it.
    bomb = docx_bytes(paragraphs(20_000))
    assert len(bomb) < 100_000
    status, body, _ = upload(app, cid, "bomb2.docx", bomb)
    assert status == 413 and b"characters of text" in body, body[:200]
    assert app.state.frontend.store.documents(cid) == []


def test_extracted_text_is_capped(make_app: Any) -> None:
    app = make_app()
    cid = new_conversation(app)
    status, body, _ = upload(app, cid, "long.txt", b"word " * (documents.MAX_TEXT_CHARS // 5 + 1000))
    assert status == 413 and b"characters of text" in body, body[:200]
    ok = docx_bytes("Holiday policy: 20 days.")
    assert upload(app, cid, "ok.docx", ok)[0] == 201


def test_chunking_runs_off_the_event_loop(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    real = documents.chunk

    def spy(text: str, *a: Any, **kw: Any) -> list[str]:
        try:
            asyncio.get_running_loop()
            calls.append(True)  # on the event loop: every other request waits for it
        except RuntimeError:
            calls.append(False)
        return real(text, *a, **kw)

    monkeypatch.setattr(documents, "chunk", spy)
    app = make_app()
    cid = new_conversation(app)
    assert upload(app, cid, "one-line.txt", b"x" * 200_000)[0] == 201
    assert calls == [False]


def test_chunk_cuts_a_sentence_without_end_into_overlapping_pieces() -> None:
    text = "".join(chr(0x4E00 + i % 500) for i in range(100_000))  # no sentence end anywhere
    pieces = documents.chunk(text, size=300, overlap=60)
    assert all(len(p) <= 300 for p in pieces)
    assert pieces[0] == text[:300] and pieces[1] == text[240:540]
    assert "".join(p[:240] for p in pieces[:-1]) + pieces[-1] == text


def test_document_and_chunks_are_one_transaction(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    fe = app.state.frontend
    cid = new_conversation(app)
    done = {"n": 0}

    def failing(text: str) -> str:
        done["n"] += 1
        if done["n"] > 3:
            raise RuntimeError("disk full while indexing")
        return text

    monkeypatch.setattr(fe.index.seg, "index_text", failing)
    with pytest.raises(RuntimeError):
        upload(app, cid, "policy.txt", (("Paragraph about leave. " * 20 + "\n\n") * 10).encode())
    assert fe.store.documents(cid) == []  # no document row without its chunks


# -- finding 8: the local /v1 endpoint ---------------------------------------------------


@pytest.fixture
def rogue_backend() -> Iterator[Rogue]:
    r = Rogue().start()
    yield r
    r.stop()


def test_v1_path_traversal_does_not_reach_other_routes(make_app: Any, rogue_backend: Rogue) -> None:
    app = make_app(rogue_backend.base_url)
    for path in ("/v1/../metrics", "/v1/%2e%2e/metrics", "/v1/models/../../metrics", "/v1/admin"):
        status, _, _, _ = call(app, "GET", path)
        assert status == 404, path
    assert rogue_backend.seen == []
    assert call(app, "GET", "/v1/models")[0] == 200
    assert [s["path"] for s in rogue_backend.seen] == ["/v1/models"]


def test_box_key_only_for_trusted_callers(make_app: Any, rogue_backend: Rogue) -> None:
    url = rogue_backend.base_url
    app = make_app(url, api_key="BOX-KEY", local_api_keys=["LOCAL-KEY"])
    call(app, "GET", "/v1/models", client=LAN_CLIENT)
    call(app, "GET", "/v1/models", client=LAN_CLIENT, headers={"authorization": "Bearer wrong"})
    assert all("BOX-KEY" not in json.dumps(s["headers"]) for s in rogue_backend.seen)
    call(app, "GET", "/v1/models", client=LAN_CLIENT, headers={"authorization": "Bearer LOCAL-KEY"})
    call(app, "GET", "/v1/models", client=LOCAL_CLIENT)
    last = [s["headers"].get("authorization") for s in rogue_backend.seen[-2:]]
    assert last == ["Bearer BOX-KEY", "Bearer BOX-KEY"]  # the local key itself never travels on
    assert "LOCAL-KEY" not in json.dumps(rogue_backend.seen)


def test_v1_text_plain_post_is_refused(make_app: Any, rogue_backend: Rogue) -> None:
    app = make_app(rogue_backend.base_url, api_key="BOX-KEY")
    status, _, _, _ = call(app, "POST", "/v1/chat/completions", headers={"content-type": "text/plain"},
                           body=b'{"model": "m", "messages": [{"role": "user", "content": "spend tokens"}]}')
    assert status == 415 and rogue_backend.seen == []


def test_json_and_v1_bodies_are_capped_while_streaming(make_app: Any, rogue_backend: Rogue) -> None:
    """A LAN host posting a huge JSON body (chunked, no Content-Length) is refused at the front end's cap,
    never buffered whole or forwarded; before the front end had a cap, both were read to the end."""
    app = make_app(rogue_backend.base_url, max_body_bytes=64 * 1024)
    mb = b" " * (1024 * 1024)
    for path in ("/api/conversations", "/v1/chat/completions"):
        status, headers, body, consumed = call(app, "POST", path, headers={"content-type": "application/json"},
                                               chunks=iter([b'{"x": "', *[mb] * 50, b'"}']))  # 50 MB
        assert status == 413, (path, body[:200])
        assert b"frontend.max_body_bytes" in body
        assert consumed <= 64 * 1024 + len(mb) + 16  # stopped at the cap
        assert headers.get("x-content-type-options") == "nosniff"  # the guard's headers on the refusal too
    assert rogue_backend.seen == []
    # Bodies under the cap pass as before.
    status, _, body, _ = call(app, "POST", "/api/conversations", headers={"content-type": "application/json"},
                              body=b'{"title": "' + b"t" * 1000 + b'"}')
    assert status == 201, body


def test_a_half_sent_request_head_is_closed(start_front: Any, stub_backend: StubBackend,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Slow loris: a LAN host that opens connections and never finishes a request head is cut off, as by
    a server (web/limits.py); before, the front end held such a connection open forever."""
    import socket
    from urllib.parse import urlsplit

    monkeypatch.setenv("CLAWLAN_FRONTEND_HEADER_TIMEOUT_MS", "300")
    fp = start_front(stub_backend.base_url)
    u = urlsplit(fp.url)
    with socket.create_connection((u.hostname, u.port)) as c:
        c.settimeout(30)
        c.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert c.recv(100) == b""  # closed with no answer: no request was ever formed
    assert httpx.get(fp.url + "api/status", timeout=10).status_code == 200  # others unaffected


# -- low items ----------------------------------------------------------------------------


def test_admin_token_keeps_the_box_admin_and_checks_others(make_app: Any) -> None:
    app = make_app(admin_token="s3cret")
    body = json.dumps({"prompt": "Be brief."}).encode()
    h = {"content-type": "application/json"}
    assert call(app, "PUT", "/api/modes/code", headers=h, body=body)[0] == 200  # at the box: still admin
    assert call(app, "PUT", "/api/modes/code", headers=h, body=body, client=LAN_CLIENT)[0] == 403
    bad = {**h, "x-admin-token": "s3cre"}
    assert call(app, "PUT", "/api/modes/code", headers=bad, body=body, client=LAN_CLIENT)[0] == 403
    good = {**h, "x-admin-token": "s3cret"}
    assert call(app, "PUT", "/api/modes/code", headers=good, body=body, client=LAN_CLIENT)[0] == 200


def test_config_show_masks_the_admin_token(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from clawlan.cli import main

    monkeypatch.setenv("CLAWLAN_FRONTEND_ADMIN_TOKEN", "hunter2-admin")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "hunter2-admin" not in out and "frontend.admin_token" in out


def test_sqlite_files_are_private(make_app: Any, tmp_path: Path) -> None:
    app = make_app()
    new_conversation(app)
    db = tmp_path / "front" / "clawlan-front.sqlite3"
    for f in (db, Path(str(db) + "-wal")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE((tmp_path / "front").stat().st_mode) == 0o700


def test_two_sends_in_one_conversation_cannot_race(make_app: Any, stub_backend: StubBackend,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(stub_backend.base_url)
    fe = app.state.frontend
    cid = new_conversation(app)
    entered = threading.Semaphore(0)
    release = threading.Event()
    real = fe.retrieve

    def slow_retrieve(conv: Any, question: str) -> Any:
        entered.release()
        release.wait(30)  # the first send sits in retrieval (a thread) while the second arrives
        return real(conv, question)

    monkeypatch.setattr(fe, "retrieve", slow_retrieve)
    statuses: list[int] = []

    async def both() -> None:
        transport = httpx.ASGITransport(app=app, client=LOCAL_CLIENT)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as c:
            async def send(text: str) -> None:
                r = await c.post(f"/api/conversations/{cid}/messages", json={"content": text}, timeout=30)
                statuses.append(r.status_code)

            first = asyncio.create_task(send("one"))
            await asyncio.to_thread(entered.acquire, True, 10)
            second = asyncio.create_task(send("two"))
            # Either the second is refused at once, or (the race) it also reaches retrieval.
            await asyncio.to_thread(lambda: wait_until(lambda: statuses or entered.acquire(False), 10, "second"))
            release.set()
            await asyncio.gather(first, second)

    run(both())
    assert sorted(statuses) == [200, 400]
    users = [m for m in fe.store.messages(cid) if m["role"] == "user"]
    assert [m["content"] for m in users] == ["one"]


def test_regenerate_keeps_the_old_answer_until_a_new_one_exists(make_app: Any, stub_backend: StubBackend) -> None:
    app = make_app(stub_backend.base_url)
    fe = app.state.frontend
    cid = new_conversation(app)
    h = {"content-type": "application/json"}
    assert call(app, "POST", f"/api/conversations/{cid}/messages", headers=h, body=b'{"content": "hi"}')[0] == 200
    old = [m for m in fe.store.messages(cid) if m["role"] == "assistant"]
    assert old and old[0]["content"].startswith("Hello")
    stub_backend.stop()  # the back end goes away: regenerating cannot produce anything
    status, _, body, _ = call(app, "POST", f"/api/conversations/{cid}/messages", headers=h,
                              body=b'{"regenerate": true}')
    assert status == 200 and b'"type": "error"' in body
    after = [m for m in fe.store.messages(cid) if m["role"] == "assistant"]
    assert [m["content"] for m in after] == [old[0]["content"]]


def test_regenerate_replaces_the_old_answer_once_the_new_one_is_stored(make_app: Any,
                                                                       stub_backend: StubBackend) -> None:
    app = make_app(stub_backend.base_url)
    fe = app.state.frontend
    cid = new_conversation(app)
    h = {"content-type": "application/json"}
    call(app, "POST", f"/api/conversations/{cid}/messages", headers=h, body=b'{"content": "hi"}')
    stub_backend.reply = "A second answer."
    call(app, "POST", f"/api/conversations/{cid}/messages", headers=h, body=b'{"regenerate": true}')
    msgs = fe.store.messages(cid)
    assert [(m["role"], m["content"]) for m in msgs] == [("user", "hi"), ("assistant", "A second answer.")]
    # The regenerated request did not carry the old answer as history.
    assert [m["role"] for m in stub_backend.requests[-1]["messages"]] == ["system", "user"]


def test_sse_line_buffer_is_capped() -> None:
    async def endless() -> AsyncIterator[bytes]:
        for _ in range(1024):  # 64 MB with no line end
            yield b"x" * 65536

    async def read() -> None:
        async for _ in sse_events(endless()):
            pass

    with pytest.raises(UpstreamError):
        run(read())


def test_run_passes_the_api_key_to_its_front_end(monkeypatch: pytest.MonkeyPatch) -> None:
    import clawlan.frontend.command as front_cmd
    import clawlan.model.store as model_store
    import clawlan.server.backend as server_backend
    import clawlan.server.serving as serving
    from clawlan.cli import main

    got: dict[str, Any] = {}

    class FakeServer:
        base_url = "http://127.0.0.1:8080"
        identity = None

        def __init__(self, *a: Any, **kw: Any) -> None:
            pass

        def run(self) -> None:
            pass

    class FakeFront:
        url = "http://127.0.0.1:8081/"

        def stop(self) -> None:
            pass

    def fake_launch(*a: Any, **kw: Any) -> FakeFront:
        got.update(kw)
        return FakeFront()

    monkeypatch.setattr(front_cmd, "launch", fake_launch)
    monkeypatch.setattr(serving, "RunningServer", FakeServer)
    monkeypatch.setattr(server_backend, "Backend", lambda *a, **kw: None)
    monkeypatch.setattr(model_store, "resolve", lambda *a, **kw: type("I", (), {"path": Path("m.gguf")})())
    before = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["run", "--api-key", "K-123"]) == 0
    finally:
        signal.signal(signal.SIGTERM, before)
    assert got.get("api_key") == "K-123"
