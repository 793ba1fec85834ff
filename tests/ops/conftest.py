"""Fixtures for the operations tests."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

# llama.cpp calls back into Python for every log line; the callback object must outlive every
# call, so it lives at module level and only the list it appends to changes.
_LOG: list[str] = []


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _log_cb(level: int, text: bytes, user: ctypes.c_void_p) -> None:
    _LOG.append(text.decode("utf-8", "replace"))


def capture_llama_log() -> list[str]:
    """Route llama.cpp's log into a list (cleared) and return it."""
    import llama_cpp

    llama_cpp.llama_log_set(_log_cb, None)
    _LOG.clear()
    return _LOG


def buffer_sizes(lines: list[str]) -> dict[str, float]:
    """Sum llama.cpp's 'X buffer size = N MiB' lines by kind (model, KV, compute, output), in bytes."""
    out: dict[str, float] = {}
    for line in lines:
        m = re.search(r"(model|KV|compute|output) buffer size\s*=\s*([\d.]+) MiB", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2)) * (1 << 20)
    return out


@pytest.fixture(scope="session")
def embedded_info(model_info):  # noqa: ANN001, ANN201 (tests/conftest.py's session fixture)
    # Parsing Gemma's 262k-token vocabulary takes gguf ~12 s: reuse the session's one read.
    return model_info


@pytest.fixture(scope="session")
def embedded_allocation(llama_model) -> dict[str, dict[str, float]]:  # noqa: ANN001
    """What llama.cpp allocates for the embedded model, on the session's one loaded model.

    ``engine``: a context made by the engine's own ``Context`` class (16,384 unified cells for 8
    sequences, micro-batch 512, sliding-window layers kept whole). ``windowed``: the same through
    the raw bindings with ``swa_full`` off, as llama-server allocates (8,192 cells, 8 sequences).
    ``model``: llama_model_size, the weights the engine reports.
    """
    llama_cpp = pytest.importorskip("llama_cpp")
    from clawlan.engine import llama as engine_llama

    log = capture_llama_log()
    try:
        ctx = engine_llama.Context(llama_model, n_ctx=16384, n_batch=512, n_seq=8, threads=1)
        engine = buffer_sizes(list(log))
        ctx.close()
        log.clear()
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_seq_max, cp.kv_unified, cp.swa_full = 8192, 8, True, False
        cp.n_batch = cp.n_ubatch = 512
        cp.n_threads = cp.n_threads_batch = 1
        raw = llama_cpp.llama_init_from_model(llama_model.ptr, cp)
        assert raw, "llama.cpp could not create a context"
        windowed = buffer_sizes(list(log))
        llama_cpp.llama_free(raw)
    finally:
        # Hand llama.cpp's log back to the engine's quiet handler.
        llama_cpp.llama_log_set(engine_llama._quiet_log, None)
    return {"engine": engine, "windowed": windowed, "model": {"weights": float(llama_model.size_bytes)}}


def build_tiny_llama(path: Path, dtype: str = "f32", seed: int = 0) -> Path:
    """Write a 2-layer llama-architecture GGUF with random weights that llama.cpp can load.

    Widths are multiples of 256 so every K-quant applies to every matrix. The vocabulary is
    SentencePiece-style: <unk>, <s>, </s>, the 256 byte tokens (so any text tokenizes) and a few words.
    """
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    n_embd, n_ff, n_layer, n_head, n_kv = 256, 512, 2, 4, 2
    head_dim = n_embd // n_head
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += ["▁hello", "▁world", "▁the", "▁office", "▁model"]
    types = [2, 3, 3] + [6] * 256 + [1] * 5  # unknown, control, control, byte..., normal
    scores = [0.0] * 259 + [-1.0, -2.0, -3.0, -4.0, -5.0]
    n_vocab = len(tokens)
    np_type = {"f32": np.float32, "f16": np.float16}[dtype]

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama-test")
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np_type)

    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)  # llama.cpp keeps norms in f32

    w.add_tensor("token_embd.weight", mat(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", norm(n_embd))
    w.add_tensor("output.weight", mat(n_vocab, n_embd))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", norm(n_embd))
        w.add_tensor(f"blk.{i}.attn_q.weight", mat(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.attn_k.weight", mat(n_kv * head_dim, n_embd))
        w.add_tensor(f"blk.{i}.attn_v.weight", mat(n_kv * head_dim, n_embd))
        w.add_tensor(f"blk.{i}.attn_output.weight", mat(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", norm(n_embd))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", mat(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", mat(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", mat(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="session")
def tiny_f32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-f32.gguf", "f32")


@pytest.fixture(scope="session")
def tiny_f16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-f16.gguf", "f16")
