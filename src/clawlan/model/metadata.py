"""GGUF metadata, read with the ``gguf`` package (no llama.cpp needed)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawlan.errors import ModelFileError

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


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # very old gguf packages lack contents(); metadata is optional
        return None


def read_metadata(path: str | Path) -> ModelInfo:
    """Parse a GGUF file's header and tensor table; raise ModelFileError if it is damaged."""
    from gguf import GGUFReader  # numpy-heavy; only the server side needs it

    path = Path(path)
    check_header(path)
    size = path.stat().st_size
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:
        raise ModelFileError(
            f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); copy or download the model again"
        ) from None
    end = 0
    types: Counter[str] = Counter()
    n_params = 0
    named: dict[str, str] = {}
    for t in reader.tensors:
        end = max(end, int(t.data_offset) + int(t.n_bytes))
        types[t.tensor_type.name] += int(t.n_bytes)
        n_params += int(t.n_elements)
        if t.name in ("output.weight", "token_embd.weight"):
            named[t.name] = t.tensor_type.name
    if end > size:
        raise ModelFileError(
            f"{path} is truncated: {size} bytes, but its tensors need {end}; copy or download the model again"
        )
    arch = _field(reader, "general.architecture") or "unknown"

    def a(key: str, default: Any = None) -> Any:
        v = _field(reader, f"{arch}.{key}")
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
    if isinstance(pattern, list):  # some converters store a per-layer bool list
        pattern = None
    if window and pattern is None:
        pattern = SWA_PATTERN_DEFAULTS.get(arch)
    tokens = _field(reader, "tokenizer.ggml.tokens")
    ftype = _field(reader, "general.file_type")
    try:
        from gguf import LlamaFileType

        ftype_name = LlamaFileType(ftype).name.removeprefix("MOSTLY_") if ftype is not None else None
    except Exception:
        ftype_name = str(ftype) if ftype is not None else None
    return ModelInfo(
        path=path,
        file_size=size,
        architecture=arch,
        name=_field(reader, "general.name") or path.stem,
        n_params=n_params,
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
        chat_template=_field(reader, "tokenizer.chat_template"),
        file_type=ftype_name,
        tensor_types=dict(types),
        output_type=named.get("output.weight", named.get("token_embd.weight")),
    )
