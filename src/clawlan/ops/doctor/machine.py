"""This machine as a model server: the model file (permissions, checksum), disk, GPU and llama.cpp build."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from clawlan.ops.doctor.report import Results, Status


class MachineChecks(Results):
    """model, disk, gpu and llama-backend; each appends results and never raises."""

    model: str | None
    model_sha256: str | None

    def check_model(self) -> None:
        from clawlan.model import store

        if self.model:
            path = Path(self.model).expanduser()
            want = self.model_sha256
        else:
            path = store.cache_dir() / store.EMBEDDED_NAME
            want = store.EMBEDDED_SHA256
            if not path.exists():
                self.add(
                    "model",
                    Status.SKIP,
                    f"embedded model not assembled yet ({path})",
                    "clawlan serve assembles it on first start",
                )
                self._disk(path.parent, store.EMBEDDED_SIZE)
                return
        if not path.exists():
            self.add(
                "model", Status.FAIL, f"model file {path} does not exist", "check server.model / --model"
            )
            return
        st = path.stat()
        readable_by_others = bool(st.st_mode & 0o004)
        dir_ok = bool(path.parent.stat().st_mode & 0o001)
        if not os.access(path, os.R_OK) or not st.st_mode & 0o444:
            self.add(
                "model-perms",
                Status.FAIL,
                f"{path} is not readable (mode {st.st_mode & 0o777:o})",
                f"chmod 644 {path}",
            )
        elif not readable_by_others or not dir_ok:
            self.add(
                "model-perms",
                Status.WARN,
                f"{path} mode {st.st_mode & 0o777:o}, folder mode {path.parent.stat().st_mode & 0o777:o}: "
                "a service user other than the owner cannot read it",
                f"chmod 755 {path.parent} && chmod 644 {path}",
            )
        else:
            self.add("model-perms", Status.PASS, f"{path} readable (mode {st.st_mode & 0o777:o})")
        self._disk(path.parent, st.st_size)
        want = (want or store.expected_sha256(path) or "").lower()
        if not want:
            self.add(
                "model-checksum",
                Status.WARN,
                f"no checksum known for {path.name}",
                f"record one: sha256sum {path.name} > {path.parent / store.SUMS_NAME} (or set server.model_sha256)",
            )
            return
        stamp = path.with_suffix(".verified")
        if stamp.is_file() and stamp.read_text().strip() == want and stamp.stat().st_mtime >= st.st_mtime:
            self.add("model-checksum", Status.PASS, f"sha256 {want[:16]}... verified earlier ({stamp.name})")
            return
        got = store.sha256_file(path)
        if got == want:
            self.add("model-checksum", Status.PASS, f"sha256 {got[:16]}... matches")
        else:
            self.add(
                "model-checksum",
                Status.FAIL,
                f"sha256 of {path.name} is {got[:16]}..., expected {want[:16]}...",
                "the file is damaged or a different version: copy the model again",
            )

    def _disk(self, folder: Path, model_bytes: int) -> None:
        folder = folder if folder.exists() else Path.home()
        du = shutil.disk_usage(folder)
        pct = du.used / du.total * 100
        if du.free < 1 << 30:
            self.add(
                "disk",
                Status.FAIL if du.free < model_bytes else Status.WARN,
                f"{du.free / 1e9:.2f} GB free on {folder} ({pct:.0f}% used)",
                f"free space: df -h {folder}; remove old models or logs",
            )
        else:
            self.add("disk", Status.PASS, f"{du.free / 1e9:.1f} GB free on {folder} ({pct:.0f}% used)")

    def check_gpu(self) -> None:
        exe = shutil.which("nvidia-smi")
        if not exe:
            self.add(
                "gpu", Status.SKIP, "no NVIDIA GPU driver (nvidia-smi not found): inference runs on the CPU"
            )
            return
        try:
            r = subprocess.run(
                [
                    exe,
                    "--query-gpu=name,driver_version,memory.total,memory.free",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.add(
                "gpu", Status.FAIL, f"nvidia-smi failed: {exc}", "reinstall the NVIDIA driver; check dmesg"
            )
            return
        if r.returncode != 0:
            self.add(
                "gpu",
                Status.FAIL,
                f"nvidia-smi: {r.stderr.strip() or r.stdout.strip()}",
                "reinstall or reload the NVIDIA driver",
            )
            return
        for line in r.stdout.strip().splitlines():
            name, driver, total, free = (x.strip() for x in line.split(","))
            st = Status.PASS if float(free) > 0.1 * float(total) else Status.WARN
            self.add(
                "gpu",
                st,
                f"{name}, driver {driver}, {float(free) / 1024:.1f} of {float(total) / 1024:.1f} GiB free",
                ""
                if st is Status.PASS
                else "stop other GPU processes (nvidia-smi lists them) or lower batch_size",
            )

    def check_backend(self) -> None:
        """Which backend and devices this machine's llama.cpp library has (CPU, CUDA, Vulkan, ROCm)."""
        try:
            from clawlan.engine.devices import GPU_BUILD_HINT, backend_info

            info = backend_info()
        except Exception as exc:  # no server extras here (a front-end box), or a library that does not load
            self.add("llama-backend", Status.SKIP, f"llama.cpp not loadable here ({type(exc).__name__}: {exc})")
            return
        gpus = [d for d in info.devices if d.type in ("GPU", "IGPU")]
        listed = "; ".join(
            f"{d.name} {d.description}" + (f" ({d.memory_free / 2**30:.1f} of {d.memory_total / 2**30:.1f} GiB free)" if d.memory_total else "")
            for d in gpus
        )
        if gpus:
            self.add("llama-backend", Status.PASS, f"llama.cpp {info.name} build: {listed}")
        elif any(c.name == "gpu" and c.status is not Status.SKIP for c in self.checks):
            self.add(
                "llama-backend",
                Status.WARN,
                "a GPU is present but this llama.cpp build is CPU-only: --gpu-layers has no effect",
                f"build for the GPU: {GPU_BUILD_HINT}",
            )
        else:
            self.add("llama-backend", Status.PASS, f"llama.cpp {info.name} build (no GPU backend compiled in)")
