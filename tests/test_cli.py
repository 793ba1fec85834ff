"""Every choice every CLI flag advertises is accepted, and every --log-level value starts logging."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawlan import cli

SRC = Path(__file__).resolve().parents[1] / "src"


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(subcommand path, parser) for the top parser and every subcommand, nested ones included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def required_args(parser: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for a parser's required positionals and options (parsing only)."""
    argv: list[str] = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            continue
        if not a.option_strings and a.nargs not in ("?", "*"):
            argv.append(str(next(iter(a.choices))) if a.choices else "x")
        elif a.option_strings and a.required:
            argv += [a.option_strings[0], str(next(iter(a.choices))) if a.choices else "x"]
    return argv


def choice_cases() -> list[tuple[tuple[str, ...], str, str, object]]:
    cases = []
    for path, parser in walk(cli.build_parser()):
        for a in parser._actions:
            if a.option_strings and a.choices and not isinstance(a, argparse._SubParsersAction):
                many = isinstance(a, argparse._AppendAction) or a.nargs in ("*", "+")
                cases += [(path, a.option_strings[-1], a.dest, [c] if many else c) for c in a.choices]
    return cases


CASES = choice_cases()


def test_the_walk_finds_the_flags_with_choices() -> None:
    flags = {(p[0], flag) for p, flag, _, _ in CASES}
    # a guard against the walk silently finding nothing: these are known to have choices
    assert ("serve", "--log-level") in flags and ("serve", "--kv-layout") in flags and ("run", "--log-level") in flags


@pytest.mark.parametrize(("path", "flag", "dest", "choice"), CASES, ids=[f"{' '.join(c[0])} {c[1]}={c[3]}" for c in CASES])
def test_every_choice_parses(path, flag, dest, choice) -> None:
    root = cli.build_parser()
    parser = dict(walk(root))[path]
    value = choice[0] if isinstance(choice, list) else choice
    args = root.parse_args([*path, *required_args(parser), flag, str(value)])
    assert getattr(args, dest) == choice
    if dest == "log_level":  # and logging starts at that level
        before = logging.getLogger().level
        try:
            cli.setup_logging(args.log_level)
            assert logging.getLogger().level == logging.getLevelName(str(choice).upper())
        finally:
            logging.getLogger().setLevel(before)


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_log_level_end_to_end(level) -> None:
    # A fresh interpreter: pytest's own log handler would hide logging.basicConfig's level check.
    env = dict(os.environ, PYTHONPATH=str(SRC), CLAWLAN_CONFIG="")
    out = subprocess.run(
        [sys.executable, "-m", "clawlan", "config", "show", "--log-level", level],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr


def test_a_bad_log_level_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["serve", "--log-level", "loud"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--log-level" in err
