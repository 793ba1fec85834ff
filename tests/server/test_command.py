"""The serve / config CLI: flags, precedence and one-line errors."""

from __future__ import annotations

import json

from clawlan.cli import main


def test_config_show_sources(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "network_config.json"
    cfg.write_text(json.dumps({"backend": {"service_port": 8085, "timeout_ms": 1000}, "server": {"batch_size": 4}}))
    monkeypatch.setenv("CLAWLAN_BACKEND_TIMEOUT_MS", "2000")
    assert main(["config", "show", "--config", str(cfg), "--batch-size", "6"]) == 0
    out = capsys.readouterr().out
    assert "8085" in out and f"file {cfg}" in out
    assert "backend.timeout_ms" in out and "2000" in out and "env CLAWLAN_BACKEND_TIMEOUT_MS" in out
    assert "server.batch_size" in out and "flag --batch-size" in out


def test_bad_config_value_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "network_config.json"
    cfg.write_text(json.dumps({"backend": {"service_port": 70000}}))
    assert main(["serve", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(cfg) in err and "backend.service_port" in err and "70000" in err and "1..65535" in err


def test_bad_model_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 not a model")
    assert main(["serve", "--model", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a GGUF model" in err and str(bad) in err


def test_bad_flag_is_one_line(capsys):
    try:
        main(["serve", "--port", "eighty"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--port" in err and "eighty" in err


def test_flag_error_names_the_flag(capsys):
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "flag --port" in err and "backend.service_port = 0" in err


def test_overlap_on_with_drafts_is_one_line_before_listening(capsys):
    assert main(["serve", "--overlap", "on", "--port", "1"]) == 2  # port 1: it would fail to bind if it got there
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "server.overlap = on needs server.draft_tokens = 0" in err
