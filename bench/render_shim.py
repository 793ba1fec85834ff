"""A loopback shim in front of a node that answers vLLM's render route, for bench/router_cache.py.

Why: vllm-router 0.1.17's cache_aware policy matches *token ids*, not text. For
each chat request it first asks the chosen worker for the prompt's ids with
``POST /v1/chat/completions/render`` (vLLM's route; answer ``{"token_ids":
[...]}``). ``clawlan serve`` has no such route, so every decision ends as
``missing_tokens`` in the router's ``vllm_router_prefix_routing_decisions_total``
and the router chooses by load alone: no cache affinity at all.

This shim shows what the route buys before it exists in the server: it renders
the request with the node's own chat template (``clawlan.server.chat_template``)
and tokenizes it with the model's vocabulary (vocab only, no weights), as the
node does, and forwards every other request to the node unchanged. It buffers
answers, so it serves the bench's non-streamed requests only. Not for use
beyond the bench.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Renderer:
    """The node's prompt as token ids: its chat template, its vocabulary."""

    def __init__(self, model: str | None = None) -> None:
        sys.path.insert(0, str(ROOT / "src"))
        import llama_cpp

        from clawlan.model.store import resolve
        from clawlan.server.chat_template import load_template

        info = resolve(model)
        self.vocab = llama_cpp.Llama(str(info.path), vocab_only=True, verbose=False)
        meta = self.vocab.metadata
        self.template = load_template(meta.get("tokenizer.chat_template") or info.chat_template, info.architecture, "<bos>", "<eos>")
        self.bos = self.vocab.token_bos()
        self.lock = threading.Lock()  # one vocabulary, several handler threads

    def chat(self, body: dict[str, Any]) -> list[int]:
        pieces = self.template.render_segments(body.get("messages") or [], body.get("tools"))
        with self.lock:
            ids = [i for text, special in pieces for i in self.vocab.tokenize(text.encode(), add_bos=False, special=special)]
        return ids if ids[:1] == [self.bos] else [self.bos, *ids]

    def completion(self, body: dict[str, Any]) -> list[int]:
        prompt = body.get("prompt") or ""
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        with self.lock:
            return [self.bos, *self.vocab.tokenize(text.encode(), add_bos=False, special=True)]


def serve(node: str, port: int, renderer: Renderer) -> ThreadingHTTPServer:
    """Start a shim for ``node`` on 127.0.0.1:``port``; ``shutdown()`` the result to stop it."""
    client = httpx.Client(base_url=node, timeout=600)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # the bench prints its own figures
            pass

        def answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def forward(self, method: str) -> None:
            data = self.rfile.read(int(self.headers.get("content-length") or 0))
            path = self.path.split("?")[0]
            if method == "POST" and path in ("/v1/chat/completions/render", "/v1/completions/render"):
                try:
                    req = json.loads(data or b"{}")
                    ids = renderer.chat(req) if path.startswith("/v1/chat") else renderer.completion(req)
                    self.answer(200, json.dumps({"token_ids": ids}).encode(), {"content-type": "application/json"})
                except Exception as exc:  # noqa: BLE001 - a bad request gets an OpenAI-style error, the shim lives on
                    err = {"error": {"message": f"render: {exc}", "type": "invalid_request_error"}}
                    self.answer(400, json.dumps(err).encode(), {"content-type": "application/json"})
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            try:
                r = client.request(method, self.path, content=data, headers=headers)
            except httpx.HTTPError as exc:
                self.answer(502, json.dumps({"error": {"message": str(exc)}}).encode(), {"content-type": "application/json"})
                return
            self.answer(r.status_code, r.content, dict(r.headers))

        def do_GET(self) -> None:
            self.forward("GET")

        def do_POST(self) -> None:
            self.forward("POST")

    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv
