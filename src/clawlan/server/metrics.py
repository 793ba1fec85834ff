"""Prometheus metrics, named after vLLM's so existing dashboards map onto them.

Each app has its own registry (tests run several servers in one process).
Gauges that describe the engine are read at scrape time by a collector, so
the engine thread never blocks on metrics.

``clawlan:kv_cache_fragmentation_perc`` is the seed's "memory fragmentation"
for the memory clawlan manages: the share of occupied KV cells that no running
sequence uses (they belong only to idle prefix-cache entries, and are freed
when space is needed). The seed's advice is to keep it under 15%; a high value
with many waiting requests means the cache holds stale conversations. With the
host-RAM prefix cache on (``server.cache_ram_mb``), idle entries leave the KV
cache whenever new work starts, so the value stays near 0 under load;
``clawlan:prefix_cache_host_bytes`` shows what they hold in RAM instead.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
TOKEN_LATENCY = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)


class EngineCollector(Collector):
    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def collect(self) -> Iterator[Any]:
        eng = self.backend.engine
        if eng is None:
            return
        sched = eng.scheduler
        kv = sched.kv
        used = kv.n_used
        idle = kv.idle_cells()
        yield GaugeMetricFamily("clawlan:num_requests_running", "Sequences in the running batch", value=len(sched.running))
        yield GaugeMetricFamily("clawlan:num_requests_waiting", "Requests queued for a sequence", value=len(sched.waiting))
        yield GaugeMetricFamily("clawlan:kv_cache_usage_perc", "Share of KV cells occupied (0-1)", value=used / kv.n_cells)
        yield GaugeMetricFamily(
            "clawlan:kv_cache_fragmentation_perc",
            "Share of occupied KV cells no running sequence uses (0-1)",
            value=(idle / used) if used else 0.0,
        )
        yield GaugeMetricFamily("clawlan:kv_cache_tokens", "KV cells in the cache", value=kv.n_cells)
        yield GaugeMetricFamily("clawlan:effective_batch_size", "Batch cap after out-of-memory reductions", value=sched.effective_batch)
        yield CounterMetricFamily("clawlan:num_preemptions", "Sequences preempted for KV space", value=sched.preemptions)
        yield CounterMetricFamily("clawlan:out_of_memory", "llama_decode out-of-memory results", value=sched.oom_events)
        if kv.host is not None:
            yield GaugeMetricFamily("clawlan:prefix_cache_host_bytes", "Host RAM held by saved prefix-cache entries", value=kv.host.nbytes)
            yield GaugeMetricFamily("clawlan:prefix_cache_host_entries", "Prefix-cache entries saved in host RAM", value=len(kv.host))
        # vLLM's speculative-decoding names: acceptance = accepted / draft.
        yield CounterMetricFamily("clawlan:spec_decode_num_draft_tokens", "Prompt-lookup draft tokens fed", value=sched.drafted)
        yield CounterMetricFamily(
            "clawlan:spec_decode_num_accepted_tokens", "Draft tokens the model agreed with", value=sched.accepted
        )


@functools.cache
def nvml() -> Any | None:
    """NVML (the ``nvidia-ml-py`` package), initialised once per process; None without an NVIDIA
    driver. Initialising on every scrape would leak NVML's reference count and cost a driver call."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
    except Exception:  # no package, no driver, no GPU: NVML raises its own error for each
        return None
    return pynvml


