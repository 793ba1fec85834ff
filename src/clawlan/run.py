"""``clawlan run``: the back end and a front end beside it (``make run``).

It drives both services, so it sits above them in the layers (with the CLI), not inside either.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from clawlan.frontend import command as front_command
from clawlan.server.command import add_server_flags, settings_from_args


def cmd_run(args: argparse.Namespace) -> int:
    """The back end and a front end beside it (``make run``)."""
    from clawlan.model.store import resolve
    from clawlan.server.backend import Backend
    from clawlan.server.serving import RunningServer

    settings = settings_from_args(args).settings
    logging.getLogger().setLevel(settings.server.log_level.upper())
    info = resolve(settings.server.model, settings.server.model_sha256)
    server = RunningServer(settings, Backend(settings, info=info))
    # The front end is its own light process, as on a NUC; it is told where this back end is.
    # It gets this server's key (when one is required) and trusts this server's own TLS identity.
    own = ["--trusted-backend", server.identity.fingerprint] if server.identity else []
    key = settings.frontend.api_key or (settings.server.api_keys[0] if settings.server.api_keys else None)
    front = front_command.launch(args.config, backend=server.base_url, port=args.front_port or settings.frontend.port,
                   extra_args=own + front_command.run_args(args), api_key=key)
    print(f"clawlan: API at {server.base_url}/v1 (model {info.path.name}, loading in the background)", flush=True)
    print(f"clawlan: chat at {front.url}", flush=True)
    # uvicorn shuts down on SIGTERM and then re-raises it; make that an exit, so the front end is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.run()
    finally:
        front.stop()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the back end and a front end beside it (make run)")
    add_server_flags(p)
    front_command.add_run_flags(p)  # the front end's options, e.g. --docs-dir
    p.set_defaults(func=cmd_run)
