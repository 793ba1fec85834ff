"""The ``clawlan`` command. Each subcommand lives beside the code it drives.

A module in :data:`COMMANDS` exposes ``register(subparsers)``, which adds its
subparser and sets ``func(args) -> int``. Any :class:`ClawlanError` becomes one
line on stderr and exit status 2; nothing user-caused prints a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from clawlan import __version__
from clawlan.errors import ClawlanError

COMMANDS = [
    "clawlan.server.command",  # serve, config show
    "clawlan.run",  # run: the server and a front end together
    "clawlan.frontend.command",  # front
    "clawlan.tools.command",  # clawdbot-config
    "clawlan.ops.command",  # plan, doctor, bench, quantize
    "clawlan.router.command",  # router
]


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line that says where help is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    parser = Parser(
        prog="clawlan",
        description="clawlan: an office's own AI on its own LAN. One shared model server, many light front ends.",
        epilog="Start with: clawlan run (back end + chat front end on the embedded model).",
    )
    parser.add_argument("--version", action="version", version=f"clawlan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return parser


def log_level(name: str | int | None) -> int:
    """A ``--log-level`` value (``warning``, ``WARNING`` or a number) as logging's level number.

    logging only knows upper-case names, and the flags advertise lower-case ones.
    """
    if name is None:
        return logging.INFO
    if isinstance(name, int):
        return name
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {name!r}")
    return level


def setup_logging(name: str | int | None) -> None:
    """One format for every subcommand, at the level asked for (info by default)."""
    level = log_level(name)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        setup_logging(getattr(args, "log_level", None))
    except ValueError as exc:  # a subcommand whose --log-level has no choices list
        parser.error(f"--log-level: {exc}; use debug, info, warning or error")
    try:
        return int(args.func(args) or 0)
    except ClawlanError as exc:
        print(f"clawlan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
