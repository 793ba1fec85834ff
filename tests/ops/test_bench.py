"""clawlan bench: metric definitions against a scripted SSE server, and one real run."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clawlan.cli import main
from clawlan.ops.bench import Bench, PromptMaker, Workload, ratios


class Scripted(BaseHTTPRequestHandler):
    """An OpenAI-style streaming server with a fixed first-token delay and token pace.

    The delays are the server's simulated work, not synchronisation: the test measures them.
    """

    protocol_version = "HTTP/1.0"  # the stream ends when the connection closes
    first_delay = 0.05
    token_delay = 0.01
    prompts: list[str]

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"data": [{"id": "scripted"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = "messages" in req
        self.prompts.append(json.dumps(req["messages"]) if chat else req["prompt"])
        n = req["max_tokens"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        time.sleep(self.first_delay)
        for i in range(n):
            if i:
                time.sleep(self.token_delay)
            piece = {"delta": {"content": f" t{i}"}} if chat else {"text": f" t{i}"}
            chunk = {"choices": [{"index": 0, **piece, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        usage = {"prompt_tokens": len(self.prompts[-1].split()), "completion_tokens": n}
        self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args: object) -> None:
        pass


def scripted(first: float, token: float) -> tuple[ThreadingHTTPServer, list[str]]:
    prompts: list[str] = []
    handler = type("H", (Scripted,), {"first_delay": first, "token_delay": token, "prompts": prompts})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, prompts


@pytest.fixture
def two_servers() -> Iterator[tuple[str, list[str], str, list[str]]]:
    a, pa = scripted(0.05, 0.01)
    b, pb = scripted(0.10, 0.02)
    yield f"http://127.0.0.1:{a.server_port}", pa, f"http://127.0.0.1:{b.server_port}", pb
    for s in (a, b):
        s.shutdown()
        s.server_close()


def test_metrics_follow_the_definitions(two_servers) -> None:
    url_a, prompts_a, url_b, prompts_b = two_servers
    w = Workload(
        input_tokens=40, output_tokens=6, requests_per_client=2, concurrency=[1, 3], switch_other_sessions=2
    )
    ticks = []
    bench = Bench(w, on_request=lambda: ticks.append(1))
    a, b = bench.run([("a", url_a), ("b", url_b)])
    assert len(ticks) == bench.total_requests(2)
    r = a.rounds[0]
    assert (r.concurrency, r.completed, r.failed, r.output_tokens) == (1, 2, 0, 12)
    # TTFT is the first-token delay; TPOT and ITL the pace of the rest. The scripted sleeps are
    # minimums (a loaded machine only adds to them), so only lower bounds are wall-clock facts;
    # the rest is checked through the definitions and through ratios between the two servers.
    assert r.ttft_ms["median"] >= 45
    assert r.tpot_ms["median"] >= 9 and r.itl_ms["median"] >= 9
    assert r.e2e_ms["median"] == pytest.approx(r.ttft_ms["median"] + 5 * r.tpot_ms["median"], rel=0.05)
    # Two requests back to back of at least 100 ms each: 12 tokens in 0.2 s or more.
    assert r.output_throughput == pytest.approx(r.output_tokens / r.duration)
    assert r.output_throughput <= 12 / 0.2 * 1.05
    assert a.rounds[1].completed == 6
    # --compare: b is scripted twice as slow, and the ratios say a is the quicker one.
    ra = ratios(a, b)
    assert ra[0]["tpot_p50"] < 0.8 and ra[0]["ttft_p50"] < 0.8
    assert ra[0]["output_throughput"] > 1.25
    assert a.switch is not None and a.switch.other_sessions == 2


def test_round_prompts_are_the_prompts_a_run_sends(two_servers) -> None:
    # bench/serve.py replays the single-stream round's prompts in process; they must be the same.
    url_a, prompts_a, url_b, prompts_b = two_servers
    w = Workload(input_tokens=30, output_tokens=2, requests_per_client=2, concurrency=[1, 2], seed=5)
    bench = Bench(w)
    bench.run([("a", url_a)], switch=False)
    rounds = bench.prompts
    assert [(c, len(p)) for c, p in rounds] == [(1, 2), (2, 4)]
    assert sorted(prompts_a[:2]) == sorted(rounds[0][1]) and sorted(prompts_a[2:]) == sorted(rounds[1][1])


def test_prompts_are_fresh_from_the_first_token(two_servers) -> None:
    url_a, prompts_a, url_b, prompts_b = two_servers
    w = Workload(input_tokens=30, output_tokens=2, requests_per_client=1, concurrency=[2, 2])
    Bench(w).run([("a", url_a), ("b", url_b)], switch=False)
    # Each round has new prompts, the two servers get the same ones, and no two share a first word.
    assert prompts_a == prompts_b or sorted(prompts_a) == sorted(prompts_b)
    firsts = [p.split()[0] for p in prompts_a]
    assert len(set(firsts)) == len(prompts_a) == 4
    pm = PromptMaker()
    many = [pm.prompt(20).split()[0] for _ in range(300)]
    assert len(set(many)) == 300


def test_chat_endpoint_and_multi_turn_switch(two_servers) -> None:
    url_a, prompts_a, _, _ = two_servers
    w = Workload(input_tokens=20, output_tokens=3, requests_per_client=1, concurrency=[1], endpoint="chat")
    (res,) = Bench(w).run([("a", url_a)])
    assert res.rounds[0].completed == 1 and res.rounds[0].output_tokens == 3
    # The follow-up turn is a real conversation: the long history, the answer, a new question.
    follow = json.loads(prompts_a[-1])
    assert [m["role"] for m in follow] == ["user", "assistant", "user"]
    assert follow[0]["content"] == json.loads(prompts_a[1])[0]["content"]  # the cold turn's history
    assert follow[1]["content"] == "".join(f" t{i}" for i in range(w.switch_output_tokens))
    assert res.switch is not None and res.switch.followup_ttft_ms > 0


def test_retries_a_connection_the_server_dropped() -> None:
    dropped: list[int] = []

    class Dropper(Scripted):
        prompts: list[str] = []
        first_delay = token_delay = 0.0

        def do_POST(self) -> None:  # noqa: N802
            if not dropped:  # the first request finds its connection closed, like a stale keep-alive
                dropped.append(1)
                self.close_connection = True
                return
            super().do_POST()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Dropper)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        w = Workload(input_tokens=10, output_tokens=2, requests_per_client=1, concurrency=[1], model="m")
        (res,) = Bench(w).run([("a", f"http://127.0.0.1:{srv.server_port}")], switch=False)
    finally:
        srv.shutdown()
        srv.server_close()
    assert dropped and res.rounds[0].completed == 1 and res.rounds[0].failed == 0


def test_error_is_reported_not_raised(tmp_path: Path, capsys) -> None:
    srv, _ = scripted(0.0, 0.0)
    url = f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()  # nothing listens there any more
    assert main(["bench", "--url", url, "--model", "m", "--concurrency", "1", "--requests-per-client", "1",
                 "--no-switch", "--quiet", "--out", str(tmp_path)]) == 1  # fmt: skip
    assert "1 failed: ConnectError" in capsys.readouterr().out


def test_bad_concurrency(capsys) -> None:
    assert main(["bench", "--concurrency", "1,x"]) == 2
    assert "--concurrency '1,x' must be comma-separated positive integers" in capsys.readouterr().err


def test_bench_real_server(backend, tmp_path: Path, capsys) -> None:
    """A small run on the real server and engine: every request completes and the files appear."""
    rc = main(["bench", "--url", backend.base_url, "--concurrency", "1,2", "--requests-per-client", "1",
               "--input-tokens", "40", "--output-tokens", "8", "--switch-history", "300", "--switch-sessions", "1",
               "--quiet", "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    doc = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    rounds = doc["servers"][0]["rounds"]
    assert [r["completed"] for r in rounds] == [1, 2]
    assert all(r["output_tokens"] == 8 * r["completed"] for r in rounds)  # ignore_eos: exactly max_tokens
    assert rounds[0]["ttft_ms"]["median"] > 0 and rounds[0]["tpot_ms"]["median"] > 0
    sw = doc["servers"][0]["switch"]
    assert sw["history_tokens"] > 200 and sw["followup_ttft_ms"] > 0
    assert next(tmp_path.glob("bench-*.png")).stat().st_size > 10_000
    assert "context switch clawlan" in out


def test_extra_body_goes_to_its_server_only() -> None:
    # bench/serve.py gives llama-cpp-python's server (no ignore_eos) a logit bias; the others must not get it.
    bodies: dict[str, list[dict]] = {"a": [], "b": []}

    def recorder(name: str) -> type[Scripted]:
        class Recorder(Scripted):
            prompts: list[str] = []
            first_delay = token_delay = 0.0

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                bodies[name].append(json.loads(raw))
                self.rfile = io.BytesIO(raw)  # let the scripted handler read the body again
                super().do_POST()

        return Recorder

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), recorder(n)) for n in ("a", "b")]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    a, b = (f"http://127.0.0.1:{s.server_port}" for s in servers)
    try:
        w = Workload(input_tokens=10, output_tokens=2, requests_per_client=2, concurrency=[1], model="m")
        Bench(w, extra_body={a + "/v1": {"logit_bias": {"1": -100}}}).run([("a", a), ("b", b)], switch=False)
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
    assert len(bodies["a"]) == 2 and all(x["logit_bias"] == {"1": -100} for x in bodies["a"])
    assert len(bodies["b"]) == 2 and not any("logit_bias" in x for x in bodies["b"])
    assert all(x["ignore_eos"] for x in bodies["a"] + bodies["b"])  # the common body is unchanged
