"""The router's front (router/front.py) against a scripted upstream on loopback: real sockets, real clients.

The upstream plays vllm-router at the HTTP level, including the failure the
front exists for: a chunked SSE body that stops mid-event because the node
behind it died. Cheap and deterministic; the same failure with real nodes and
real vllm-router is tests/router/test_cluster.py's failover test.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from tests.router.conftest import members, needs_router, wait_for

from clawlan.discovery.trust import fetch_certificate, fingerprint_of_der
from clawlan.errors import ConfigError
from clawlan.router.front import Front, FrontServer
from clawlan.web.identity import ensure_identity
from clawlan.web.listen import bind as listen

LOOPBACK = "127.0.0.1"


def event(text: str) -> bytes:
    return b"data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": text}, "finish_reason": None}]}).encode() + b"\n\n"


class Upstream:
    """A vllm-router stand-in that records requests; ``/v1/chat/completions`` streams as ``mode`` says."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.gate = threading.Event()  # the test opens it once the first event has reached the client
        self.ready_status = 200
        self.held_closed = threading.Event()  # /v1/hold saw its caller (the front) close the connection
        up = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _record(self) -> bytes:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                up.seen.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                "body": body})
                return body

            def _send(self, code: int, body: bytes, ctype: str = "application/json", **extra: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra.items():
                    self.send_header(k.replace("_", "-"), v)
                self.end_headers()
                self.wfile.write(body)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._record()
                if self.path == "/readiness":
                    if up.ready_status == 200:
                        self._send(200, b'{"status":"ready","healthy_workers":2}')
                    else:
                        self._send(503, b'{"status":"not_ready","reason":"no healthy workers available"}')
                else:
                    self._send(200, b'{"object":"list","data":[{"id":"m","object":"model"}]}')

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self._record() or b"{}")
                if self.path.startswith("/v1/hold"):  # a long generation: answers only when the caller leaves
                    self.connection.settimeout(30)
                    if self.connection.recv(1) == b"":
                        up.held_closed.set()
                    return
                if self.path.startswith("/v1/refuse"):
                    self._send(503, b"No available workers (all circuits open or unhealthy)", "text/plain", retry_after="1")
                    return
                if self.path.startswith("/v1/halfjson"):  # a non-stream answer that breaks off
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "500")
                    self.end_headers()
                    self.wfile.write(b'{"choices": [{"mess')
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if not body.get("stream"):
                    self._send(200, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                                             "finish_reason": "stop"}]}).encode(), x_request_id="r-1")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self._chunk(event("Hel"))
                up.gate.wait(30)
                if body.get("whole"):
                    self._chunk(event("lo"))
                    self._chunk(b"data: [DONE]\n\n")
                    self._chunk(b"")
                    return
                # The node died: half an event, then the connection ends without the terminating chunk.
                self._chunk(event("lo")[:20])
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.close()


@pytest.fixture
def make_front() -> Iterator[Callable[..., FrontServer]]:
    made: list[FrontServer] = []

    def make(target: str, identity: Any = None, header_timeout_s: float = 10.0, **kw: Any) -> FrontServer:
        s = FrontServer(Front(target, **kw), listen(LOOPBACK, 0), identity, header_timeout_s=header_timeout_s).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def url_of(s: FrontServer) -> str:
    return f"{'https' if s.identity else 'http'}://{LOOPBACK}:{s.sock.getsockname()[1]}"


def test_a_stream_cut_mid_event_ends_with_an_error_event_and_openai_raises_apierror(upstream: Upstream, make_front) -> None:
    front = make_front(upstream.url)
    client = openai.OpenAI(base_url=url_of(front) + "/v1", api_key="office-key", max_retries=0, timeout=30)
    text = ""
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            # Live, not buffered: the first event is here while the upstream still holds the rest back.
            upstream.gate.set()
    assert not isinstance(err.value, openai.APIConnectionError), repr(err.value)
    assert err.value.body["code"] == "upstream_stream_lost" and "stopped mid-answer" in err.value.message
    assert text == "Hel"  # what came before the cut is kept; the half event is not passed on as broken JSON
    assert upstream.seen[-1]["headers"]["authorization"] == "Bearer office-key"


def test_a_whole_stream_passes_unchanged_to_done(upstream: Upstream, make_front) -> None:
    front = make_front(upstream.url)
    upstream.gate.set()
    with httpx.stream("POST", url_of(front) + "/v1/chat/completions", json={"stream": True, "whole": True}) as r:
        raw = b"".join(r.iter_raw())
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert raw == event("Hel") + event("lo") + b"data: [DONE]\n\n"


