"""Where clawlan keeps files by default, for every command that reads them.

The front end writes its data folder and ``clawlan doctor`` reads the pins in it; both
take the default from here, so the two cannot drift apart.
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
