"""Operations subcommands: ``plan``, ``doctor``, ``bench`` and ``quantize``.

Each lives in its own module; this one only wires them into the CLI. The
modules import their heavy dependencies (gguf, llama_cpp, matplotlib) inside
the functions that need them, so ``clawlan --help`` stays fast on a NUC.
"""

from __future__ import annotations

import argparse

from clawlan.ops import bench, doctor, plan, quantize


def register(sub: argparse._SubParsersAction) -> None:
    for module in (plan, doctor, bench, quantize):
        module.register(sub)
