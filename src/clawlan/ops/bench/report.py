"""Benchmark results as a table, ratios between two servers, a plot and a JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from clawlan.ops.bench.results import ServerResult
from clawlan.ops.bench.workload import Workload


def table(results: list[ServerResult]) -> str:
    head = f"{'server':<10}{'conc':>5}{'ok':>5}{'out tok/s':>11}{'req/s':>7}{'TTFT p50':>10}{'TTFT p99':>10}{'TPOT p50':>10}{'ITL p50':>9}{'E2E p50':>9}"
    lines = [head, "-" * len(head)]
    for res in results:
        for r in res.rounds:
            lines.append(
                f"{res.name[:10]:<10}{r.concurrency:>5}{r.completed:>5}{r.output_throughput:>11.1f}"
                f"{r.request_throughput:>7.2f}{r.ttft_ms['median']:>10.0f}{r.ttft_ms['p99']:>10.0f}"
                f"{r.tpot_ms['median']:>10.1f}{r.itl_ms['median']:>9.1f}{r.e2e_ms['median']:>9.0f}"
            )
            if r.failed:
                lines.append(f"{'':10}{r.failed} failed: {'; '.join(r.errors)}")
    lines.append("(latencies in ms; TPOT/ITL per token)")
    for res in results:
        s = res.switch
        if s:
            cached = (
                f", {s.followup_cached_tokens} tokens cached" if s.followup_cached_tokens is not None else ""
            )
            # A server that sends no usage (llama-cpp-python's) leaves the length unknown, not zero.
            size = f"{s.history_tokens}-token conversation" if s.history_tokens else "conversation of unreported length"
            lines.append(
                f"context switch {res.name}: {size}, {s.other_sessions} other sessions "
                f"between turns: cold first token {s.cold_ttft_ms:.0f} ms, follow-up {s.followup_ttft_ms:.0f} ms{cached}"
            )
    return "\n".join(lines)


def div(x: float, y: float) -> float:
    return x / y if y else float("nan")


def ratios(a: ServerResult, b: ServerResult) -> list[dict[str, Any]]:
    """Per concurrency, a/b for throughput (above 1: a is faster) and latencies (below 1: a is quicker)."""
    out: list[dict[str, Any]] = []
    for ra, rb in zip(a.rounds, b.rounds, strict=False):
        out.append(
            {
                "concurrency": ra.concurrency,
                "output_throughput": div(ra.output_throughput, rb.output_throughput),
                "ttft_p50": div(ra.ttft_ms["median"], rb.ttft_ms["median"]),
                "tpot_p50": div(ra.tpot_ms["median"], rb.tpot_ms["median"]),
                "e2e_p50": div(ra.e2e_ms["median"], rb.e2e_ms["median"]),
            }
        )
    if a.switch and b.switch:
        out.append(
            {"context_switch_followup_ttft": div(a.switch.followup_ttft_ms, b.switch.followup_ttft_ms)}
        )
    return out


def ratio_table(a: ServerResult, b: ServerResult) -> str:
    lines = [
        f"ratios {a.name} / {b.name} (throughput: >1 means {a.name} is faster; latency: <1 means {a.name} is quicker)"
    ]
    lines.append(f"{'conc':>5}{'out tok/s':>11}{'TTFT p50':>10}{'TPOT p50':>10}{'E2E p50':>9}")
    for r in ratios(a, b):
        if "concurrency" in r:
            lines.append(
                f"{r['concurrency']:>5}{r['output_throughput']:>10.2f}x{r['ttft_p50']:>9.2f}x{r['tpot_p50']:>9.2f}x{r['e2e_p50']:>8.2f}x"
            )
        else:
            lines.append(f"context-switch follow-up TTFT: {r['context_switch_followup_ttft']:.2f}x")
    return "\n".join(lines)


def plot(results: list[ServerResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server; must precede pyplot
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [
        ("output throughput (tok/s)", lambda r: r.output_throughput),
        ("TTFT median (ms)", lambda r: r.ttft_ms["median"]),
        ("TPOT median (ms/token)", lambda r: r.tpot_ms["median"]),
        ("end-to-end median (ms)", lambda r: r.e2e_ms["median"]),
    ]
    for ax, (title, fn) in zip(axes.flat, panels, strict=True):
        for res in results:
            xs = [r.concurrency for r in res.rounds]
            ax.plot(xs, [fn(r) for r in res.rounds], marker="o", label=res.name)
        ax.set_title(title)
        ax.set_xlabel("concurrent clients")
        ax.set_xscale("log", base=2)
        ticks = sorted({r.concurrency for res in results for r in res.rounds})
        ax.set_xticks(ticks, [str(t) for t in ticks])  # 1, 8, 16 rather than 2^0, 2^3, 2^4
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("clawlan bench")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_json(results: list[ServerResult], workload: Workload, path: Path) -> Path:
    doc: dict[str, Any] = {
        "workload": asdict(workload) | {"api_key": "***" if workload.api_key else None},
        "servers": [r.to_dict() for r in results],
        "definitions": {
            "ttft": "request sent to first streamed token",
            "tpot": "(e2e - ttft) / (output_tokens - 1), per request",
            "itl": "gap between successive streamed chunks",
            "e2e": "request sent to end of stream",
            "output_throughput": "output tokens of a round / round wall time",
        },
    }
    if len(results) > 1:
        doc["ratios"] = ratios(results[0], results[1])
    path.write_text(json.dumps(doc, indent=2, default=str))
    return path
