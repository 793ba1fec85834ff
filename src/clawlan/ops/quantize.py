"""``clawlan quantize IN.gguf OUT.gguf --type Q4_K_M``: llama.cpp's own quantizer, made safe.

The work is ``llama_model_quantize`` from the pinned bindings; this module
adds what an operator needs around it: the input is checked to be GGUF before
native code sees it, the output is written beside its final name and renamed
only when complete (a failed run never leaves a half model that looks whole),
an existing output is kept unless ``--force``, and the output's sha256 goes
into ``SHA256SUMS`` beside it so the model store verifies it on every load.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clawlan.errors import ConfigError, DiskSpaceError, EngineError, ModelFileError
from clawlan.model.metadata import check_header
from clawlan.model.store import SUMS_NAME, sha256_file

# Types offered: llama.cpp's file types by their usual names. Read from the bindings so the list
# matches the pinned llama.cpp; the "GUESSED" sentinel and removed types are not real choices.
_SKIP = {"GUESSED", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "Q4_1_SOME_F16"}


def quant_types() -> dict[str, int]:
    import llama_cpp

    out = {}
    for name in dir(llama_cpp):
        if name.startswith("LLAMA_FTYPE_MOSTLY_"):
            short = name.removeprefix("LLAMA_FTYPE_MOSTLY_")
            if short not in _SKIP:
                out[short] = int(getattr(llama_cpp, name))
    if hasattr(llama_cpp, "LLAMA_FTYPE_ALL_F32"):
        out["F32"] = int(llama_cpp.LLAMA_FTYPE_ALL_F32)
    return out


# IQ1/IQ2 types (and IQ3_XXS) need an importance matrix; without one llama.cpp aborts the run.
NEEDS_IMATRIX = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M"}

_PROGRESS = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\]")


@dataclass
class QuantizeResult:
    input: Path
    output: Path
    type: str
    in_bytes: int
    out_bytes: int
    sha256: str
    seconds: float
    tensors: int

    @property
    def ratio(self) -> float:
        return self.out_bytes / self.in_bytes if self.in_bytes else 0.0


def write_sum(path: Path, digest: str) -> Path:
    """Put ``digest  name`` into SHA256SUMS beside ``path``, replacing an older line for the name."""
    sums = path.parent / SUMS_NAME
    lines = []
    if sums.is_file():
        for line in sums.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == path.name:
                continue
            lines.append(line)
    lines.append(f"{digest}  {path.name}")
    tmp = sums.with_name(sums.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(sums)
    return sums


# llama.cpp keeps a pointer to the log callback; keep ours alive for the process.
_callback_ref: list[object] = []


def _set_log(on_line: Callable[[str], None]) -> None:
    import llama_cpp

    @ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
    def cb(level: int, text: bytes, user: ctypes.c_void_p) -> None:
        with contextlib.suppress(Exception):  # an exception must never unwind into C
            on_line(text.decode("utf-8", "replace"))

    _callback_ref.append(cb)
    llama_cpp.llama_log_set(cb, None)


def quantize(
    src: str | Path,
    dst: str | Path,
    qtype: str,
    *,
    force: bool = False,
    threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> QuantizeResult:
    """Quantize ``src`` into ``dst`` as ``qtype``; raise a ClawlanError on any user error."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    types = quant_types()
    key = qtype.strip().upper()
    if key not in types:
        raise ConfigError(
            f"--type {qtype!r} is not a quantization llama.cpp offers; use one of {', '.join(types)}"
        )
    if key in NEEDS_IMATRIX:
        raise ConfigError(
            f"--type {key} needs an importance matrix, which clawlan does not compute; use Q2_K or a larger type"
        )
    if not src.exists():
        raise ModelFileError(f"input {src} does not exist; give the path of a .gguf model")
    check_header(src)  # non-GGUF input: one line, before llama.cpp sees it
    if dst.resolve() == src.resolve():
        raise ConfigError(f"OUT {dst} is the input file; give a different output path")
    if dst.exists() and not force:
        raise ConfigError(f"OUT {dst} already exists; pass --force to overwrite it or choose another name")
    if not dst.parent.is_dir():
        raise ConfigError(f"OUT {dst}: folder {dst.parent} does not exist; create it first")
    in_bytes = src.stat().st_size
    # The output is never larger than the input unless "quantizing" up; require its size in free space.
    need = in_bytes + (16 << 20)
    free = shutil.disk_usage(dst.parent).free
    if free < need:
        raise DiskSpaceError(
            f"not enough disk in {dst.parent} for {dst.name}: up to {need / 1e6:.0f} MB needed, "
            f"{free / 1e6:.0f} MB free; free space (df -h {dst.parent}) or write elsewhere"
        )

    import llama_cpp

    tensors = [0, 0]
    errors: list[str] = []

    def on_line(line: str) -> None:
        m = _PROGRESS.search(line)
        if m:
            tensors[0], tensors[1] = int(m.group(1)), int(m.group(2))
            if on_progress:
                on_progress(tensors[0], tensors[1])
        if "error" in line.lower() or "failed" in line.lower():
            errors.append(line.strip())

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = types[key]
    params.nthread = threads or os.cpu_count() or 1
    # F16/F32 inputs are the normal case; requantizing an already-quantized file loses quality
    # twice but is what people do with downloaded models, so allow it (llama.cpp warns).
    params.allow_requantize = True
    part = dst.with_name(dst.name + ".part")
    part.unlink(missing_ok=True)
    _set_log(on_line)
    llama_cpp.llama_backend_init()
    t0 = time.perf_counter()
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(part).encode(), ctypes.byref(params))
    finally:
        _set_log(lambda _line: None)  # quantize is over: stop routing llama.cpp's log here
    seconds = time.perf_counter() - t0
    if rc != 0 or not part.is_file():
        part.unlink(missing_ok=True)
        why = errors[-1] if errors else f"llama_model_quantize returned {rc}"
        raise EngineError(f"quantizing {src} to {key} failed: {why}")
    part.replace(dst)
    digest = sha256_file(dst)
    write_sum(dst, digest)
    return QuantizeResult(src, dst, key, in_bytes, dst.stat().st_size, digest, seconds, tensors[1])


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    bars: list[tqdm] = []

    def progress(done: int, total: int) -> None:
        # Made on the first tensor, so a refused run (bad type, existing OUT) prints no empty bar.
        if not bars:
            bars.append(
                tqdm(
                    total=total, unit="tensor", desc=f"quantize {args.type}", disable=args.quiet, leave=False
                )
            )
        bars[0].n = done
        bars[0].refresh()

    try:
        r = quantize(
            args.input, args.output, args.type, force=args.force, threads=args.threads, on_progress=progress
        )
    finally:
        for bar in bars:
            bar.close()
    print(f"input   {r.input}  {r.in_bytes / 1e6:,.1f} MB")
    print(f"output  {r.output}  {r.out_bytes / 1e6:,.1f} MB  ({r.type}, {r.ratio:.1%} of the input)")
    print(f"        {r.tensors} tensors in {r.seconds:.1f} s")
    print(f"sha256  {r.sha256}  (written to {r.output.parent / SUMS_NAME})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("quantize", help="quantize a GGUF model with llama.cpp (writes SHA256SUMS)")
    sp.add_argument("input", metavar="IN", help="input .gguf (F32/F16/BF16, or already quantized)")
    sp.add_argument("output", metavar="OUT", help="output .gguf")
    sp.add_argument("--type", required=True, help="target type, e.g. Q8_0, Q4_K_M, Q3_K_M, Q6_K, F16")
    sp.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    sp.add_argument("--threads", type=int, help="threads (default: all cores)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=run)
