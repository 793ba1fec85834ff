"""config/paths.py: the default folders, and that the commands sharing one read it from there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clawlan.config.paths import frontend_data_dir


def test_frontend_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert frontend_data_dir() == tmp_path / "xdg" / "clawlan" / "front"
    # frontend.data_dir or --data-dir wins
    assert frontend_data_dir(str(tmp_path / "mine")) == tmp_path / "mine"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert frontend_data_dir() == tmp_path / "home" / ".local" / "share" / "clawlan" / "front"


def test_doctor_reads_the_pins_where_the_front_end_keeps_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Neither configured: the front end creates its folder where the doctor looks for the pin file.
    from clawlan.cli import main
    from clawlan.frontend.app import FrontConfig, build_app
    from clawlan.ops import doctor

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CLAWLAN_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no seed files here
    build_app(FrontConfig(discovery_protocol="static", static_backend="http://127.0.0.1:9"))
    assert (frontend_data_dir() / "clawlan-front.sqlite3").is_file()

    seen: list[tuple[str | None, str]] = []

    def record(self: doctor.Doctor, skip: Any = ()) -> list[Any]:
        seen.append((self.frontend_data_dir, self.admin_url))
        return []

    monkeypatch.setattr(doctor.Doctor, "run", record)  # the checks themselves are tests/ops' business
    main(["doctor", "--backend", "127.0.0.1:9", "--json"])
    # A config file that does not load: the doctor reports it, and assumes the front end's defaults.
    (tmp_path / "bad.json").write_text('{"frontend": {"port": "eighty"}}')
    main(["doctor", "--backend", "127.0.0.1:9", "--json", "--config", str(tmp_path / "bad.json")])
    assert seen == [(str(frontend_data_dir()), "http://127.0.0.1:8081/admin/backends")] * 2
