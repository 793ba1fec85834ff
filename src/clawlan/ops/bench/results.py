"""A round's and a server's figures, from the requests' timings (vLLM's definitions)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from clawlan.ops.bench.request import RequestResult


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    """mean, median, p90 and p99 in milliseconds (inputs in seconds)."""
    v = [x * 1000 for x in values]
    if not v:
        return {"mean": float("nan"), "median": float("nan"), "p90": float("nan"), "p99": float("nan")}
    return {
        "mean": statistics.fmean(v),
        "median": statistics.median(v),
        "p90": _pct(v, 90),
        "p99": _pct(v, 99),
    }


@dataclass
class RoundStats:
    concurrency: int
    requests: int
    completed: int
    failed: int
    duration: float
    input_tokens: int
    output_tokens: int
    output_throughput: float  # tok/s
    request_throughput: float  # req/s
    ttft_ms: dict[str, float]
    tpot_ms: dict[str, float]
    itl_ms: dict[str, float]
    e2e_ms: dict[str, float]
    errors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, concurrency: int, results: list[RequestResult], duration: float) -> RoundStats:
        ok = [r for r in results if r.ok]
        out_tok = sum(r.output_tokens for r in ok)
        return cls(
            concurrency=concurrency,
            requests=len(results),
            completed=len(ok),
            failed=len(results) - len(ok),
            duration=duration,
            input_tokens=sum(r.prompt_tokens for r in ok),
            output_tokens=out_tok,
            output_throughput=out_tok / duration if duration else 0.0,
            request_throughput=len(ok) / duration if duration else 0.0,
            ttft_ms=summary([r.ttft for r in ok]),
            tpot_ms=summary([t for r in ok if (t := r.tpot) is not None]),
            itl_ms=summary([x for r in ok for x in r.itl]),
            e2e_ms=summary([r.e2e for r in ok]),
            errors=sorted({r.error for r in results if not r.ok})[:5],
        )


@dataclass
class SwitchStats:
    history_tokens: int
    other_sessions: int
    cold_ttft_ms: float
    followup_ttft_ms: float
    followup_cached_tokens: int | None

    @property
    def speedup(self) -> float:
        return self.cold_ttft_ms / self.followup_ttft_ms if self.followup_ttft_ms else float("nan")


@dataclass
class ServerResult:
    name: str
    base_url: str
    model: str
    rounds: list[RoundStats] = field(default_factory=list)
    switch: SwitchStats | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.switch:
            d["switch"]["speedup"] = self.switch.speedup
        return d
