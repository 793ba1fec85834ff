"""Every bad-model-file case is one clear line naming the file and the fix, before llama.cpp sees it."""

from __future__ import annotations

import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from clawlan.errors import ChecksumError, DiskSpaceError, ModelError, ModelFileError
from clawlan.model import store

WRONG = "0" * 64


@pytest.fixture(scope="module")
def embedded() -> Path:
    return store.embedded_model_path()


@pytest.fixture
def no_native_load(monkeypatch):
    """Fail the test if llama.cpp is ever asked to load a model file."""
    import llama_cpp

    calls: list[bytes] = []

    def spy(path, params):
        calls.append(path)
        raise AssertionError(f"llama.cpp was given {path!r}")

    monkeypatch.setattr(llama_cpp, "llama_model_load_from_file", spy)
    return calls


def load(path: Path, sha256: str | None = None):
    """What serving does: resolve (all checks), then hand the path to llama.cpp."""
    from clawlan.engine.llama import Model

    info = store.resolve(str(path), sha256=sha256)
    return Model(info.path)


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    assert "Traceback" not in msg
    return msg


def make_missing(tmp: Path, embedded: Path) -> tuple[Path, dict]:
    return tmp / "nope.gguf", {}


def make_unreadable(tmp: Path, embedded: Path) -> tuple[Path, dict]:
    p = tmp / "locked.gguf"
    p.write_bytes(b"GGUF" + b"\0" * 100)
    p.chmod(0)
    return p, {}


def make_truncated(tmp: Path, embedded: Path) -> tuple[Path, dict]:
    p = tmp / "half.gguf"
    with embedded.open("rb") as f:
        p.write_bytes(f.read(4 << 20))  # header and tensor table intact, tensor data cut
    return p, {}


def make_truncated_header(tmp: Path, embedded: Path) -> tuple[Path, dict]:
    p = tmp / "stub.gguf"
    with embedded.open("rb") as f:
        p.write_bytes(f.read(10))
    return p, {}


def make_not_gguf(tmp: Path, embedded: Path) -> tuple[Path, dict]:
    p = tmp / "model.gguf"
    p.write_text("<html>404 Not Found</html>\n")
    return p, {}


def make_empty(tmp: Path, embedded: Path) -> tuple[Path, dict]:
    p = tmp / "empty.gguf"
    p.write_bytes(b"")
    return p, {}


def make_directory(tmp: Path, embedded: Path) -> tuple[Path, dict]:
    p = tmp / "models"
    p.mkdir()
    return p, {}


def make_sums_mismatch(tmp: Path, embedded: Path) -> tuple[Path, dict]:
    p = tmp / "gemma.gguf"
    p.symlink_to(embedded)
    (tmp / "SHA256SUMS").write_text(f"{WRONG}  gemma.gguf\n")
    return p, {}


def make_explicit_mismatch(tmp: Path, embedded: Path) -> tuple[Path, dict]:
    p = tmp / "gemma.gguf"
    p.symlink_to(embedded)
    return p, {"sha256": WRONG.upper()}


