"""GPU series in /metrics: NVML on NVIDIA, rocm-smi on AMD, nothing without a GPU.

CI has no GPU, so NVML and rocm-smi are stood in for by fakes here (their shapes are the
libraries' own); ``test_real_nvidia_gpu`` reads a real card where ``nvidia-smi`` exists and
was run on an H200 (docs/benchmarks.md, issue 3 notes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from clawlan.server import metrics


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def gpu_registry() -> CollectorRegistry:
    r = CollectorRegistry()
    r.register(metrics.GpuCollector())
    return r


@pytest.fixture
def fresh_nvml(monkeypatch: pytest.MonkeyPatch) -> Any:
    metrics.nvml.cache_clear()
    yield
    metrics.nvml.cache_clear()


def fake_pynvml(cards: list[tuple[int, int, int]], calls: list[str]) -> types.ModuleType:
    """A stand-in for nvidia-ml-py: ``cards`` are (utilisation %, used bytes, total bytes)."""
    m = types.ModuleType("pynvml")
    m.nvmlInit = lambda: calls.append("init")  # type: ignore[attr-defined]
    m.nvmlDeviceGetCount = lambda: len(cards)  # type: ignore[attr-defined]
    m.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=cards[h][0], memory=0)  # type: ignore[attr-defined]
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        used=cards[h][1], total=cards[h][2], free=cards[h][2] - cards[h][1]
    )
    return m


def test_nvidia_series_per_gpu(monkeypatch: pytest.MonkeyPatch, fresh_nvml: Any) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([(37, 5 << 30, 80 << 30), (0, 1 << 20, 141 << 30)], calls))
    r = gpu_registry()
    got = scrape(r)
    assert got["clawlan:gpu_utilization_perc"] == {(("gpu", "0"),): 0.37, (("gpu", "1"),): 0.0}
    assert got["clawlan:gpu_memory_used_bytes"] == {(("gpu", "0"),): 5 << 30, (("gpu", "1"),): 1 << 20}
    assert got["clawlan:gpu_memory_total_bytes"][(("gpu", "1"),)] == 141 << 30
    scrape(r)
    assert calls == ["init"], "NVML must be initialised once per process, not on every scrape"


def test_no_gpu_no_series(monkeypatch: pytest.MonkeyPatch, fresh_nvml: Any) -> None:
    broken = types.ModuleType("pynvml")

    def no_driver() -> None:
        raise OSError("NVML Shared Library Not Found")

    broken.nvmlInit = no_driver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert not [k for k in scrape(gpu_registry()) if k.startswith("clawlan:gpu")]


def test_a_gpu_failing_mid_scrape_leaves_metrics_up(monkeypatch: pytest.MonkeyPatch, fresh_nvml: Any) -> None:
    m = fake_pynvml([(10, 1, 2)], [])

    def lost(h: int) -> Any:
        raise RuntimeError("GPU is lost")

    m.nvmlDeviceGetMemoryInfo = lost  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", m)
    assert scrape(gpu_registry()) == {}  # no series, and no exception out of the scrape


def test_amd_series_from_rocm_smi(monkeypatch: pytest.MonkeyPatch, fresh_nvml: Any) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: no nvidia-ml-py
    monkeypatch.setattr(metrics, "_rocm_cache", None)  # no earlier test's output
    monkeypatch.setattr(shutil, "which", lambda name: "/opt/rocm/bin/rocm-smi" if name == "rocm-smi" else None)
    # rocm-smi --showuse --showmeminfo vram --json, as ROCm 6 prints it
    out = {
        "card0": {"GPU use (%)": "42", "VRAM Total Memory (B)": "68702699520", "VRAM Total Used Memory (B)": "1073741824"},
        "system": "ignored",
    }

    def run(cmd: list[str], **kw: Any) -> Any:
        assert cmd[0] == "rocm-smi"
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(out), stderr="")

    monkeypatch.setattr(subprocess, "run", run)
    got = scrape(gpu_registry())
    assert got["clawlan:gpu_utilization_perc"] == {(("gpu", "card0"),): 0.42}
    assert got["clawlan:gpu_memory_used_bytes"] == {(("gpu", "card0"),): 1073741824}
    assert got["clawlan:gpu_memory_total_bytes"] == {(("gpu", "card0"),): 68702699520}


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU and driver")
def test_real_nvidia_gpu(fresh_nvml: Any) -> None:
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    want = {line.split(",")[0].strip(): int(line.split(",")[1]) << 20 for line in smi.strip().splitlines()}
    got = scrape(gpu_registry())
    total = {dict(k)["gpu"]: v for k, v in got["clawlan:gpu_memory_total_bytes"].items()}
    assert total.keys() == want.keys()
    for gpu, mib in want.items():
        assert abs(total[gpu] - mib) <= 1 << 20, (gpu, total[gpu], mib)  # nvidia-smi rounds to MiB
    for v in got["clawlan:gpu_utilization_perc"].values():
        assert 0.0 <= v <= 1.0


@pytest.fixture
def fake_rocm(monkeypatch: pytest.MonkeyPatch, fresh_nvml: Any) -> list[str]:
    """rocm-smi stood in for; returns the list of its runs."""
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(shutil, "which", lambda name: "/opt/rocm/bin/rocm-smi" if name == "rocm-smi" else None)
    if hasattr(metrics, "_rocm_cache"):
        monkeypatch.setattr(metrics, "_rocm_cache", None)
    runs: list[str] = []
    out = {"card0": {"GPU use (%)": "7", "VRAM Total Memory (B)": "100", "VRAM Total Used Memory (B)": "50"}}

    def run(cmd: list[str], **kw: Any) -> Any:
        runs.append(cmd[0])
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(out), stderr="")

    monkeypatch.setattr(subprocess, "run", run)
    return runs


def test_rocm_smi_runs_once_per_few_seconds(fake_rocm: list[str]) -> None:
    r = gpu_registry()
    for _ in range(5):  # a dashboard plus a Prometheus scraping together
        assert scrape(r)["clawlan:gpu_utilization_perc"] == {(("gpu", "card0"),): 0.07}
    assert fake_rocm == ["rocm-smi"]


def test_metrics_scrape_runs_off_the_event_loop(serve: Any, fake_rocm: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow rocm-smi (it takes up to seconds) must not stall /health and every stream."""
    import threading

    import httpx

    inside, release = threading.Event(), threading.Event()
    real = subprocess.run

    def slow(cmd: list[str], **kw: Any) -> Any:
        inside.set()
        release.wait(10)
        return real(cmd, **kw)

    monkeypatch.setattr(subprocess, "run", slow)
    server = serve()
    got: dict[str, Any] = {}
    t = threading.Thread(target=lambda: got.update(r=httpx.get(server.base_url + "/metrics", timeout=30)))
    t.start()
    try:
        assert inside.wait(10)
        assert httpx.get(server.base_url + "/health", timeout=2).status_code == 200
        assert "r" not in got
    finally:
        release.set()
        t.join(30)
    assert "clawlan:gpu_utilization_perc" in got["r"].text
