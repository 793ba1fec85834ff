"""The planner's arithmetic, against figures anyone can recompute and against llama.cpp itself."""

from __future__ import annotations

import json
import os

import pytest

from clawlan.cli import main
from clawlan.errors import ConfigError
from clawlan.ops import planner


def test_80b_fp16_weights_are_160_gb() -> None:
    info = planner.assumed_model("80B")
    p = planner.plan_memory(info, 2048, 1, "FP16")
    assert p.weights == pytest.approx(160e9, rel=1e-9)  # 80e9 params x 2 bytes
    # The seed's base formula adds 20% on top: 80 x 2 x 1.2 = 192 GB.
    assert p.rule_weights == pytest.approx(192e9)


def test_int8_is_75_percent_less_than_fp32() -> None:
    info = planner.assumed_model("80B")
    fp32 = planner.plan_memory(info, 2048, 1, "FP32").weights
    int8 = planner.plan_memory(info, 2048, 1, "INT8").weights
    assert 1 - int8 / fp32 == pytest.approx(0.75)
    # llama.cpp's Q8_0 carries an fp16 scale per 32 weights: 8.5 bits, so 73.4% less, not 75%.
    q8 = planner.plan_memory(info, 2048, 1, "Q8_0").weights
    assert 1 - q8 / fp32 == pytest.approx(1 - 8.5 / 32)


def test_assumed_shape_is_documented_and_scaled() -> None:
    info = planner.assumed_model("80B")
    assert info.raw["assumed"] == "Llama 3.1 70B"
    assert info.n_layers == 91  # 80 layers x 80/70.6, rounded
    assert info.kv_bytes_per_token() == 91 * 8 * (128 + 128) * 2
    assert planner.assumed_model("7B").raw["assumed"] == "Llama 3.1 8B"


def test_embedded_kv_per_token_from_metadata(embedded_info) -> None:
    info = embedded_info
    kv = planner.kv_cache(info, 1024, 1)
    # 18 layers x 1 KV head x (256 + 256) x 2 bytes
    assert kv.per_token == 18 * 1 * (256 + 256) * 2 == 18_432
    # Gemma 3: every 6th layer global, 15 of 18 windowed at 512 tokens.
    assert (kv.global_layers, kv.swa_layers) == (3, 15)


def test_kv_cache_matches_llama_cpp_exactly(embedded_info, embedded_allocation) -> None:
    info = embedded_info
    raw = embedded_allocation["windowed"]
    kv = planner.kv_cache(info, 1024, 8, swa_full=False)
    # llama.cpp logged 24.00 MiB (3 global layers x 8192 cells) + 67.50 MiB (15 SWA layers x 4608 cells).
    assert (kv.cells, kv.swa_cells) == (8192, 4608)
    assert kv.bytes == raw["KV"]
    assert planner.compute_bytes(info, 512) == pytest.approx(raw["compute"], rel=0.02)
    assert planner.output_bytes(info, 8) == raw["output"]
    # The engine keeps sliding-window layers whole: 18 layers x 16,384 cells.
    full = planner.kv_cache(info, 2048, 8, swa_full=True)
    assert full.bytes == embedded_allocation["engine"]["KV"] == 18 * 16384 * 18432 / 18


def test_plan_within_15_percent_of_what_the_engine_allocates(embedded_info, embedded_allocation) -> None:
    info = embedded_info
    p = planner.plan_memory(info, 2048, 8)  # the engine's context above: 8 x 2048 = 16,384 cells
    engine = embedded_allocation["engine"]
    allocated = embedded_allocation["model"]["weights"] + engine["KV"] + engine["compute"] + engine["output"]
    # The runtime allowance is ours (interpreter + code), not a llama.cpp buffer.
    assert p.total - p.runtime == pytest.approx(allocated, rel=0.15)
    assert p.weights == pytest.approx(embedded_allocation["model"]["weights"], rel=0.05)


def test_tensor_table_matches_gguf_reader(tiny_f32, embedded_info) -> None:
    from gguf import GGUFReader

    want = [(t.name, int(t.n_bytes)) for t in GGUFReader(str(tiny_f32)).tensors]
    assert planner.tensor_table(tiny_f32) == want
    layer, other, head = planner.layer_split(embedded_info)
    assert layer * 18 + other == sum(embedded_info.tensor_types.values())
    assert other > 170e6 and head == 178_257_920  # tied: the 262k x 640 token embedding, Q8_0


def test_sliding_window_caps_the_cache() -> None:
    info = planner.assumed_model("8B")
    info.sliding_window, info.swa_pattern = 512, 2  # half the layers windowed
    short = planner.kv_cache(info, 1024, 1).bytes
    long = planner.kv_cache(info, 32768, 1).bytes
    # Only the 16 global layers grow with the context; the windowed ones stay at
    # window + one micro-batch = 1024 cells.
    per = info.n_kv_heads * (128 + 128) * 2
    assert long - short == pytest.approx(per * 16 * (32768 - 1024))


def test_max_context_is_the_largest_that_fits(embedded_info) -> None:
    info = embedded_info
    budget = 64e6
    ctx = planner.max_context(info, budget, 8)
    assert ctx % 256 == 0 and ctx > 0
    assert planner.kv_cache(info, ctx, 8).bytes <= budget
    assert planner.kv_cache(info, ctx + 256, 8).bytes > budget
    assert planner.max_context(info, 1e12, 1) == info.context_length  # capped at the trained context
    assert planner.max_context(info, 1000, 1) == 0


