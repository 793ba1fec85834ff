"""kill -9 mid-answer, of the back end and of the front end: every message shown before the kill survives.

Real processes: ``clawlan serve`` on the embedded model and ``clawlan front``,
killed with SIGKILL while an answer streams, then restarted. What the client
saw (the question, and each delta it received) must be in the conversation
afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.frontend.conftest import free_port, wait_until

from clawlan.frontend.command import launch

QUESTION = "Tell me a long story about a lighthouse keeper and her cat, in many paragraphs."


def start_backend(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "clawlan", "serve", "--port", str(port), "--ctx", "2048", "--kv-tokens", "4096",
         "--batch-size", "2", "--threads", "2"],
    )

    def ready() -> bool:
        assert proc.poll() is None, "the back end exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=120, what="back end ready")
    return proc


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    running: list[Any] = []
    yield running
    for p in running:
        proc = getattr(p, "process", p)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stream_until(url: str, cid: str, text: str, after_deltas: int, kill: Any) -> str:
    """Send ``text``; once ``after_deltas`` deltas have arrived, ``kill()``; return all answer text received."""
    shown = ""
    deltas = 0
    killed = False
    try:
        with httpx.stream("POST", url + f"api/conversations/{cid}/messages", json={"content": text},
                          timeout=120) as r:
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                ev = json.loads(line[5:])
                if ev["type"] == "delta":
                    shown += ev["text"]
                    deltas += 1
                    if deltas == after_deltas and not killed:
                        kill()
                        killed = True
                elif ev["type"] == "done":
                    pytest.fail("the answer finished before the kill; ask for a longer one")
    except httpx.HTTPError:
        pass  # the front end itself was killed: the stream breaks
    assert killed, f"only {deltas} deltas arrived"
    return shown


def test_kill_9_backend_then_frontend_mid_answer_loses_nothing_shown(procs: list[Any], tmp_path: Path) -> None:
    port = free_port()
    backend = start_backend(port)
    procs.append(backend)
    data = tmp_path / "front"
    front_args = ["--discovery", "static", "--data-dir", str(data), "--max-tokens", "200"]
    front = launch(backend=f"http://127.0.0.1:{port}", port=free_port(), extra_args=front_args)
    procs.append(front)
    cid = httpx.post(front.url + "api/conversations", json={}).json()["id"]

    # 1. The back end dies mid-answer.
    shown1 = stream_until(front.url, cid, QUESTION, 4, lambda: os.kill(backend.pid, signal.SIGKILL))
    backend.wait()
    backend = start_backend(port)
    procs.append(backend)
    msgs = httpx.get(front.url + f"api/conversations/{cid}").json()["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert msgs[0]["content"] == QUESTION
    assert shown1 and msgs[1]["content"].startswith(shown1), (shown1, msgs[1]["content"])

    # 2. The front end dies mid-answer (the back end is back).
    shown2 = stream_until(front.url, cid, "And then what happened to the cat? Tell it at length.", 4,
                          lambda: front.process.send_signal(signal.SIGKILL))
    front.process.wait()
    front = launch(backend=f"http://127.0.0.1:{port}", port=free_port(), extra_args=front_args)
    procs.append(front)
    msgs = httpx.get(front.url + f"api/conversations/{cid}").json()["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[1]["content"].startswith(shown1)
    assert msgs[2]["content"].startswith("And then what happened")
    assert shown2 and msgs[3]["content"].startswith(shown2), (shown2, msgs[3]["content"])
    assert msgs[3]["status"] == "interrupted"
