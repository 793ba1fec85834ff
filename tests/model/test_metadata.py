"""GGUF metadata of the embedded Gemma 3 270M, read from its header."""

from __future__ import annotations

import pytest

from clawlan.model import store


@pytest.fixture(scope="module")
def info(model_info):
    # tests/conftest.py's session ModelInfo (what resolve returned).
    assert model_info.path == store.embedded_model_path()
    return model_info


def test_read_metadata_is_what_resolve_returns(info):
    assert info.n_layers == 18 and info.path.name == store.EMBEDDED_NAME


def test_embedded_architecture(info):
    assert info.architecture == "gemma3"
    assert info.n_layers == 18
    assert info.n_heads == 4
    assert info.n_kv_heads == 1
    assert info.head_dim_k == info.head_dim_v == 256
    assert info.n_embd == 640
    assert info.context_length == 32768
    assert info.sliding_window == 512
    assert info.swa_pattern == 6
    assert info.swa_layers == 15  # every 6th layer is global
    assert info.vocab_size == 262144
    assert info.file_size == store.EMBEDDED_SIZE


def test_embedded_parameters_and_quantization(info):
    assert 250e6 < info.n_params < 300e6
    assert info.file_type == "Q4_K_M"
    assert "Q4_K" in info.tensor_types
    assert info.output_type == "Q8_0"  # the tied embedding is the vocabulary matrix (no output.weight)
    assert sum(info.tensor_types.values()) <= info.file_size
    assert info.chat_template is None  # the base model carries no chat template


def test_kv_bytes(info):
    assert info.kv_bytes_per_token() == 18432
    # Sliding-window layers stop growing at the window: 3 global layers grow with every token.
    per_layer = 1 * (256 + 256) * 2
    assert info.kv_bytes(100) == 18 * per_layer * 100
    assert info.kv_bytes(4096) == per_layer * (3 * 4096 + 15 * 512)