def test_max_sessions() -> None:
    info = planner.assumed_model("8B")
    n = planner.max_sessions(info, 8e9, 4096)
    assert n > 0
    assert planner.kv_cache(info, 4096, n).bytes <= 8e9 < planner.kv_cache(info, 4096, n + 1).bytes + 1e9


def test_gpu_split_names_layers() -> None:
    info = planner.assumed_model("80B")
    p = planner.plan_memory(info, 2048, 1, "Q4_K_M", ram=128e9, gpu=24e9)
    assert 0 < p.gpu_layers < info.n_layers
    assert f"--gpu-layers {p.gpu_layers}" in p.verdict
    full = planner.plan_memory(info, 2048, 1, "Q4_K_M", ram=128e9, gpu=80e9)
    assert full.gpu_layers == info.n_layers and "--gpu-layers -1" in full.verdict


def test_bad_quant_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"--quant 'Q9_X' is not a known quantization; use one of"):
        planner.quant("Q9_X")


def test_cli_plan_80b(capsys) -> None:
    assert main(["plan", "80B", "--ram", "128", "--no-gpu"]) == 1  # 160 GB does not fit 128 GB
    out = capsys.readouterr().out
    assert "160.00 GB" in out and "192.00 GB" in out and "DOES NOT FIT" in out
    assert main(["plan", "80B", "--quant", "Q4_K_M", "--ram", "128", "--no-gpu"]) == 0
    assert "FITS" in capsys.readouterr().out


def test_cli_plan_bad_model(capsys) -> None:
    assert main(["plan", "eighty"]) == 2
    err = capsys.readouterr().err
    assert "MODEL 'eighty' is neither" in err and len(err.strip().splitlines()) == 1


def test_verdict_and_limits_agree() -> None:
    # Whenever the verdict says the workload fits, the limits must allow at least that workload.
    info = planner.assumed_model("80B")
    for q, gpu, ram, ctx, sessions in [
        ("INT8", 96e9, 128e9, 2048, 8),
        ("Q4_K_M", 80e9, 64e9, 8192, 4),
        ("Q4_K_M", 48e9, 128e9, 2048, 4),
        ("Q4_K_M", None, 128e9, 4096, 2),
    ]:
        p = planner.plan_memory(info, ctx, sessions, q, ram=ram, gpu=gpu)
        assert p.fits, (q, gpu)
        assert p.max_ctx >= ctx and p.max_sessions >= sessions, (q, gpu, p.max_ctx, p.max_sessions)


def fake_nvidia_smi(folder, total_mib: int, free_mib: int) -> None:
    """An nvidia-smi on PATH that answers the CSV query like the real one (no GPU here)."""
    exe = folder / "nvidia-smi"
    exe.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  *name*) echo "NVIDIA RTX 4000 Ada, 550.54.14, {total_mib}, {free_mib}" ;;\n'
        f'  *) echo "{total_mib}, {free_mib}" ;;\n'
        "esac\n"
    )
    exe.chmod(0o755)


def test_plan_uses_the_detected_gpu(tmp_path, monkeypatch, capsys) -> None:
    fake_nvidia_smi(tmp_path, 20480, 19000)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert planner.detect_gpu() == (20480 * 2**20, 19000 * 2**20)
    assert main(["plan", "80B", "--quant", "Q4_K_M", "--ram", "128", "--ctx", "2048", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gpu"] == 20480 * 2**20 and 0 < doc["gpu_layers"] < 91
    assert f"--gpu-layers {doc['gpu_layers']}" in doc["verdict"]


def test_plan_a_gguf_file(tiny_f32, capsys) -> None:
    assert main(["plan", str(tiny_f32), "--ctx", "512", "--sessions", "2", "--ram", "8", "--no-gpu"]) == 0
    out = capsys.readouterr().out
    # 2 layers x 2 KV heads x (64 + 64) x 2 bytes = 1,024 B/token; 1,024 cells
    assert "1,024 B/token x 1,024 cells" in out and "weights (F32)" in out


def test_plan_default_is_what_serve_allocates(embedded_info, capsys) -> None:
    from clawlan.config.settings import Settings
    from clawlan.server.backend import plan_context

    serve = plan_context(embedded_info, Settings())
    assert main(["plan", "--no-gpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # The same KV cells for the same batch: the figure `clawlan plan` prints is the cache `serve` builds.
    assert doc["sessions"] == Settings().server.batch_size
    assert doc["kv"]["cells"] == serve.kv_tokens == 8 * 4096  # batch x 4,096, not a share of the RAM
    assert serve.max_context == 32768
    assert doc["kv"]["bytes"] == serve.kv_bytes
    # Measured once (clawlan serve on defaults, 2-core box): RSS 1.04 GB loaded, 1.09 GB after long
    # prompts. The expected RSS leaves out the compute buffer's never-written logits rows.
    assert 0.9e9 < doc["resident"] < 1.2e9 < 1.4e9 < doc["total"] < 1.6e9


def test_plan_and_doctor_never_say_the_seed(capsys) -> None:
    main(["plan", "80B", "--quant", "Q4_K_M", "--ram", "64", "--gpu-mem", "24"])
    main(["doctor", "--backend", "127.0.0.1:1", "--skip", "mdns", "--skip", "model", "--timeout", "0.5"])
    out = capsys.readouterr()
    assert "seed" not in (out.out + out.err).lower()
