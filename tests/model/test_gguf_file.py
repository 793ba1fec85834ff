"""The one GGUF header reader: same answers as the gguf package's GGUFReader, nothing left behind.

Issue 12: on a CUDA build of llama.cpp, ``resolve(path)`` followed by ``Model(path)`` segfaulted
inside llama_model_load_from_file, while ``Model(path)`` alone loaded. ``resolve`` used to run
gguf's GGUFReader: ``import gguf`` (numpy and its OpenBLAS, PyYAML, optional sentencepiece /
mistral_common) before llama.cpp was loaded, and a numpy map of the whole file. The reader now
does neither; these tests hold it to that on the CPU.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from clawlan.errors import ModelFileError
from clawlan.model import gguf_file, store
from clawlan.model.metadata import read_metadata

SRC = Path(__file__).resolve().parents[2] / "src"
N_TOKENS = 3000  # above gguf_file.KEEP_ARRAY: skipped, but counted


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """A small GGUF with every kind of value: scalars, strings, short and long arrays, tensors."""
    import gguf
    import numpy as np

    path = tmp_path_factory.mktemp("gguf") / "sample.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("sample")
    w.add_context_length(4096)
    w.add_block_count(2)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv([2, 1])  # a per-layer list (short array)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("sample.flag", True)
    w.add_int64("sample.big", -(1 << 40))
    w.add_float64("sample.f64", 0.25)
    w.add_uint16("sample.u16", 65535)
    w.add_int8("sample.i8", -5)
    w.add_token_list([f"tok{i}" for i in range(N_TOKENS)])  # a long string array
    w.add_token_scores([float(-i) for i in range(N_TOKENS)])  # a long float array
    w.add_chat_template("{{ messages }} ✓")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((N_TOKENS, 64)).astype(np.float16))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    w.add_tensor("output.weight", rng.standard_normal((64, 64)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_matches_gguf_reader(sample) -> None:
    from gguf import GGUFReader

    want = GGUFReader(str(sample))
    got = gguf_file.read_header(sample)
    for key, field in want.fields.items():
        if key.startswith("GGUF."):  # the reader's own pseudo-fields (version, counts)
            continue
        value = got.fields[key]
        if isinstance(value, gguf_file.ArrayInfo):
            assert len(value) == len(field.data) == N_TOKENS, key
        else:
            assert value == pytest.approx(field.contents()) if isinstance(value, float) else value == field.contents(), key
    assert [(t.name, t.type_name, t.n_elements, t.n_bytes, t.offset) for t in got.tensors] == [
        (t.name, t.tensor_type.name, int(t.n_elements), int(t.n_bytes), int(t.data_offset)) for t in want.tensors
    ]
    assert got.data_end == sample.stat().st_size


def test_metadata_from_the_reader(sample) -> None:
    info = read_metadata(sample)
    assert info.vocab_size == N_TOKENS  # counted without being read
    assert info.n_kv_heads == 2 and info.file_type == "F16" and info.chat_template == "{{ messages }} ✓"
    assert info.tensor_types == {"F16": N_TOKENS * 64 * 2, "F32": 64 * 4 + 64 * 64 * 4}
    assert info.output_type == "F32"


PROBE = r"""
import json, os, sys
from clawlan.model.store import resolve
info = resolve(sys.argv[1] if len(sys.argv) > 1 else None)
path = os.path.realpath(info.path)
maps = [line for line in open("/proc/self/maps") if path in line]
fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]
print(json.dumps({"maps": maps, "open": [f for f in fds if f == path],
                  "modules": sorted(m for m in ("gguf", "numpy", "yaml", "sentencepiece", "torch") if m in sys.modules),
                  "vocab": info.vocab_size}))
"""


def test_resolve_leaves_no_map_no_open_file_and_no_heavy_import() -> None:
    # A fresh interpreter, so nothing the test session imported counts.
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["vocab"] == 262144
    assert got["maps"] == [] and got["open"] == [], got
    assert got["modules"] == [], f"resolve imported {got['modules']} before llama.cpp could load"


def one_line_error(path: Path) -> str:
    with pytest.raises(ModelFileError) as e:
        read_metadata(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "again" in msg, msg
    return msg


def test_cut_inside_the_vocabulary_is_truncated(tmp_path) -> None:
    p = tmp_path / "cut.gguf"
    with store.embedded_model_path().open("rb") as f:
        p.write_bytes(f.read(1 << 20))  # the 262k-token vocabulary runs past the first MiB
    assert "truncated or corrupt" in one_line_error(p)


def header(*parts: bytes) -> bytes:
    return b"GGUF" + b"".join(parts)


def kv_string(key: str, value: str) -> bytes:
    k, v = key.encode(), value.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", 8) + struct.pack("<Q", len(v)) + v


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("version 1", header(struct.pack("<IQQ", 1, 0, 0)), "version 1"),
        ("big-endian", header(struct.pack(">IQQ", 3, 0, 0)), "version"),
        ("absurd counts", header(struct.pack("<IQQ", 3, 1 << 60, 1)), "corrupt counts"),
        ("unknown value type", header(struct.pack("<IQQ", 3, 0, 1), struct.pack("<Q", 1), b"k", struct.pack("<I", 99)), "unknown value type"),
        ("string past the end", header(struct.pack("<IQQ", 3, 0, 1), struct.pack("<Q", 1 << 40), b"k"), "past the end"),
        ("unknown tensor type",
         header(struct.pack("<IQQ", 3, 1, 1), kv_string("general.architecture", "llama"),
                struct.pack("<Q", 1), b"t", struct.pack("<IQIQ", 1, 32, 77, 0)) + b"\0" * 64,
         "type 77"),
        ("five dimensions",
         header(struct.pack("<IQQ", 3, 1, 0), struct.pack("<Q", 1), b"t", struct.pack("<I", 5), b"\0" * 64),
         "5 dimensions"),
    ],
)  # fmt: skip
def test_corrupt_headers_are_one_line(tmp_path, name, data, words) -> None:
    p = tmp_path / "bad.gguf"
    p.write_bytes(data + b"\0" * max(0, 24 - len(data)))
    msg = one_line_error(p)
    assert "truncated or corrupt" in msg and words in msg, msg
