"""The config loader: the seed's files verbatim, precedence with sources, warnings and errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clawlan.config.loader import env_name, load_settings, show
from clawlan.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
NETWORK = ROOT / "examples" / "network_config.json"
CLAWBOT = ROOT / "examples" / "clawbot_config.json"
# CI lays shared/ beside the clone; sessions have it at /work/shared.
SEED_DIR = next(
    (p for p in (ROOT.parent / "shared" / "seed", Path("/work/shared/seed")) if p.is_dir()), ROOT.parent / "shared" / "seed"
)


def seed_block(title: str) -> str:
    """The seed's numbered JSON block under ``// title``, without the line numbers."""
    text = "".join(p.read_text(encoding="utf-8") for p in sorted(SEED_DIR.glob("*.txt")))
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\s*1\. // {re.escape(title)}", line))
    out = []
    for line in lines[start + 1 :]:
        m = re.match(r"\s*\d+\. (.*)$", line)
        if not m:
            break
        out.append(m.group(1))
    return "\n".join(out) + "\n"


@pytest.mark.skipif(not SEED_DIR.is_dir(), reason="the seed text is not on this machine")
@pytest.mark.parametrize("path", [NETWORK, CLAWBOT], ids=lambda p: p.name)
def test_examples_are_the_seed_verbatim(path):
    assert path.read_text(encoding="utf-8") == seed_block(path.name)


def test_seed_files_load_as_written():
    loaded = load_settings([NETWORK, CLAWBOT], env={})
    s = loaded.settings
    assert loaded.warnings == []
    assert (s.backend.service_port, s.backend.max_connections, s.backend.timeout_ms) == (8080, 100, 30000)
    assert s.frontend.discovery_protocol == "mDNS" and s.frontend.fallback_timeout == 5000
    assert s.frontend.render_mode == "hardware_accelerated" and s.frontend.max_concurrent_sessions == 5
    assert loaded.sources["backend.service_port"] == f"file {NETWORK}"
    assert loaded.sources["frontend.render_mode"] == f"file {CLAWBOT}"
    assert loaded.sources["server.batch_size"] == "default"


def test_lan_example_loads_without_warnings():
    loaded = load_settings([ROOT / "examples" / "server_lan.json"], env={})
    s = loaded.settings
    assert loaded.warnings == []
    assert s.lan and s.advertise and s.server.api_keys == ["change-me-office-key"]
    assert s.server.max_context_tokens == 16384 and s.frontend.static_backend == "http://192.168.1.100:8080"


def test_defaults_match_the_seed():
    s = load_settings([], env={}).settings
    assert s.backend.service_port == 8080 and s.server.max_wait_ms == 50 and s.server.batch_size == 8
    assert all(v == "default" for v in load_settings([], env={}).sources.values())


def write(tmp_path: Path, data, name: str = "c.json") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return p


def test_precedence_flag_env_file_default(tmp_path):
    f = write(tmp_path, {"backend": {"service_port": 9000, "timeout_ms": 1000}, "server": {"batch_size": 4}})
    env = {env_name("backend.service_port"): "9100", env_name("server.batch_size"): "6"}
    loaded = load_settings([f], flags={"server.batch_size": 2, "server.threads": None}, env=env)
    s, src = loaded.settings, loaded.sources
    assert s.server.batch_size == 2 and src["server.batch_size"] == "flag --batch-size"
    assert (
        s.backend.service_port == 9100 and src["backend.service_port"] == "env CLAWLAN_BACKEND_SERVICE_PORT"
    )
    assert s.backend.timeout_ms == 1000 and src["backend.timeout_ms"] == f"file {f}"
    assert s.backend.max_connections == 100 and src["backend.max_connections"] == "default"
    assert src["server.threads"] == "default", "a flag left unset (None) does not count"
    # show() lists every key with its source.
    text = show(loaded)
    assert re.search(r"server\.batch_size\s+= 2\s+# flag --batch-size", text)
    assert re.search(r"backend\.max_connections\s+= 100\s+# default", text)


