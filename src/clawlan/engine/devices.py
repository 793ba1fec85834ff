"""What the loaded llama.cpp library runs on (its backend and devices), and placing a model there.

The pinned llama-cpp-python bindings do not wrap ggml's device registry, but they load
libllama with RTLD_GLOBAL and libllama links libggml, so ``ggml_backend_dev_*`` resolve
through the bindings' own library handle. Where a build lacks them, llama.cpp's
``llama_supports_gpu_offload`` and ``llama_print_system_info`` still answer.

The answers are for ``clawlan doctor``, ``/health`` and ``/v1/models`` ("backend": {"name":
"CUDA", "devices": [...]}), and for one-line errors: GPU layers asked of a CPU-only build, more
layers than the model has, a device out of memory at load.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from clawlan.errors import ConfigError, ModelFileError

log = logging.getLogger(__name__)

# ggml-backend.h: enum ggml_backend_dev_type
DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "IGPU", 3: "ACCEL"}
GPU_BUILD_HINT = "make run GPU=cuda (or GPU=vulkan, GPU=rocm)"


@dataclass(frozen=True)
class Device:
    name: str  # ggml's device name: CPU, CUDA0, Vulkan0, ...
    description: str  # e.g. "NVIDIA H200" or the CPU's model name
    type: str  # CPU, GPU, IGPU (integrated, host memory) or ACCEL (BLAS, AMX)
    backend: str  # the backend that registered it: CPU, CUDA, Vulkan, ROCm, ...
    memory_total: int = 0
    memory_free: int = 0


@dataclass(frozen=True)
class BackendInfo:
    name: str  # the first GPU-like device's backend, else "CPU"
    gpu_offload: bool  # llama_supports_gpu_offload(): layers can go to a device
    devices: list[Device] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "gpu_offload": self.gpu_offload, "devices": [asdict(d) for d in self.devices]}


def _ggml(lib: Any) -> dict[str, Any] | None:
    """ctypes functions for ggml's device registry, or None when the library does not export them."""
    spec = {
        "ggml_backend_dev_count": ([], ctypes.c_size_t),
        "ggml_backend_dev_get": ([ctypes.c_size_t], ctypes.c_void_p),
        "ggml_backend_dev_name": ([ctypes.c_void_p], ctypes.c_char_p),
        "ggml_backend_dev_description": ([ctypes.c_void_p], ctypes.c_char_p),
        "ggml_backend_dev_type": ([ctypes.c_void_p], ctypes.c_int),
        "ggml_backend_dev_memory": (
            [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)],
            None,
        ),
        "ggml_backend_dev_backend_reg": ([ctypes.c_void_p], ctypes.c_void_p),
        "ggml_backend_reg_name": ([ctypes.c_void_p], ctypes.c_char_p),
    }
    out = {}
    for name, (args, res) in spec.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            return None
        fn.argtypes, fn.restype = args, res
        out[name] = fn
    return out


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace")


@cache
def backend_info() -> BackendInfo:
    """The loaded library's backend and devices (memory as at the first call; cached)."""
    import llama_cpp as L
    import llama_cpp.llama_cpp as bindings

    from clawlan.engine.llama import init_backend

    init_backend()
    offload = bool(L.llama_supports_gpu_offload())
    fns = _ggml(getattr(bindings, "_lib", None))  # the CDLL of libllama the bindings loaded
    if fns is None:  # an older or stripped build: the system-info line names the compiled backends
        info = _text(L.llama_print_system_info())
        name = next((b for b in ("CUDA", "ROCm", "HIP", "Vulkan", "Metal", "SYCL") if f"{b} :" in info), "CPU")
        return BackendInfo(name if offload else "CPU", offload, [])
    devices = []
    for i in range(fns["ggml_backend_dev_count"]()):
        dev = fns["ggml_backend_dev_get"](i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        fns["ggml_backend_dev_memory"](dev, ctypes.byref(free), ctypes.byref(total))
        reg = fns["ggml_backend_dev_backend_reg"](dev)
        devices.append(
            Device(
                name=_text(fns["ggml_backend_dev_name"](dev)),
                description=_text(fns["ggml_backend_dev_description"](dev)).strip(),
                type=DEVICE_TYPES.get(fns["ggml_backend_dev_type"](dev), "?"),
                backend=_text(fns["ggml_backend_reg_name"](reg)) if reg else "?",
                memory_total=int(total.value),
                memory_free=int(free.value),
            )
        )
    gpu = next((d.backend for d in devices if d.type in ("GPU", "IGPU")), None)
    return BackendInfo(gpu or "CPU", offload, devices)


def gpu_layers(requested: int, n_layers: int, info: BackendInfo | None = None) -> int:
    """The layers to offload for a ``--gpu-layers`` value: 0 on a CPU-only build (with a warning
    naming the GPU build), -1 (all) for more than the model has, one-line error below -1."""
    if requested < -1:
        raise ConfigError(f"--gpu-layers {requested}: use -1 (all layers), 0 (CPU only) or a layer count")
    if requested == 0:
        return 0
    info = info or backend_info()
    if not info.gpu_offload:
        log.warning(
            "--gpu-layers %d asked for, but this llama.cpp build is CPU-only: running on the CPU; "
            "build for a GPU with: %s",
            requested,
            GPU_BUILD_HINT,
        )
        return 0
    # llama.cpp counts the output layer as one more: n_layers + 1 offloads everything. A larger
    # count means "all" (llama-server's -ngl 99 idiom), so clamp rather than refuse it.
    if requested > n_layers + 1:
        log.warning(
            "--gpu-layers %d is more than the model's %d layers (+1 output layer): offloading all of them (as -1)",
            requested,
            n_layers,
        )
        return -1
    return requested


def load_model(path: str | Path, layers: int) -> Any:
    """llama.cpp's model with ``layers`` offloaded; a failure with layers on a device is most
    likely device memory, so the one-line error says what to lower."""
    from clawlan.engine.llama import Model

    try:
        return Model(path, gpu_layers=layers)
    except ModelFileError:
        if layers == 0:
            raise
        info = backend_info()
        free = ", ".join(f"{d.name} {d.memory_free / 2**30:.1f} GiB free" for d in info.devices if d.type != "CPU")
        raise ModelFileError(
            f"llama.cpp could not load {path} with {'all' if layers < 0 else layers} layers on the "
            f"{info.name} device ({free or 'no device memory reported'}): most likely out of device memory; "
            f"lower --gpu-layers (clawlan plan {path} --gpu-mem GB says how many fit) or use --gpu-layers 0"
        ) from None
