"""Read a GGUF file's header (metadata and tensor table) with plain buffered reads.

The one GGUF reader of clawlan: the server (``model.store.resolve``) and the planner both use it.

Why not ``gguf.GGUFReader``: it maps the whole file with numpy and builds Python objects for
every vocabulary entry (8-12 s for Gemma's 262k tokens), and ``import gguf`` loads numpy (and
its OpenBLAS), PyYAML and, where installed, sentencepiece and mistral_common, all before
llama.cpp is loaded. Here the file is opened, read front to back through a small buffer and
closed before returning; nothing is mapped, and large arrays (the vocabulary, merges, scores)
are skipped while their length is still counted, so reading a header takes well under a second.

The format's constants (value types, quantization block sizes, file types) are the ``gguf``
package's own, taken from its ``constants`` module alone: that module imports only the standard
library, while the package's ``__init__`` imports everything above.
"""

from __future__ import annotations

import importlib.util
import math
import struct
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

GGML_MAX_DIMS = 4  # ggml.h: a tensor has at most 4 dimensions
KEEP_ARRAY = 1024  # arrays up to this length are read (per-layer lists); longer ones only counted
CHUNK = 1 << 16


class GGUFFormatError(ValueError):
    """The bytes are not a well-formed GGUF header (truncated, corrupt or unsupported)."""


@cache
def constants() -> ModuleType:
    """``gguf.constants``, without running ``gguf/__init__.py`` (which imports numpy, yaml, ...)."""
    if "gguf.constants" in sys.modules:  # the package is already loaded: use the very same enums
        return sys.modules["gguf.constants"]
    spec = importlib.util.find_spec("gguf")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the gguf package is not installed; run: pip install 'clawlan[server]'")
    where = Path(next(iter(spec.submodule_search_locations))) / "constants.py"
    mod_spec = importlib.util.spec_from_file_location("clawlan.model._gguf_constants", where)
    assert mod_spec is not None and mod_spec.loader is not None
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


@cache
def _scalar_formats() -> dict[int, str]:
    """struct format of each fixed-size GGUF value type, keyed by gguf's GGUFValueType."""
    t = constants().GGUFValueType
    return {
        t.UINT8: "B", t.INT8: "b", t.UINT16: "H", t.INT16: "h", t.UINT32: "I", t.INT32: "i",
        t.FLOAT32: "f", t.BOOL: "?", t.UINT64: "Q", t.INT64: "q", t.FLOAT64: "d",
    }  # fmt: skip


@dataclass(frozen=True)
class ArrayInfo:
    """A long array that was skipped: its element type and length (e.g. the vocabulary)."""

    element_type: int
    count: int

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class Tensor:
    name: str
    type_name: str  # gguf's GGMLQuantizationType name: Q8_0, Q4_K, F32, ...
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int
    offset: int  # absolute offset of its data in the file


@dataclass
class Header:
    version: int
    fields: dict[str, Any]  # scalars, strings, short lists, or ArrayInfo for long arrays
    tensors: list[Tensor] = field(default_factory=list)
    data_offset: int = 0  # where tensor data starts (aligned)

    @property
    def data_end(self) -> int:
        """The byte just past the last tensor's data: the least the file must hold."""
        return max((t.offset + t.n_bytes for t in self.tensors), default=self.data_offset)


