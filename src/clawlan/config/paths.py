"""Where clawlan keeps files by default, for every command that reads them.

The front end writes its data folder and ``clawlan doctor`` reads the pins in it; both
take the default from here, so the two cannot drift apart. A server's and a router's TLS
identity (web/identity.py) live in their state folders.
"""

from __future__ import annotations

import os
from pathlib import Path


def frontend_data_dir(configured: str | Path | None = None) -> Path:
    """The front end's data folder (conversations, uploads, pinned fingerprints): ``configured``
    (``frontend.data_dir`` or ``--data-dir``), else ``$XDG_DATA_HOME/clawlan/front``
    (``~/.local/share/clawlan/front``)."""
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "clawlan" / "front"


def state_dir(kind: str = "server") -> Path:
    """``$XDG_STATE_HOME/clawlan/KIND`` (``~/.local/state/...``); for the server ``$CLAWLAN_STATE_DIR`` first.
    Each kind (server, router) has its own, so pinning a router never pins the node on the same box."""
    if kind == "server" and os.environ.get("CLAWLAN_STATE_DIR"):
        return Path(os.environ["CLAWLAN_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "clawlan" / kind