def test_later_file_overrides_earlier(tmp_path):
    a = write(tmp_path, {"server": {"batch_size": 3}}, "a.json")
    b = write(tmp_path, {"server": {"batch_size": 5}}, "b.json")
    loaded = load_settings([a, b], env={})
    assert loaded.settings.server.batch_size == 5 and loaded.sources["server.batch_size"] == f"file {b}"


def test_config_env_variable_names_files(tmp_path):
    f = write(tmp_path, {"server": {"max_wait_ms": 0}})
    loaded = load_settings([], env={"CLAWLAN_CONFIG": str(f)})
    assert loaded.settings.server.max_wait_ms == 0


def test_env_lists(tmp_path):
    env = {env_name("server.api_keys"): "k1, k2", env_name("server.cors_origins"): '["http://a"]'}
    s = load_settings([], env=env).settings
    assert s.server.api_keys == ["k1", "k2"] and s.server.cors_origins == ["http://a"]


def test_unknown_key_warns_and_names_it(tmp_path):
    f = write(tmp_path, {"backend": {"service_port": 8080, "max_conections": 5}, "bakend": {}})
    loaded = load_settings([f], env={})
    assert any("backend.max_conections" in w and str(f) in w for w in loaded.warnings)
    assert any("'bakend'" in w for w in loaded.warnings)
    assert loaded.settings.backend.max_connections == 100  # the typo did not set anything


@pytest.mark.parametrize(
    ("data", "key", "value", "allowed"),
    [
        ({"backend": {"service_port": 70000}}, "backend.service_port", "70000", "1..65535"),
        ({"backend": {"service_port": "8080"}}, "backend.service_port", '"8080"', "int"),
        ({"backend": {"max_connections": 0}}, "backend.max_connections", "0", "1..100000"),
        ({"backend": {"timeout_ms": 1.5}}, "backend.timeout_ms", "1.5", "int"),
        (
            {"frontend": {"discovery_protocol": "bonjour"}},
            "frontend.discovery_protocol",
            '"bonjour"',
            "'mDNS'",
        ),
        ({"frontend": {"max_concurrent_sessions": -1}}, "frontend.max_concurrent_sessions", "-1", "1..1000"),
        ({"server": {"batch_size": 1000}}, "server.batch_size", "1000", "1..128"),
        ({"frontend": {"render_mode": True}}, "frontend.render_mode", "true", "'software'"),
    ],
)
def test_bad_value_names_file_key_value_and_range(tmp_path, data, key, value, allowed):
    f = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_settings([f], env={})
    msg = str(info.value)
    assert "\n" not in msg
    assert str(f) in msg and key in msg and value in msg and allowed in msg, msg


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError) as info:
        load_settings([], env={"CLAWLAN_SERVER_MAX_WAIT_MS": "-5"})
    msg = str(info.value)
    assert (
        "CLAWLAN_SERVER_MAX_WAIT_MS" in msg
        and "server.max_wait_ms" in msg
        and "-5" in msg
        and "0..10000" in msg
    )


def test_bad_flag_value_names_the_flag():
    with pytest.raises(ConfigError) as info:
        load_settings([], flags={"server.batch_size": 0}, env={})
    assert "--batch-size" in str(info.value) and "1..128" in str(info.value)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", ["not valid JSON", "line 1"]),
        ("[1, 2]", ["top level"]),
        ('{"backend": 5}', ["'backend'", "JSON object"]),
    ],
)
def test_malformed_files(tmp_path, content, words):
    f = write(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        load_settings([f], env={})
    assert str(f) in str(info.value) and all(w in str(info.value) for w in words)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings([tmp_path / "nope.json"], env={})


@pytest.mark.parametrize("keys", [[""], ["k1", "  "]])
def test_empty_api_key_is_a_config_error(keys):
    # An empty key let 'Authorization: Bearer' with no token in, while /health advertised auth=1.
    with pytest.raises(ConfigError) as e:
        load_settings(flags={"server.api_keys": keys}, env={}, flag_names={"server.api_keys": "--api-key"})
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "server.api_keys" in msg and "empty API key" in msg and "--api-key" in msg