def test_headers_query_and_answer_pass_through_hop_by_hop_do_not(upstream: Upstream, make_front) -> None:
    front = make_front(upstream.url)
    r = httpx.post(url_of(front) + "/v1/chat/completions?trace=1", json={"model": "m"},
                   headers={"Authorization": "Bearer k", "X-Office": "floor2", "Connection": "keep-alive, X-Hop", "X-Hop": "1",
                            "TE": "trailers", "Keep-Alive": "timeout=5"})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
    assert r.headers["x-request-id"] == "r-1"
    seen = upstream.seen[-1]["headers"]
    assert upstream.seen[-1]["path"] == "/v1/chat/completions?trace=1"
    assert seen["authorization"] == "Bearer k" and seen["x-office"] == "floor2"
    assert "te" not in seen and "keep-alive" not in seen and "x-hop" not in seen and seen.get("connection", "keep-alive") == "keep-alive"
    assert json.loads(upstream.seen[-1]["body"]) == {"model": "m"}


def test_upstream_failures_are_openai_json_errors(upstream: Upstream, make_front) -> None:
    dead = socket.socket()
    dead.bind((LOOPBACK, 0))
    gone = f"http://{LOOPBACK}:{dead.getsockname()[1]}"
    dead.close()  # nothing listens there: vllm-router has died
    client = openai.OpenAI(base_url=url_of(make_front(gone)) + "/v1", api_key="k", max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 502 and err.value.body["code"] == "router_unavailable"

    front = make_front(upstream.url)
    r = httpx.post(url_of(front) + "/v1/refuse", json={})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["message"].startswith("No available workers")
    r = httpx.post(url_of(front) + "/v1/halfjson", json={})
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_lost"


def test_bodies_over_the_cap_get_413_and_never_reach_the_router(upstream: Upstream, make_front) -> None:
    front = make_front(upstream.url, max_body_bytes=4096)
    r = httpx.post(url_of(front) + "/v1/chat/completions", content=b"x" * 5000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b"y" * 1000

    r = httpx.post(url_of(front) + "/v1/chat/completions", content=chunked())
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]["message"]
    assert upstream.seen == []


def test_a_connection_that_never_finishes_its_request_head_is_closed(upstream: Upstream, make_front) -> None:
    """Slow loris: the router's front closes a connection that holds a half-sent head (as a server does)."""
    front = make_front(upstream.url, header_timeout_s=0.3)
    with socket.create_connection((LOOPBACK, front.sock.getsockname()[1])) as c:
        c.settimeout(30)
        c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        assert c.recv(100) == b""  # closed, no request formed; without the deadline this waits for 30 s and fails
    assert upstream.seen == []
    # A well-behaved client is unaffected, on a kept-alive connection too.
    with httpx.Client(timeout=10) as h:
        for _ in range(2):
            assert h.get(url_of(front) + "/liveness").status_code == 200


def test_a_body_that_does_not_arrive_in_time_gets_408(upstream: Upstream, make_front) -> None:
    front = make_front(upstream.url, body_timeout_s=0.5)
    with socket.create_connection((LOOPBACK, front.sock.getsockname()[1])) as c:
        c.settimeout(30)
        c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\"")
        head = b""
        while not head.endswith(b"}}"):  # the rest of the body never comes; the answer does
            more = c.recv(65536)
            if not more:
                break
            head += more
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    assert b"request_timeout" in head
    assert upstream.seen == []


