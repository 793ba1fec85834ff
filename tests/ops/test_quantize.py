"""clawlan quantize on tiny models the tests build themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from clawlan.cli import main
from clawlan.errors import ConfigError, ModelFileError
from clawlan.model.metadata import read_metadata
from clawlan.model.store import check_file, expected_sha256, sha256_file
from clawlan.ops.quantize import quantize, write_sum

from .conftest import capture_llama_log

llama_cpp = pytest.importorskip("llama_cpp")


def generate(path: Path, n: int = 8) -> list[int]:
    """Load ``path`` with llama.cpp, feed a prompt and greedily decode ``n`` tokens."""
    capture_llama_log()  # keep llama.cpp's load log out of the test output
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
    assert model, f"llama.cpp could not load {path}"
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads, cp.n_threads_batch = 128, 64, 64, 1, 1
    ctx = llama_cpp.llama_init_from_model(model, cp)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    text = b"hello world, the office model"
    buf = (llama_cpp.llama_token * 64)()
    n_tok = llama_cpp.llama_tokenize(vocab, text, len(text), buf, 64, True, False)
    assert n_tok > 3
    sampler = llama_cpp.llama_sampler_init_greedy()
    out: list[int] = []
    batch = llama_cpp.llama_batch_get_one(buf, n_tok)
    try:
        for _ in range(n):
            assert llama_cpp.llama_decode(ctx, batch) == 0
            tok = llama_cpp.llama_sampler_sample(sampler, ctx, -1)
            out.append(tok)
            one = (llama_cpp.llama_token * 1)(tok)
            batch = llama_cpp.llama_batch_get_one(one, 1)
    finally:
        llama_cpp.llama_sampler_free(sampler)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    assert all(0 <= t < n_vocab for t in out)
    return out


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K_M", "Q3_K_M"])
def test_quantize_loads_and_generates(tiny_f32: Path, tmp_path: Path, qtype: str) -> None:
    out = tmp_path / f"tiny-{qtype}.gguf"
    seen: list[tuple[int, int]] = []
    r = quantize(tiny_f32, out, qtype, threads=1, on_progress=lambda d, t: seen.append((d, t)))
    assert r.tensors == 21 and seen[-1] == (21, 21)
    assert r.out_bytes == out.stat().st_size < r.in_bytes / 3  # 32-bit weights down to <= 8.5 bits
    info = read_metadata(out)
    assert info.file_type == qtype
    # The checksum goes into SHA256SUMS, so the model store now verifies the file.
    assert expected_sha256(out) == sha256_file(out) == r.sha256
    check_file(out)
    assert len(generate(out)) == 8


def test_quantize_f16_input(tiny_f16: Path, tmp_path: Path) -> None:
    r = quantize(tiny_f16, tmp_path / "q8.gguf", "q8_0", threads=1)
    assert r.type == "Q8_0" and r.out_bytes < r.in_bytes
    generate(r.output, 2)


def test_refuses_overwrite_without_force(tiny_f32: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        quantize(tiny_f32, out, "Q8_0")
    assert out.read_bytes() == b"keep me"
    quantize(tiny_f32, out, "Q8_0", force=True, threads=1)
    assert out.read_bytes()[:4] == b"GGUF"


def test_non_gguf_input(tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="is not a GGUF model"):
        quantize(bad, tmp_path / "o.gguf", "Q8_0")
    assert not (tmp_path / "o.gguf").exists() and not (tmp_path / "o.gguf.part").exists()


def test_unsupported_type(tiny_f32: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"--type 'Q9_Z' is not a quantization llama.cpp offers; use one of .*Q4_K_M"
    ):
        quantize(tiny_f32, tmp_path / "o.gguf", "Q9_Z")
    with pytest.raises(ConfigError, match="importance matrix"):
        quantize(tiny_f32, tmp_path / "o.gguf", "IQ2_XS")


def test_write_sum_replaces_only_its_line(tmp_path: Path) -> None:
    (tmp_path / "SHA256SUMS").write_text("aaa  other.gguf\nbbb  m.gguf\n")
    write_sum(tmp_path / "m.gguf", "ccc")
    assert (tmp_path / "SHA256SUMS").read_text().splitlines() == ["aaa  other.gguf", "ccc  m.gguf"]


def test_cli_quantize(tiny_f32: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.gguf"
    assert main(["quantize", str(tiny_f32), str(out), "--type", "Q4_K_M", "--quiet", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "Q4_K_M" in text and "sha256" in text and "MB" in text
    assert main(["quantize", str(tiny_f32), str(out), "--type", "Q4_K_M"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--force" in err


def test_quantized_model_answers_through_the_server(tiny_f32: Path, tmp_path: Path) -> None:
    """The quantized file, checksum and all, loads in clawlan's engine and answers over HTTP."""
    import httpx

    pytest.importorskip("clawlan.server.serving")
    from clawlan.config.settings import ServerSection, Settings
    from clawlan.server.backend import Backend
    from clawlan.server.serving import RunningServer

    out = quantize(tiny_f32, tmp_path / "tiny-q4.gguf", "Q4_K_M", threads=1).output
    settings = Settings(
        server=ServerSection(model=str(out), max_context_tokens=256, kv_tokens=1024, threads=1, batch_size=2)
    )
    server = RunningServer(settings, Backend(settings), port=0)
    server.start()
    try:
        assert server.backend.ready, server.backend.error
        r = httpx.post(
            f"{server.base_url}/v1/completions",
            json={
                "model": "tiny-q4",
                "prompt": "hello world",
                "max_tokens": 6,
                "ignore_eos": True,
                "temperature": 0,
            },
            timeout=60,
            trust_env=False,
        )
    finally:
        server.stop()
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 6