class GpuCollector(Collector):
    """GPU use and memory from NVML (NVIDIA) or rocm-smi (AMD); no series at all without a GPU,
    so a dashboard shows "no data" rather than a misleading zero."""

    def collect(self) -> Iterator[Any]:
        util = GaugeMetricFamily("clawlan:gpu_utilization_perc", "GPU utilisation (0-1)", labels=["gpu"])
        mem = GaugeMetricFamily("clawlan:gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily("clawlan:gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        try:
            found = self._nvidia(util, mem, total) or self._amd(util, mem, total)
        except Exception:  # a GPU that fails mid-scrape must not take /metrics down with it
            return
        if found:
            yield from (util, mem, total)

    @staticmethod
    def _nvidia(util: GaugeMetricFamily, mem: GaugeMetricFamily, total: GaugeMetricFamily) -> bool:
        lib = nvml()
        if lib is None:
            return False
        for i in range(lib.nvmlDeviceGetCount()):
            h = lib.nvmlDeviceGetHandleByIndex(i)
            info = lib.nvmlDeviceGetMemoryInfo(h)
            util.add_metric([str(i)], lib.nvmlDeviceGetUtilizationRates(h).gpu / 100.0)
            mem.add_metric([str(i)], info.used)
            total.add_metric([str(i)], info.total)
        return True

    @staticmethod
    def _amd(util: GaugeMetricFamily, mem: GaugeMetricFamily, total: GaugeMetricFamily) -> bool:
        out = rocm_smi()
        if out is None:
            return False
        for card, vals in json.loads(out).items():
            if not isinstance(vals, dict):
                continue  # rocm-smi adds "system" entries beside the cards
            for key, value in vals.items():
                if "GPU use" in key:
                    util.add_metric([card], float(value) / 100.0)
                elif "VRAM Total Used" in key:
                    mem.add_metric([card], float(value))
                elif "VRAM Total Memory" in key:
                    total.add_metric([card], float(value))
        return True


ROCM_SMI_TTL = 5.0  # seconds: scrapes (every 15 s or more often) reuse one rocm-smi run
_rocm_lock = threading.Lock()
_rocm_cache: tuple[float, str] | None = None


def rocm_smi() -> str | None:
    """rocm-smi's JSON, at most one run per ROCM_SMI_TTL (a run takes ~0.1-1 s); None without it.

    /metrics renders on a worker thread, so the run never blocks the event loop; the lock
    keeps concurrent scrapes to one run."""
    global _rocm_cache
    if not shutil.which("rocm-smi"):
        return None
    with _rocm_lock:
        now = time.monotonic()
        if _rocm_cache is None or now - _rocm_cache[0] > ROCM_SMI_TTL:
            out = subprocess.run(
                ["rocm-smi", "--showuse", "--showmeminfo", "vram", "--json"], capture_output=True, text=True, timeout=5
            ).stdout
            _rocm_cache = (now, out)
        return _rocm_cache[1]


class Metrics:
    def __init__(self, backend: Any) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process CPU seconds and RSS
        PlatformCollector(registry=r)
        r.register(EngineCollector(backend))
        r.register(GpuCollector())
        self.requests = Counter("clawlan:requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r)
        self.finished = Counter("clawlan:request_success", "Finished generations by reason", ["finished_reason"], registry=r)
        self.ttft = Histogram("clawlan:time_to_first_token_seconds", "Time to first token", buckets=LATENCY, registry=r)
        self.itl = Histogram("clawlan:inter_token_latency_seconds", "Time between output tokens", buckets=TOKEN_LATENCY, registry=r)
        self.e2e = Histogram("clawlan:e2e_request_latency_seconds", "Request latency", buckets=LATENCY, registry=r)
        self.prompt_tokens = Counter("clawlan:prompt_tokens", "Prompt tokens", registry=r)
        self.generation_tokens = Counter("clawlan:generation_tokens", "Generated tokens", registry=r)
        self.prefix_hits = Counter("clawlan:prefix_cache_hits", "Prompt tokens served from the prefix cache", registry=r)
        self.prefix_queries = Counter("clawlan:prefix_cache_queries", "Prompt tokens looked up in the prefix cache", registry=r)
        self.batch = Histogram(
            "clawlan:batch_size", "Sequences per llama_decode", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128), registry=r
        )
        self.step_tokens = Histogram(
            "clawlan:iteration_tokens", "Tokens per llama_decode", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048), registry=r
        )
        self.bytes_in = Counter("clawlan:network_receive_bytes", "HTTP request bytes received", registry=r)
        self.bytes_out = Counter("clawlan:network_transmit_bytes", "HTTP response bytes sent", registry=r)

    def on_step(self, step: Any, seconds: float) -> None:
        self.batch.observe(len(step.chunks))
        self.step_tokens.observe(step.n_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
