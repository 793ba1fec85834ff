"""Three real `clawlan serve --threads 1` nodes behind `clawlan router` (vllm-router) on loopback.

Order matters only for time: the session's nodes are shared, the failover and
drain tests kill one and bring it back before they end.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import signal
import threading
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from tests.router.conftest import members, needs_router, wait_for

from clawlan.cli import main

pytestmark = [needs_router, pytest.mark.slow]
ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(name: str, path: pathlib.Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def routed(make_router, nodes):
    """A cache-aware router over the three nodes, found by mDNS."""

    def make(*extra: str):
        router = make_router(*extra)
        wait_for(lambda: members(router) == {n.url for n in nodes}, 60, "all three nodes in the pool")
        return router

    return make


@pytest.mark.timeout(1800)  # two ~12k-token prefills on one thread of a shared 2-core machine
def test_openclaw_shaped_12_tool_request_through_the_router(routed):
    router = routed()
    tools_test = load("router_test_tools", ROOT / "tests" / "server" / "test_tools.py")
    # The same assertions as against one server: required call, schema-valid arguments, and turn 2
    # served >= 90% from cache, which through a router needs the cache-aware policy to keep the
    # conversation on the node that holds it.
    tools_test.test_openclaw_shaped_request_required_then_cached_round_trip(SimpleNamespace(base_url=router.url))


def test_clawlan_bench_through_the_router(routed, tmp_path, capsys):
    router = routed()
    rc = main(["bench", "--url", router.url, "--concurrency", "1,3", "--requests-per-client", "1",
               "--input-tokens", "40", "--output-tokens", "8", "--switch-history", "300", "--switch-sessions", "1",
               "--quiet", "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    rounds = json.loads(next(tmp_path.glob("bench-*.json")).read_text())["servers"][0]["rounds"]
    assert [r["completed"] for r in rounds] == [1, 3]
    assert all(r["output_tokens"] == 8 * r["completed"] for r in rounds)


def test_cache_aware_serves_at_least_twice_round_robins_share_from_cache(make_router, nodes):
    """A light version of bench/router_cache.py: 5 conversations x 3 turns, history re-sent each turn,
    one request at a time (deterministic; the bench runs conversations concurrently). One request at a
    time, routing by load alone also puts every turn on one node, so the router must also report that
    it matched prefixes: vllm-router asks each worker for the prompt's ids (POST
    /v1/chat/completions/render) and, without them, counts every decision as missing_tokens."""
    bench = load("router_cache", ROOT / "bench" / "router_cache.py")
    shares = {}
    for i, policy in enumerate(["cache_aware", "round_robin"]):
        flags = ["--policy", policy, "--no-discover"] + [x for n in nodes for x in ("--worker", n.url)]
        router = make_router(*flags)
        wait_for(lambda r=router: len(members(r)) == 3, 30, "three workers")
        r = bench.run_workload(router.process.url, conversations=5, turns=3, words=120, followup_words=12,
                               max_tokens=12, seed=7, text_seed=100 + i)
        assert r["failed"] == 0
        shares[policy] = r["cached_share"]
        if policy == "cache_aware":
            decisions = bench.prefix_decisions(f"http://127.0.0.1:{router.process.options.metrics_port}/metrics")
            assert decisions.get("prefix_hit", 0) >= 5 * 2 and not decisions.get("missing_tokens"), decisions
        router.stop()
    assert shares["cache_aware"] >= 2 * shares["round_robin"], shares


def read_stream(stream: Any, got: list[str], raised: list[BaseException]) -> None:
    try:
        for chunk in stream:
            if chunk.choices:
                got.append(chunk.choices[0].delta.content or "")
    except Exception as exc:  # noqa: BLE001 - what the client raised is the thing under test
        raised.append(exc)


def stream_lines(resp: httpx.Response, out: list[str], errors: list[BaseException]) -> None:
    try:
        for line in resp.iter_lines():
            out.append(line)
    except httpx.HTTPError as exc:  # the connection cut short
        errors.append(exc)


def test_sigkill_mid_run_loses_no_request_and_ends_the_stream_with_an_error_event_then_rejoins(routed, nodes):
    router = routed()
    c = httpx.Client(base_url=router.url, timeout=httpx.Timeout(120, read=60))
    shared = "You keep the office's IT notes. " + " ".join(f"note {i}: the printer on floor {i % 4} needs toner." for i in range(60))
    # The running stream is read by the openai client, as OpenClaw and scripts read it.
    oa = openai.OpenAI(base_url=router.url + "/v1", api_key="none", max_retries=0, timeout=openai.Timeout(120, read=60))  # openai's own type: newer openai releases reject httpx's
    stream = oa.chat.completions.create(
        model="m", messages=[{"role": "system", "content": shared}, {"role": "user", "content": "Write a long report."}],
        max_tokens=2000, temperature=0, stream=True, extra_body={"ignore_eos": True})  # fmt: skip
    got: list[str] = []
    raised: list[BaseException] = []
    reader = threading.Thread(target=read_stream, args=(stream, got, raised), daemon=True)
    reader.start()
    wait_for(lambda: len(got) >= 3, 120, "the stream to start")
    victim = next(n for n in nodes if n.load() > 0)

    # Requests with the stream's prefix: cache_aware sends them to the same (doomed) node.
    results: list[Any] = [None] * 6

    def ask(i: int) -> None:
        body = {"model": "m", "messages": [{"role": "system", "content": shared}, {"role": "user", "content": f"Question {i}: which floor?"}],
                "max_tokens": 8, "temperature": 0}  # fmt: skip
        try:
            results[i] = c.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            results[i] = exc

    askers = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(6)]
    for t in askers:
        t.start()
    wait_for(lambda: victim.load() >= 2, 60, "requests queued on the victim")
    victim.kill(signal.SIGKILL)

    # The running stream ends with the router's SSE error event, which the openai client raises as an
    # APIError (not a connection error, and not a hang: the reader finishes well before the 60 s read
    # timeout, which would otherwise be what it raised). The text streamed so far is in the caller's hands.
    reader.join(90)
    assert not reader.is_alive()
    assert len(raised) == 1, raised
    assert isinstance(raised[0], openai.APIError) and not isinstance(raised[0], openai.APIConnectionError), repr(raised[0])
    assert raised[0].body["code"] == "upstream_stream_lost", raised[0].body
    assert "".join(got), "the text before the cut reached the client"

    # Every request that had not started streaming is retried on another node and succeeds.
    for t in askers:
        t.join(300)
    for r in results:
        assert isinstance(r, httpx.Response) and r.status_code == 200, r if not isinstance(r, httpx.Response) else r.text
        assert r.json()["choices"][0]["message"]["content"] is not None
    wait_for(lambda: victim.url not in members(router), 20, "the dead node to leave the pool")
    r = c.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert r.status_code == 200

    # Restarted (same port, same mDNS name): back in the pool within 10 s of its /health turning 200.
    victim.start()
    victim.wait_healthy()
    wait_for(lambda: victim.url in members(router), 10, "the restarted node to rejoin")
    c.close()


def test_sigterm_drains_running_stream_and_the_router_moves_on(routed, nodes):
    router = routed()
    node = nodes[2]
    c = httpx.Client(timeout=httpx.Timeout(120, read=60))
    body = {"model": "m", "messages": [{"role": "user", "content": "Count."}], "max_tokens": 60, "ignore_eos": True,
            "temperature": 0, "stream": True}  # fmt: skip
    resp = c.send(c.build_request("POST", node.url + "/v1/chat/completions", json=body), stream=True)
    lines: list[str] = []
    cut: list[BaseException] = []
    reader = threading.Thread(target=stream_lines, args=(resp, lines, cut), daemon=True)
    reader.start()
    wait_for(lambda: any(x.startswith("data: {") for x in lines), 120, "the stream to start")
    node.proc.send_signal(signal.SIGTERM)
    # New work goes elsewhere while it drains...
    r = httpx.post(router.url + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}, timeout=120)
    assert r.status_code == 200
    # ...and the stream it was serving finishes whole.
    reader.join(120)
    assert not cut and "data: [DONE]" in lines, (cut, lines[-3:])
    node.proc.wait(60)  # and then it exits
    wait_for(lambda: node.url not in members(router), 20, "the stopped node to leave the pool")
    node.start()
    node.wait_healthy()
    wait_for(lambda: node.url in members(router), 10, "the restarted node to rejoin")
    c.close()


def generated_tokens(nodes) -> float:
    """Tokens the three nodes have generated, from their own /metrics."""
    total = 0.0
    for n in nodes:
        for line in httpx.get(n.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith("clawlan:generation_tokens_total"):
                total += float(line.split()[-1])
    return total


def test_an_mdns_front_end_that_pins_the_router_chats_through_it_and_rogues_get_nothing(routed, nodes, prefix, tmp_path):
    """Issue 15: front ends need no change. One browsing mDNS, with the router's fingerprint trusted, sends its
    chat through the router (answered by a node); rogues advertised under names that sort first, plain, with
    their own key, or claiming the router's fingerprint without its key, receive nothing."""
    from tests.discovery.tls_stub import Advertiser, Rogue

    from clawlan.discovery.service import SERVICE_TYPE
    from clawlan.frontend.command import launch
    from clawlan.router.process import free_port
    from clawlan.web.identity import ensure_identity

    router = routed("--advertise", "--tls", "--state-dir", str(tmp_path / "router-id"), "--name", f"{prefix}-router")
    fp = router.identity.fingerprint
    rogues = [Rogue().start(), Rogue(ensure_identity(tmp_path / "rogue")).start(),
              Rogue(ensure_identity(tmp_path / "impostor")).start()]  # fmt: skip
    adv = Advertiser(SERVICE_TYPE)  # outside the router's --match: they are front-end bait, not workers
    fe = None
    try:
        adv.register(rogues[0].port, name=f"aaa-{prefix}-plain", model="rogue")
        adv.register(rogues[1].port, name=f"aab-{prefix}-own-key", model="rogue", fingerprint=rogues[1].identity.fingerprint)
        adv.register(rogues[2].port, name=f"aac-{prefix}-impostor", model="rogue", fingerprint=fp)
        fe = launch(backend="http://127.0.0.1:9", port=free_port(), extra_args=[
            "--data-dir", str(tmp_path / "front"), "--discovery", "mDNS", "--fallback-timeout", "30000",
            "--mdns-interface", "127.0.0.1", "--trusted-backend", fp])  # fmt: skip

        def seen() -> bool:
            names = {c["name"].split(".")[0] for c in httpx.get(fe.url + "api/status", timeout=5).json()["backends"]}
            return {f"{prefix}-router", f"aaa-{prefix}-plain", f"aab-{prefix}-own-key", f"aac-{prefix}-impostor"} <= names

        wait_for(seen, 30, "the front end to see the router and the rogues")
        before = generated_tokens(nodes)
        cid = httpx.post(fe.url + "api/conversations", json={}, timeout=10).json()["id"]
        with httpx.stream("POST", fe.url + f"api/conversations/{cid}/messages", json={"content": "Say hello to the office."},
                          timeout=300) as r:  # fmt: skip
            events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
        assert events[-1]["type"] == "done", events[-1]
        used = [e for e in events if e["type"] == "start"][-1]["backend"]
        assert used["base_url"] == router.url and used["verified"], used
        assert "".join(e["text"] for e in events if e["type"] == "delta")
        assert generated_tokens(nodes) > before  # a node behind the router wrote the answer
        assert [r.seen for r in rogues] == [[], [], []]
        cands = {c["name"].split(".")[0]: c for c in httpx.get(fe.url + "api/status", timeout=5).json()["backends"]}
        states = {k: c["state"] for k, c in cands.items()}
        in_use = [k for k, c in cands.items() if c["in_use"]]
        assert in_use == [f"{prefix}-router"] and states[f"{prefix}-router"] == "trusted", (in_use, states)
        assert states[f"aaa-{prefix}-plain"] == "plain" and states[f"aab-{prefix}-own-key"] == "new", states
        # The impostor claims the router's fingerprint: "mismatch" once the front end has tried its handshake,
        # "trusted" (by its claim) if the front end settled on the router first; either way it got nothing.
        # The nodes themselves are plain HTTP on loopback: listed, never used by the front end.
        assert all(states[n.name] == "plain" for n in nodes), states
    finally:
        if fe is not None:
            fe.stop()
        adv.close()
        for r in rogues:
            r.stop()
