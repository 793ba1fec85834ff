"""GGUF metadata: what the planner, the server and chat templates need, from the file's header."""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawlan.errors import ModelFileError
from clawlan.model.gguf_file import ArrayInfo, GGUFFormatError, constants, read_header

GGUF_MAGIC = b"GGUF"

# Architectures whose sliding-window layer pattern llama.cpp hard-codes rather
# than storing in the file: every Nth layer is global, the others use the window.
SWA_PATTERN_DEFAULTS = {"gemma3": 6, "gemma3n": 5, "cohere2": 4}


@dataclass
class ModelInfo:
    path: Path
    file_size: int
    architecture: str
    name: str
    n_params: int
    n_layers: int
    n_embd: int
    n_heads: int
    n_kv_heads: int
    head_dim_k: int
    head_dim_v: int
    context_length: int
    vocab_size: int
    sliding_window: int | None = None
    swa_pattern: int | None = None  # every swa_pattern-th layer is global
    chat_template: str | None = None
    file_type: str | None = None
    tensor_types: dict[str, int] = field(default_factory=dict)  # quant type -> bytes
    output_type: str | None = None  # the vocabulary matrix's type (output.weight, or the tied embedding)
    tensor_bytes: dict[str, int] = field(default_factory=dict, repr=False)  # tensor name -> bytes
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def swa_layers(self) -> int:
        """Layers that attend only within the sliding window."""
        if not self.sliding_window or not self.swa_pattern:
            return 0
        return sum(1 for i in range(self.n_layers) if (i + 1) % self.swa_pattern != 0)

    def kv_bytes_per_token(self, bytes_per_elem: float = 2.0) -> float:
        """KV cache for one token on every layer (K and V), f16 by default."""
        return self.n_layers * self.n_kv_heads * (self.head_dim_k + self.head_dim_v) * bytes_per_elem

    def kv_bytes(self, tokens: int, bytes_per_elem: float = 2.0) -> float:
        """KV cache for ``tokens`` tokens, sliding-window layers counted at their window."""
        per_layer = self.n_kv_heads * (self.head_dim_k + self.head_dim_v) * bytes_per_elem
        swa = self.swa_layers
        window = min(tokens, self.sliding_window or tokens)
        return per_layer * ((self.n_layers - swa) * tokens + swa * window)


def check_header(path: Path) -> None:
    """Refuse a file that is not GGUF before anything native touches it."""
    try:
        with path.open("rb") as f:
            head = f.read(24)
    except PermissionError:
        raise ModelFileError(f"cannot read model file {path}: permission denied; fix with: chmod 644 {path}") from None
    except IsADirectoryError:
        raise ModelFileError(f"model path {path} is a directory; give the .gguf file inside it") from None
    if len(head) < 4 or head[:4] != GGUF_MAGIC:
        raise ModelFileError(
            f"{path} is not a GGUF model (starts with {head[:4]!r}, expected b'GGUF'); "
            "convert it with llama.cpp's convert_hf_to_gguf.py or give a .gguf file"
        )
    if len(head) < 24:
        raise ModelFileError(f"{path} is truncated ({len(head)} bytes); copy or download the model again")


def read_metadata(path: str | Path) -> ModelInfo:
    """Parse a GGUF file's header and tensor table; raise ModelFileError if it is damaged.

    Plain reads through :mod:`clawlan.model.gguf_file`: nothing is mapped, the file is closed on
    return, and neither numpy nor the ``gguf`` package's heavy imports are loaded.
    """
    path = Path(path)
    check_header(path)
    size = path.stat().st_size
    try:
        header = read_header(path)
    except (GGUFFormatError, UnicodeDecodeError, struct.error, OSError) as exc:
        raise ModelFileError(
            f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); copy or download the model again"
        ) from None
    end = header.data_end
    if end > size:
        raise ModelFileError(
            f"{path} is truncated: {size} bytes, but its tensors need {end}; copy or download the model again"
        )
    fields = header.fields
    types: Counter[str] = Counter()
    for t in header.tensors:
        types[t.type_name] += t.n_bytes
    named = {t.name: t.type_name for t in header.tensors}
    arch = fields.get("general.architecture") or "unknown"

    def a(key: str, default: Any = None) -> Any:
        v = fields.get(f"{arch}.{key}")
        return default if v is None else v

    n_heads = a("attention.head_count", 0)
    n_heads = max(n_heads) if isinstance(n_heads, list) else n_heads
    n_kv = a("attention.head_count_kv", n_heads)
    n_kv = max(n_kv) if isinstance(n_kv, list) else n_kv
    n_embd = a("embedding_length", 0)
    head_k = a("attention.key_length", (n_embd // n_heads) if n_heads else 0)
    head_v = a("attention.value_length", head_k)
    window = a("attention.sliding_window")
    pattern = a("attention.sliding_window_pattern")
    if isinstance(pattern, (list, ArrayInfo)):  # some converters store a per-layer bool list
        pattern = None
    if window and pattern is None:
        pattern = SWA_PATTERN_DEFAULTS.get(arch)
    tokens = fields.get("tokenizer.ggml.tokens")
    ftype = fields.get("general.file_type")
    try:
        ftype_name = constants().LlamaFileType(ftype).name.removeprefix("MOSTLY_") if ftype is not None else None
    except ValueError:  # a file type newer than the installed gguf package
        ftype_name = str(ftype) if ftype is not None else None
    template = fields.get("tokenizer.chat_template")
    return ModelInfo(
        path=path,
        file_size=size,
        architecture=arch,
        name=fields.get("general.name") or path.stem,
        n_params=sum(t.n_elements for t in header.tensors),
        n_layers=a("block_count", 0),
        n_embd=n_embd,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim_k=head_k,
        head_dim_v=head_v,
        context_length=a("context_length", 2048),
        vocab_size=len(tokens) if tokens is not None else a("vocab_size", 0),
        sliding_window=window,
        swa_pattern=pattern,
        chat_template=template if isinstance(template, str) else None,
        file_type=ftype_name,
        tensor_types=dict(types),
        output_type=named.get("output.weight", named.get("token_embd.weight")),
        tensor_bytes={t.name: t.n_bytes for t in header.tensors},
    )