def test_worker_management_is_not_open_through_the_front(upstream: Upstream, make_front) -> None:
    front = make_front(upstream.url)
    for path in ("/add_worker?url=http://10.6.6.6:8080", "/remove_worker?url=x", "/flush_cache",
                 "/v1/../add_worker?url=x", "/v1/%2e%2e/add_worker?url=x"):
        r = httpx.post(url_of(front) + path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (path, r.text)
    assert upstream.seen == []
    assert httpx.get(url_of(front) + "/v1/models").json()["data"][0]["id"] == "m"


def test_health_is_ok_only_with_a_worker_in_the_pool(upstream: Upstream, make_front) -> None:
    front = make_front(upstream.url)
    r = httpx.get(url_of(front) + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    upstream.ready_status = 503
    r = httpx.get(url_of(front) + "/health")
    # The shape the front end reads as "loading": it waits, visibly, for nodes to join.
    assert r.status_code == 503 and r.json()["status"] == "loading" and r.json()["error"]["code"] == "no_workers"


def test_on_tls_it_presents_its_own_identity(upstream: Upstream, make_front, tmp_path: Path) -> None:
    ident = ensure_identity(tmp_path / "router", kind="router")
    front = make_front(upstream.url, ident)
    port = front.sock.getsockname()[1]
    assert fingerprint_of_der(fetch_certificate(LOOPBACK, port)) == ident.fingerprint
    from cryptography import x509

    assert "clawlan router" in x509.load_pem_x509_certificate(ident.cert.read_bytes()).subject.rfc4514_string()
    r = httpx.get(url_of(front) + "/v1/models", verify=False)
    assert r.status_code == 200


def test_a_taken_port_is_a_one_line_error() -> None:
    s = listen(LOOPBACK, 0)
    try:
        with pytest.raises(ConfigError, match="already in use"):
            listen(LOOPBACK, s.getsockname()[1])
    finally:
        s.close()


def test_the_chat_page_says_what_happened_and_keeps_the_text(upstream: Upstream, make_front, tmp_path: Path) -> None:
    """A real front end (its chat API, as the page uses it) given the router by URL: the cut answer ends
    in an error naming the cause, and the text that arrived is kept in the conversation."""
    from clawlan.frontend.command import launch
    from clawlan.router.process import free_port

    front = make_front(upstream.url)
    fe = launch(backend=url_of(front), port=free_port(),
                extra_args=["--data-dir", str(tmp_path / "front"), "--discovery", "static"])
    try:
        cid = httpx.post(fe.url + "api/conversations", json={}, timeout=10).json()["id"]
        events = []
        with httpx.stream("POST", fe.url + f"api/conversations/{cid}/messages", json={"content": "hi"}, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if events[-1]["type"] == "delta":
                        upstream.gate.set()  # the page has the first words: now the node dies
        last = events[-1]
        assert last["type"] == "error" and last["content"] == "Hel", last
        assert "stopped mid-answer" in last["error"] and "kept" in last["error"], last
        stored = httpx.get(fe.url + f"api/conversations/{cid}", timeout=10).json()
        assert stored["messages"][-1]["content"] == "Hel", stored["messages"][-1]
    finally:
        fe.stop()


def test_a_caller_that_leaves_drops_its_request_upstream(upstream: Upstream, make_front) -> None:
    """A non-stream answer is pending for as long as it generates; when its caller gives up, the router's
    request goes too, so the node is not left generating for nobody."""
    front = make_front(upstream.url)
    body = b'{"model": "m"}'
    with socket.create_connection((LOOPBACK, front.sock.getsockname()[1])) as c:
        c.sendall(b"POST /v1/hold HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: any(r["path"] == "/v1/hold" for r in upstream.seen), 30, "the request upstream")
    # The caller's socket is closed here.
    assert upstream.held_closed.wait(20), "the front kept the upstream request open after its caller left"


class RecordingWorker:
    """A model-server stand-in behind real vllm-router: healthy, answers chats, records their headers."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        worker = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._send(b'{"status":"ok"}' if self.path == "/health" else b'{"load":0}')

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                worker.seen.append({k.lower(): v for k, v in self.headers.items()})
                self._send(json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                                    "finish_reason": "stop"}]}).encode())

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@needs_router
def test_the_key_reaches_the_node_through_the_front_and_real_vllm_router(make_router, tmp_path: Path) -> None:
    w = RecordingWorker()
    try:
        router = make_router("--no-discover", "--worker", w.url, "--tls", "--state-dir", str(tmp_path / "id"))
        wait_for(lambda: members(router) == {w.url}, 30, "the worker in the pool")
        ca = ssl.create_default_context(cafile=str(router.identity.cert))  # its own certificate as the CA
        client = openai.OpenAI(base_url=router.url + "/v1", api_key="office-key", max_retries=0, timeout=30,
                               http_client=httpx.Client(verify=ca))
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"X-Office": "floor2"})
        assert r.choices[0].message.content == "ok"
        assert w.seen[-1]["authorization"] == "Bearer office-key" and w.seen[-1]["x-office"] == "floor2"
        # The worker-management API is on vllm-router's loopback port only.
        assert httpx.post(router.url + "/add_worker", params={"url": "http://10.6.6.6:8080"},
                          verify=ca).status_code == 404
        assert members(router) == {w.url}
    finally:
        w.close()
