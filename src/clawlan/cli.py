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
    "clawlan.server.command",  # serve, run, config show
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=getattr(args, "log_level", None) or logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    try:
        return int(args.func(args) or 0)
    except ClawlanError as exc:
        print(f"clawlan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
