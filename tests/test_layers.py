"""The layering contract in pyproject.toml ([tool.importlinter]) holds, and it does catch a break.

`make test` runs ``lint-imports`` as well; this keeps the check in the suite for whoever runs
pytest alone. Both run import-linter as a subprocess with PYTHONPATH naming the tree to check,
so it reads this checkout's sources, not whatever clawlan the environment has installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    # The console script is a thin wrapper over this click command; calling it through the
    # running interpreter works whether or not the venv's bin is on PATH.
    code = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", code, "--config", str(CONFIG), "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_imports_follow_the_layers() -> None:
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_wrong_way_import_breaks_the_contract(tmp_path: Path) -> None:
    # A copy of the package with one import going up (tools -> server) and one a front end must
    # never make (frontend -> engine): the same config must reject both.
    shutil.copytree(
        ROOT / "src" / "clawlan",
        tmp_path / "clawlan",
        ignore=shutil.ignore_patterns("__pycache__", "static", "templates"),
    )
    with (tmp_path / "clawlan" / "tools" / "__init__.py").open("a") as f:
        f.write("\nimport clawlan.server.app  # noqa\n")
    with (tmp_path / "clawlan" / "frontend" / "__init__.py").open("a") as f:
        f.write("\nimport clawlan.engine.engine  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "clawlan.tools is not allowed to import clawlan.server" in result.stdout
    assert "clawlan.frontend -> clawlan.engine" in result.stdout