class _Reader:
    """Little-endian reads over a file object through one buffer; offsets are tracked."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size = f, size
        self.buf, self.pos, self.base = b"", 0, 0  # base: file offset of buf[0]

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def _need(self, n: int) -> None:
        if self.pos + n <= len(self.buf):
            return
        if self.offset + n > self.size:
            raise GGUFFormatError(f"header ends early: {n} bytes wanted at offset {self.offset}, file has {self.size}")
        rest = self.buf[self.pos :]
        self.base += self.pos
        self.buf = rest + self.f.read(max(n - len(rest), CHUNK))
        self.pos = 0
        if len(self.buf) < n:
            raise GGUFFormatError(f"header ends early at offset {self.offset}")

    def unpack(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        self._need(n)
        (v,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += n
        return v

    def skip(self, n: int) -> None:
        if n < 0 or self.offset + n > self.size:
            raise GGUFFormatError(f"a {n}-byte value at offset {self.offset} runs past the end of the file")
        if self.pos + n <= len(self.buf):
            self.pos += n
            return
        target = self.offset + n  # beyond the buffer: seek instead of reading what is skipped
        self.f.seek(target)
        self.buf, self.pos, self.base = b"", 0, target

    def string(self) -> str:
        n = self.unpack("Q")
        if self.offset + n > self.size:
            raise GGUFFormatError(f"a string of {n} bytes at offset {self.offset} runs past the end of the file")
        self._need(n)
        v = self.buf[self.pos : self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return v

    def skip_string(self) -> None:
        self.skip(self.unpack("Q"))

    def value(self, vtype: int) -> Any:
        fmts = _scalar_formats()
        vt = constants().GGUFValueType
        if vtype in fmts:
            return self.unpack(fmts[vtype])
        if vtype == vt.STRING:
            return self.string()
        if vtype == vt.ARRAY:
            etype, count = self.unpack("I"), self.unpack("Q")
            if count > KEEP_ARRAY:
                self._skip_array(etype, count)
                return ArrayInfo(etype, count)
            return [self.value(etype) for _ in range(count)]
        raise GGUFFormatError(f"unknown value type {vtype} at offset {self.offset}")

    def _skip_array(self, etype: int, count: int) -> None:
        fmts = _scalar_formats()
        vt = constants().GGUFValueType
        if etype in fmts:
            self.skip(struct.calcsize(fmts[etype]) * count)
        elif etype == vt.STRING:
            if count * 8 > self.size - self.offset:  # every string needs at least its length
                raise GGUFFormatError(f"an array of {count} strings cannot fit in the file")
            for _ in range(count):
                self.skip_string()
        elif etype == vt.ARRAY:
            for _ in range(count):
                self._skip_array(self.unpack("I"), self.unpack("Q"))
        else:
            raise GGUFFormatError(f"unknown array element type {etype} at offset {self.offset}")


def read_header(path: str | Path) -> Header:
    """Parse ``path``'s GGUF header; raise GGUFFormatError when it is not a readable GGUF file.

    The file is closed when this returns (or raises); no mapping of it is left behind.
    """
    c = constants()
    path = Path(path)
    with path.open("rb") as f:
        size = path.stat().st_size
        r = _Reader(f, size)
        magic = r.unpack("I")
        if magic != c.GGUF_MAGIC:
            raise GGUFFormatError(f"not GGUF (magic {magic:#010x})")
        version = r.unpack("I")
        if version not in (2, 3):
            # A big-endian file reads as a huge version; version 1 predates llama.cpp's loader.
            raise GGUFFormatError(f"GGUF version {version} is not supported (llama.cpp reads versions 2 and 3)")
        n_tensors, n_kv = r.unpack("Q"), r.unpack("Q")
        if n_tensors > size or n_kv > size:  # each entry takes bytes: these counts are garbage
            raise GGUFFormatError(f"corrupt counts ({n_tensors} tensors, {n_kv} keys in {size} bytes)")
        fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            fields[key] = r.value(r.unpack("I"))
        qtypes, sizes = c.GGMLQuantizationType, c.GGML_QUANT_SIZES
        raw: list[tuple[str, tuple[int, ...], int, int]] = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.unpack("I")
            if n_dims > GGML_MAX_DIMS:
                raise GGUFFormatError(f"tensor {name!r} has {n_dims} dimensions (at most {GGML_MAX_DIMS})")
            shape = tuple(r.unpack("Q") for _ in range(n_dims))
            raw.append((name, shape, r.unpack("I"), r.unpack("Q")))
        end_of_header = r.offset
    alignment = fields.get(c.Keys.General.ALIGNMENT, c.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise GGUFFormatError(f"general.alignment {alignment!r} is not a positive integer")
    data_offset = -(-end_of_header // alignment) * alignment
    tensors = []
    for name, shape, ttype, offset in raw:
        try:
            qtype = qtypes(ttype)
            block, type_size = sizes[qtype]
        except (ValueError, KeyError):
            raise GGUFFormatError(
                f"tensor {name!r} has type {ttype}, unknown to this gguf package (a newer quantization?)"
            ) from None
        n = math.prod(shape)
        tensors.append(Tensor(name, qtype.name, shape, n, n // block * type_size, data_offset + offset))
    return Header(version, fields, tensors, data_offset)
