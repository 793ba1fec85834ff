"""Fixtures for the front-end tests: a stub back end, a front-end process, a headless Chromium.

The stub back end speaks just enough of the OpenAI API (``/v1/models``,
streamed ``/v1/chat/completions``, ``/health``) to control what "the model"
says and when; tests that need a real model use the ``backend`` fixture of
tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from clawlan.frontend.command import FrontProcess, launch

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``cond`` until truthy or the deadline passes (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class StubBackend:
    """A tiny OpenAI-compatible SSE server whose answers the test scripts."""

    def __init__(self) -> None:
        self.reply = "Hello from the **stub**."
        self.token_delay = 0.0
        self.gate: threading.Event | None = None  # when set, streams wait for it before the last token
        self.gate_word: str | None = None  # if set, only requests whose last message contains it wait at the gate
        self.die_after: int | None = None  # drop the connection after this many tokens (a crashed server)
        self.requests: list[dict[str, Any]] = []
        self.active = 0
        self.max_active = 0
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.port = 0

    def app(self) -> Starlette:
        async def models(request: Request) -> JSONResponse:
            return JSONResponse({"object": "list", "data": [{"id": "stub-model", "object": "model"}]})

        async def health(request: Request) -> JSONResponse:
            return JSONResponse({"status": "ok"})

        async def chat(request: Request) -> StreamingResponse | JSONResponse:
            body = await request.json()
            self.requests.append(body)
            words = [w for w in self.reply.split(" ")]
            tokens = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
            if not body.get("stream"):
                return JSONResponse({"id": "x", "object": "chat.completion", "model": "stub-model",
                                     "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply},
                                                  "finish_reason": "stop"}]})

            last = str((body.get("messages") or [{}])[-1].get("content", ""))
            gated = self.gate is not None and (self.gate_word is None or self.gate_word in last)

            async def gen():  # noqa: ANN202
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                try:
                    yield self._chunk({"role": "assistant", "content": ""})
                    for i, tok in enumerate(tokens):
                        if i == len(tokens) - 1 and gated:
                            while not self.gate.is_set():
                                await asyncio.sleep(0.01)
                        if self.token_delay:
                            await asyncio.sleep(self.token_delay)
                        if self.die_after is not None and i >= self.die_after:
                            raise ConnectionAbortedError("stub back end dies mid-answer")
                        yield self._chunk({"content": tok})
                    yield self._chunk({}, finish="stop")
                    yield b"data: [DONE]\n\n"
                finally:
                    self.active -= 1

            return StreamingResponse(gen(), media_type="text/event-stream")

        return Starlette(routes=[
            Route("/v1/models", models), Route("/health", health),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ])

    @staticmethod
    def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        ev = {"id": "c1", "object": "chat.completion.chunk", "model": "stub-model",
              "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(ev)}\n\n".encode()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None) -> StubBackend:
        self.port = port or free_port()
        cfg = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, what="stub back end start")
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            if self.gate is not None:
                self.gate.set()
            assert self.thread is not None
            self.thread.join(10)
            self.server = None


@pytest.fixture
def stub_backend() -> Iterator[StubBackend]:
    stub = StubBackend().start()
    yield stub
    stub.stop()


@pytest.fixture
def start_front(tmp_path: Path) -> Iterator[Any]:
    """Factory: start ``clawlan front`` as its own process; all are stopped at teardown."""
    started: list[FrontProcess] = []

    def start(backend_url: str, *extra: str, data_dir: Path | None = None) -> FrontProcess:
        port = free_port()
        args = ["--discovery", "static", "--data-dir", str(data_dir or tmp_path / "front"), *extra]
        fp = launch(backend=backend_url, port=port, extra_args=args)
        started.append(fp)
        return fp

    yield start
    for fp in started:
        fp.stop()


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in the main
# thread while it is open, which breaks asyncio.run() and zeroconf's sync API in later modules.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make browser)")
    if shutil.which("chromium") is None:
        pytest.skip("chromium not on PATH")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(locale="en-US", viewport={"width": 1200, "height": 800})
    pg = ctx.new_page()
    yield pg
    ctx.close()
