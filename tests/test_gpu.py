"""The GPU switch and what the library reports, as far as a CPU machine can check them.

CUDA itself is not here: these tests run the CPU build of llama.cpp. They check that the device
registry is read through the bindings, that bad GPU input is one line, that /health and
/v1/models name the backend, and that `make run GPU=...` fails fast without the toolkit.
`bench/gpu.sh --tests` runs this file on a CUDA build too, where the build's own device is checked.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from clawlan.engine import devices
from clawlan.errors import ConfigError, ModelFileError

ROOT = Path(__file__).resolve().parents[1]
GPU_BUILD = devices.backend_info().gpu_offload  # the pip wheel here is a CPU build; bench/gpu.sh's is not


def test_this_build_reports_its_devices() -> None:
    info = devices.backend_info()
    (cpu,) = [d for d in info.devices if d.type == "CPU"]
    assert cpu.backend == "CPU" and cpu.memory_total > 0
    if GPU_BUILD:
        gpus = [d for d in info.devices if d.type in ("GPU", "IGPU")]
        assert gpus and info.name == gpus[0].backend != "CPU" and gpus[0].memory_total > 0
    else:
        assert info.name == "CPU"


@pytest.mark.skipif(GPU_BUILD, reason="about CPU-only builds of llama.cpp")
def test_gpu_layers_on_a_cpu_build_warn_and_run_on_the_cpu(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert devices.gpu_layers(-1, 18) == 0
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "CPU-only" in msg and "make run GPU=cuda" in msg and "\n" not in msg


def test_gpu_layers_beyond_the_model_mean_all(caplog) -> None:
    gpu = devices.BackendInfo("CUDA", True, [devices.Device("CUDA0", "NVIDIA H200", "GPU", "CUDA", 1 << 37, 1 << 37)])
    assert devices.gpu_layers(10, 22, gpu) == 10
    assert devices.gpu_layers(23, 22, gpu) == 23  # 22 layers + the output layer
    with caplog.at_level(logging.WARNING):
        assert devices.gpu_layers(99, 22, gpu) == -1  # llama-server's -ngl 99 idiom: everything
    assert "more than the model's 22 layers" in caplog.text
    with pytest.raises(ConfigError, match="--gpu-layers -2: use -1"):
        devices.gpu_layers(-2, 22, gpu)


def test_a_failed_load_with_layers_on_a_device_is_one_line(tmp_path) -> None:
    """llama.cpp returns NULL (as on a device out of memory): one line naming --gpu-layers."""
    import gguf

    path = tmp_path / "no-tensors.gguf"  # a valid header llama.cpp cannot build a model from
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelFileError) as e:
        devices.load_model(path, 5)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "--gpu-layers" in msg and "device memory" in msg
    with pytest.raises(ModelFileError, match="could not load"):  # on the CPU, the plain message
        devices.load_model(path, 0)


def test_health_and_models_name_the_backend(backend) -> None:
    health = httpx.get(backend.base_url + "/health").json()
    assert health["backend"] == devices.backend_info().to_dict() | {"devices": health["backend"]["devices"]}
    assert [d["name"] for d in health["backend"]["devices"]] == [d.name for d in devices.backend_info().devices]
    (model,) = httpx.get(backend.base_url + "/v1/models").json()["data"]
    assert model["meta"]["backend"] == health["backend"]


def make(*args: str, path: str) -> subprocess.CompletedProcess:
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    env = dict(os.environ, PATH=path)
    return subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)


def test_make_gpu_without_toolkit_is_one_line_before_building(tmp_path) -> None:
    # make and a shell stay reachable through a folder of links; no nvcc, glslc or hipcc there.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("make", "sh", "ls", "rm", "touch", "python3"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    for backend, tool in (("cuda", "nvcc"), ("vulkan", "glslc"), ("rocm", "hipcc")):
        out = make("run", f"GPU={backend}", path=str(bin_dir))
        assert out.returncode == 2
        err = out.stderr.strip()
        assert len(err.splitlines()) == 1 and f"GPU={backend} needs {tool} on PATH" in err, err
        assert "pip" not in out.stdout  # nothing would have been built
    out = make("run", "GPU=metal", path=str(bin_dir))
    assert out.returncode == 2 and "use GPU=cuda, GPU=vulkan or GPU=rocm" in out.stderr


def test_make_gpu_builds_with_the_backend_flag(tmp_path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvcc"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    out = make("run", "GPU=cuda", path=f"{bin_dir}:{os.environ['PATH']}")
    assert out.returncode == 0, out.stderr
    assert 'CMAKE_ARGS="-DGGML_CUDA=on" FORCE_CMAKE=1' in out.stdout and "--no-cache-dir" in out.stdout
    assert "llama-cpp-python==0.3.36" in out.stdout and ".llama-cuda" in out.stdout
    assert "clawlan run --gpu-layers -1" in out.stdout
    cpu = make("run", path=os.environ["PATH"])
    assert cpu.returncode == 0 and "--gpu-layers" not in cpu.stdout and ".llama-cpu" in cpu.stdout
