"""The back-end health probe behind the status chip and the loading wait (frontend/health.py)."""

from __future__ import annotations

import asyncio

import httpx
from tests.frontend.conftest import StubBackend, free_port

from clawlan.frontend.health import HealthProbe, parse_health


def test_parse_health_reads_clawlan_and_llama_server_answers() -> None:
    assert parse_health(200, {"status": "ok", "model": "m"}).state == "ok"
    assert parse_health(200, {"status": "ok", "model": "m"}).model == "m"
    assert parse_health(503, {"status": "loading"}).state == "loading"
    assert parse_health(503, {"error": {"message": "Loading model", "code": 503}}).state == "loading"  # llama-server
    failed = parse_health(503, {"status": "error", "error": "not a GGUF model"})
    assert failed.state == "error" and "GGUF" in (failed.detail or "")
    assert parse_health(404, None).state == "ok"  # answered: up, whatever it is


def test_probe_says_down_then_up(stub_backend: StubBackend) -> None:
    async def run() -> tuple[str, str, str]:
        probe = HealthProbe(ttl_s=60)
        async with httpx.AsyncClient() as client:
            down = (await probe.check(f"http://127.0.0.1:{free_port()}", client)).state
            up = (await probe.check(stub_backend.base_url, client)).state
            stub_backend.stop()
            cached = (await probe.check(stub_backend.base_url, client)).state  # within ttl: the last answer
            fresh = (await probe.check(stub_backend.base_url, client, fresh=True)).state
            return down, up, cached + "/" + fresh

    assert asyncio.run(run()) == ("down", "ok", "ok/down")
