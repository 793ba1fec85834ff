"""Keep-alive latency: a new connection per request against one reused connection, on loopback.

    python bench/keepalive.py              # the server as it is (TCP_NODELAY on accepted sockets)
    python bench/keepalive.py --compare    # also with the old listening socket (protocol 0: no TCP_NODELAY)

Two measurements on a real clawlan server on the embedded model:
``GET /v1/models`` (no model work: the serving layer alone) and a streamed chat
turn's time to first token (TTFT), each on a fresh connection per request and on
one keep-alive connection. Before the fix a reused connection waited ~40 ms per
response (Nagle's algorithm holding the body until the peer's delayed ACK).
Medians and 90th percentiles in ms; on a shared machine read them as rough.

One run, 2026-12-04, the shared 2-core build machine (busy; -n 100 --turns 10 --compare):

    case                              now (TCP_NODELAY)    before (protocol 0)
    /v1/models, new connection        0.61 ms              0.89 ms
    /v1/models, reused connection     0.36 ms              47.90 ms
    chat TTFT, new connection         550 ms               549 ms
    chat TTFT, reused connection      532 ms               217 ms (*)

(*) TTFT on that machine is dominated by other tenants' load (p90 0.5-2.5 s); the serving-layer
effect is the /v1/models row. Run it on a quiet box for TTFT figures worth quoting.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def old_bind(host: str, port: int) -> socket.socket:
    """The listening socket as it was: protocol 0, so asyncio never set TCP_NODELAY."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {statistics.median(xs):7.2f} ms  p90 {xs[int(len(xs) * 0.9) - 1]:7.2f} ms  (n={len(xs)})"


def timed(fn: Callable[[], float | None], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        mark = fn()
        out.append(((mark if mark is not None else time.perf_counter()) - t0) * 1000)
    return out


def ttft(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> float:
    """Time of the first content delta of a streamed chat turn (perf_counter)."""
    body = {"model": "m", "stream": True, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "Say one word."}]}
    with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r:
        first = None
        for line in r.iter_lines():
            if first is None and line.startswith("data:") and line[5:].strip() != "[DONE]":
                choices = json.loads(line[5:]).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    first = time.perf_counter()
        return first or time.perf_counter()


def measure(url: str, n: int, turns: int) -> dict[str, list[float]]:
    res: dict[str, list[float]] = {}
    # One client throughout (building an httpx client costs more than a request); "Connection: close"
    # makes each request of the "new connection" cases open its own TCP connection.
    close = {"connection": "close"}
    with httpx.Client(timeout=120) as c:
        c.get(url + "/v1/models")
        ttft(c, url)  # the first turn pays one-off costs (caches, allocation)
        res["models, new connection"] = timed(lambda: (c.get(url + "/v1/models", headers=close), None)[1], n)
        c.get(url + "/v1/models")
        res["models, reused connection"] = timed(lambda: (c.get(url + "/v1/models"), None)[1], n)
        res["chat TTFT, new connection"] = timed(lambda: ttft(c, url, close), turns)
        ttft(c, url)
        res["chat TTFT, reused connection"] = timed(lambda: ttft(c, url), turns)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="/v1/models requests per case")
    ap.add_argument("--turns", type=int, default=20, help="chat turns per case")
    ap.add_argument("--compare", action="store_true", help="also run with the old socket (no TCP_NODELAY)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from clawlan.engine.llama import Model
    from clawlan.model.store import resolve
    from clawlan.server import serving
    from clawlan.server.backend import Backend
    from conftest import make_settings

    info = resolve(None)
    model = Model(info.path)
    cases = [("TCP_NODELAY (now)", serving.bind)] + ([("protocol 0 (before)", old_bind)] if args.compare else [])
    for label, binder in cases:
        serving.bind = binder  # RunningServer calls the module's bind()
        settings = make_settings(batch_size=4)
        server = serving.RunningServer(settings, Backend(settings, model=model, info=info), port=0).start()
        try:
            print(f"\n== {label}: {server.base_url}")
            for name, xs in measure(server.base_url, args.n, args.turns).items():
                print(f"{name:32s} {stats(xs)}")
        finally:
            server.stop()
            server.backend.close()
    model.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
