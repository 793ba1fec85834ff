"""The front end's footprint: RSS after start and after 20 exchanges (<= 150 MB), idle CPU (<= 2%).

Runs the real ``clawlan front`` process against the real back end, with the
customer-service library loaded (so the segmenter and the parsers are in
memory) and every exchange doing a retrieval. The figures are printed for
docs/frontend.md (run with ``-s``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tests.frontend.conftest import wait_until

DOCS = Path(__file__).with_name("data") / "library"
RSS_LIMIT_MB = 150


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6


@pytest.mark.slow
def test_rss_and_idle_cpu(backend: Any, start_front: Any) -> None:
    fp = start_front(backend.base_url, "--docs-dir", str(DOCS), "--max-tokens", "16",
                     "--request-defaults", '{"temperature": 0}')
    pid = fp.process.pid
    wait_until(lambda: httpx.get(fp.url + "api/status").json()["library"]["files"] == 8, timeout=60,
               what="library indexed")
    httpx.get(fp.url)  # the page and its assets once, as a browser would
    for asset in ("app.js", "app.css", "i18n.js", "vendor/highlightjs/highlight.min.js"):
        httpx.get(fp.url + "static/" + asset)
    after_start = rss_mb(pid)

    c = httpx.post(fp.url + "api/conversations", json={"mode": "service"}).json()
    questions = json.loads((Path(__file__).with_name("data") / "retrieval_questions.json").read_text("utf-8"))
    for q in [x["q"] for x in questions["questions"]][:20]:
        with httpx.stream("POST", fp.url + f"api/conversations/{c['id']}/messages", json={"content": q},
                          timeout=120) as r:
            events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
        assert events[-1]["type"] == "done", events[-1]
    after_20 = rss_mb(pid)

    proc = psutil.Process(pid)
    proc.cpu_percent(None)
    # cpu_percent(interval) blocks for the measuring window: this is the measurement, not a synchronisation.
    idle_cpu = proc.cpu_percent(interval=5.0)
    print(f"\nfront-end RSS after start {after_start:.1f} MB, after 20 exchanges {after_20:.1f} MB, "
          f"idle CPU {idle_cpu:.2f}% (5 s)")
    assert after_start <= RSS_LIMIT_MB
    assert after_20 <= RSS_LIMIT_MB
    assert idle_cpu <= 2.0