# case -> (maker, error class, words the message must contain besides the file name)
CASES = {
    "missing": (make_missing, ModelFileError, ["does not exist", "--model"]),
    "unreadable": (make_unreadable, ModelFileError, ["permission denied", "chmod 644"]),
    "truncated": (make_truncated, ModelFileError, ["truncated", "again"]),
    "truncated header": (make_truncated_header, ModelFileError, ["truncated", "again"]),
    "not gguf": (make_not_gguf, ModelFileError, ["not a GGUF", "convert"]),
    "empty": (make_empty, ModelFileError, ["not a GGUF"]),
    "directory": (make_directory, ModelFileError, ["directory", ".gguf"]),
    "SHA256SUMS mismatch": (make_sums_mismatch, ChecksumError, [WRONG, store.EMBEDDED_SHA256, "checksum"]),
    "explicit sha256 mismatch": (make_explicit_mismatch, ChecksumError, [WRONG, store.EMBEDDED_SHA256]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_model_file_is_one_clear_line(case, tmp_path, embedded, no_native_load):
    maker, cls, words = CASES[case]
    path, kw = maker(tmp_path, embedded)
    with pytest.raises(cls) as info:
        load(path, **kw)
    msg = one_line(info.value)
    assert str(path) in msg, f"the message does not name the file: {msg}"
    for w in words:
        assert w in msg, f"{w!r} missing from: {msg}"
    assert not no_native_load, "llama.cpp saw a bad file"


def test_not_enough_disk_to_assemble(tmp_path, monkeypatch, no_native_load):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLAWLAN_CACHE_DIR", str(cache))
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 10**7, 10**7))
    with pytest.raises(DiskSpaceError) as info:
        store.resolve(None)
    msg = one_line(info.value)
    assert str(cache) in msg and "10 MB free" in msg and "CLAWLAN_CACHE_DIR" in msg and "df -h" in msg
    assert not list(cache.glob("*.gguf*")), "nothing is written when the disk is short"
    assert not no_native_load


def test_check_disk_passes_with_room(tmp_path):
    store.check_disk(tmp_path / "x", 1)


def test_matching_checksums_accepted(tmp_path, embedded):
    p = tmp_path / "gemma.gguf"
    p.symlink_to(embedded)
    (tmp_path / "SHA256SUMS").write_text(f"{store.EMBEDDED_SHA256} *gemma.gguf\n{WRONG}  other.gguf\n")
    # check_file is resolve's checksum step (resolve then reads metadata, which is slow).
    store.check_file(p)
    store.check_file(p, sha256=store.EMBEDDED_SHA256.upper())


def test_sums_file_without_an_entry_is_ignored(tmp_path, embedded):
    p = tmp_path / "gemma.gguf"
    p.symlink_to(embedded)
    (tmp_path / "SHA256SUMS").write_text(f"{WRONG}  something-else.gguf\n")
    assert store.expected_sha256(p) is None
    store.check_file(p)


def test_embedded_model_is_assembled_and_verified(embedded, model_info):
    assert embedded.stat().st_size == store.EMBEDDED_SIZE
    assert embedded.with_suffix(".verified").read_text().strip() == store.EMBEDDED_SHA256
    assert store.embedded_model_path() == embedded
    # model_info is tests/conftest.py's session-wide store.resolve(None): checks and metadata.
    assert model_info.path == embedded and model_info.architecture == "gemma3"


def test_errors_are_model_errors():
    for _, cls, _ in CASES.values():
        assert issubclass(cls, ModelError)


@pytest.mark.parametrize("case", list(CASES))
def test_serve_prints_one_line_and_exits_non_zero(case, tmp_path, embedded, capsys, no_native_load):
    from clawlan.cli import main

    maker, _, words = CASES[case]
    path, kw = maker(tmp_path, embedded)
    argv = ["serve", "--model", str(path)] + (["--sha256", kw["sha256"]] if "sha256" in kw else [])
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and all(w in err for w in words), err
    assert not no_native_load


def test_serve_not_enough_disk(tmp_path, monkeypatch, capsys, no_native_load):
    from clawlan.cli import main

    monkeypatch.setenv("CLAWLAN_CACHE_DIR", str(tmp_path / "cache"))
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 10**7, 10**7))
    rc = main(["serve"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1, err
    assert "not enough disk" in err and str(tmp_path / "cache") in err


def test_unreadable_for_non_root_too(tmp_path):
    # os.access is what a service user hits; root passes it, so the mode bits are checked as well.
    p = tmp_path / "m.gguf"
    p.write_bytes(b"GGUF")
    p.chmod(0o200)
    with pytest.raises(ModelFileError, match="chmod 644"):
        store.check_file(p)
    p.chmod(0o644)
    store.check_file(p)
    assert os.access(p, os.R_OK)
    shutil.rmtree(tmp_path, ignore_errors=True)
