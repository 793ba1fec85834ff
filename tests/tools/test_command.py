"""``clawlan clawdbot-config`` on a temporary home, against stub servers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from clawlan.cli import main
from clawlan.errors import ConfigError
from clawlan.tools.command import (
    fetch_server_model,
    find_config,
    is_private_host,
    load_config_text,
    merge_config,
    normalize_server,
)

MODELS = {
    "object": "list",
    "data": [{"id": "gemma-3-270m", "object": "model", "max_model_len": 16384, "context_length": 32768}],
}

EXISTING = """{
  // OpenClaw's own settings, to be kept
  "gateway": {"port": 18789, "auth": {"token": "s3cret"}},
  "models": {
    "providers": {
      "other": {"baseUrl": "https://api.example.com/v1", "apiKey": "k", "api": "openai-completions", "models": []},
      "clawlan": {"baseUrl": "http://old:8080/v1", "apiKey": "old-key", "headers": {"X-Team": "a"},
                  "models": [{"id": "older-model", "name": "kept"}, {"id": "gemma-3-270m", "name": "stale"}]},
    },
  },
  "agents": {"defaults": {"model": {"primary": "other/big", "fallbacks": ["other/small"]}, "workspace": "~/w"}},
  /* a block comment with "quotes" and // slashes */
  "channels": {"telegram": {"url": "http://t.me/x//y", "enabled": true,},},
}
"""


@pytest.fixture
def stub_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server answering /v1/models; records each request's headers."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
            body = json.dumps(MODELS).encode() if self.path == "/v1/models" else b"{}"
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # bound (and listening) before the thread starts
    # A short poll interval makes shutdown() return at once at teardown.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_merge_into_existing_openclaw_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_server: Any, capsys: Any
) -> None:
    url, seen = stub_server
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CLAWLAN_API_KEY", raising=False)
    cfg = tmp_path / ".openclaw" / "openclaw.json"
    cfg.parent.mkdir()
    cfg.write_text(EXISTING)

    assert main(["clawdbot-config", "--server", url + "/v1/", "--api-key", "K1"]) == 0

    data = json.loads(cfg.read_text())  # strict JSON now
    assert data["gateway"] == {"port": 18789, "auth": {"token": "s3cret"}}
    assert data["channels"]["telegram"] == {"url": "http://t.me/x//y", "enabled": True}
    assert data["models"]["providers"]["other"]["baseUrl"] == "https://api.example.com/v1"
    prov = data["models"]["providers"]["clawlan"]
    assert prov["baseUrl"] == url + "/v1" and prov["apiKey"] == "K1" and prov["api"] == "openai-completions"
    assert prov["headers"] == {"X-Team": "a"}  # the user's own keys survive
    assert prov["request"] == {"allowPrivateNetwork": True}  # 127.0.0.1 is loopback
    assert prov["models"][0] == {
        "id": "gemma-3-270m",
        "name": "gemma-3-270m (clawlan)",
        "contextWindow": 16384,  # max_model_len wins over context_length
        "maxTokens": 4096,
        "input": ["text"],
        "reasoning": False,
    }
    assert [m["id"] for m in prov["models"]] == ["gemma-3-270m", "older-model"]
    assert data["agents"]["defaults"]["model"] == {
        "primary": "clawlan/gemma-3-270m",
        "fallbacks": ["other/small"],
    }
    assert data["agents"]["defaults"]["workspace"] == "~/w"
    backups = list(cfg.parent.glob("openclaw.json.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == EXISTING
    assert seen == [{"path": "/v1/models", "auth": "Bearer K1"}]
    assert "comments" in capsys.readouterr().err

    # Again: the key now comes from the file, and a second backup appears.
    assert main(["clawdbot-config", "--server", url]) == 0
    assert json.loads(cfg.read_text())["models"]["providers"]["clawlan"]["apiKey"] == "K1"
    assert len(list(cfg.parent.glob("openclaw.json.bak-*"))) == 2


def test_older_clawdbot_file_is_used_when_it_is_the_one_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_server: Any
) -> None:
    url, _ = stub_server
    monkeypatch.setenv("HOME", str(tmp_path))
    old = tmp_path / ".clawdbot" / "clawdbot.json"
    old.parent.mkdir()
    old.write_text('{"agent": {"name": "bot"}}')
    assert main(["clawdbot-config", "--server", url, "--provider-id", "office"]) == 0
    data = json.loads(old.read_text())
    assert data["agent"] == {"name": "bot"} and "office" in data["models"]["providers"]
    assert data["agents"]["defaults"]["model"]["primary"] == "office/gemma-3-270m"
    assert not (tmp_path / ".openclaw").exists()


def test_fresh_home_gets_a_private_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_server: Any
) -> None:
    url, _ = stub_server
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["clawdbot-config", "--server", url]) == 0
    cfg = tmp_path / ".openclaw" / "openclaw.json"
    assert json.loads(cfg.read_text())["models"]["providers"]["clawlan"]["apiKey"] == "clawlan"
    assert cfg.stat().st_mode & 0o077 == 0  # it holds an API key
    assert not list(cfg.parent.glob("*.bak-*"))


def test_print_shows_the_block_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_server: Any, capsys: Any
) -> None:
    url, _ = stub_server
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["clawdbot-config", "--server", url, "--print", "--max-tokens", "1000"]) == 0
    block = json.loads(capsys.readouterr().out)
    assert block["models"]["providers"]["clawlan"]["models"][0]["maxTokens"] == 1000
    assert block["agents"]["defaults"]["model"]["primary"] == "clawlan/gemma-3-270m"
    assert not (tmp_path / ".openclaw").exists()


def test_unmergeable_file_is_refused_and_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_server: Any, capsys: Any
) -> None:
    url, _ = stub_server
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = tmp_path / ".openclaw" / "openclaw.json"
    cfg.parent.mkdir()
    cfg.write_text("{ gateway: {port: 1} }")  # JSON5 unquoted keys
    assert main(["clawdbot-config", "--server", url]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "--print" in err and len(err.strip().splitlines()) == 1
    assert cfg.read_text() == "{ gateway: {port: 1} }" and not list(cfg.parent.glob("*.bak-*"))


def test_fetch_with_mock_transport() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != "Bearer good":
            return httpx.Response(401, json={"error": {"message": "bad key"}})
        return httpx.Response(200, json={"data": [{"id": "a", "context_length": 4096}, {"id": "b"}]})

    transport = httpx.MockTransport(handler)
    m = fetch_server_model("http://h:1", "good", transport=transport)
    assert (m.id, m.context_window, m.max_tokens) == ("a", 4096, 1024)
    m = fetch_server_model("http://h:1", "good", "b", transport=transport)
    assert (m.id, m.context_window) == ("b", 8192)  # no length reported: the default
    with pytest.raises(ConfigError, match="401"):
        fetch_server_model("http://h:1", "bad", transport=transport)
    with pytest.raises(ConfigError, match="no model 'c'"):
        fetch_server_model("http://h:1", "good", "c", transport=transport)
    bad = httpx.MockTransport(lambda r: httpx.Response(200, text="<html>"))
    with pytest.raises(ConfigError, match="model list"):
        fetch_server_model("http://h:1", None, transport=bad)


def test_helpers() -> None:
    assert normalize_server("10.0.0.5:8080") == "http://10.0.0.5:8080"
    assert normalize_server("https://llm.example.com/v1/") == "https://llm.example.com"
    with pytest.raises(ConfigError):
        normalize_server("ftp://x")
    assert is_private_host("192.168.1.20") and is_private_host("127.0.0.1") and is_private_host("::1")
    assert is_private_host("fe80::1") and is_private_host("server.local.")
    assert not is_private_host("8.8.8.8")
    assert find_config(Path("/h"), "~/x.json") == Path("~/x.json").expanduser()
    assert find_config(Path("/nonexistent-home")) == Path("/nonexistent-home/.openclaw/openclaw.json")
    data, dropped = load_config_text('{"a": "//not a comment", "b": [1, 2,],}', Path("f"))
    assert data == {"a": "//not a comment", "b": [1, 2]} and dropped
    assert load_config_text("  ", Path("f")) == ({}, False)
    with pytest.raises(ConfigError, match="not an object"):
        load_config_text("[1]", Path("f"))
    merged = merge_config({"agents": {"defaults": {"model": "x/y", "models": {"x/y": {}}}}}, "p", _block())
    assert merged["agents"]["defaults"]["model"] == {"primary": "p/m"}
    assert set(merged["agents"]["defaults"]["models"]) == {"x/y", "p/m"}  # an allowlist gets the new model
    with pytest.raises(ConfigError, match="'models'"):
        merge_config({"models": [1]}, "p", _block())


def _block() -> dict[str, Any]:
    return {"baseUrl": "http://h/v1", "apiKey": "k", "api": "openai-completions", "models": [{"id": "m"}]}
