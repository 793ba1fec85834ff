"""The vllm-router binary as a child process, and its worker-management HTTP API.

vllm-router (a Rust router adapted from SGLang's) keeps its worker list at run
time through ``POST /add_worker?url=``, ``POST /remove_worker?url=`` and
``GET /list_workers``, so servers join and leave without a restart. It
health-checks each worker on ``/health``, retries a request that failed before
any byte came back on another worker, opens a circuit breaker on a worker that
keeps failing, and reads ``GET /get_load`` (``{"load": n}``) from workers for
its load figures.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from clawlan.errors import ConfigError

log = logging.getLogger(__name__)

POLICIES = ("cache_aware", "round_robin", "power_of_two", "consistent_hash", "sticky_least_loaded", "random")
BINARY = "vllm-router"


def find_binary(explicit: str | None = None) -> str:
    """The vllm-router launcher: ``explicit``, else beside this Python (a venv), else on PATH."""
    if explicit:
        path = shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
        if path is None:
            raise ConfigError(f"--router-binary {explicit}: no such executable")
        return path
    beside = Path(sys.executable).parent / BINARY
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(BINARY)
    if found is None:
        raise ConfigError(f"{BINARY} is not installed: pip install 'clawlan[router]' (PyPI vllm-router)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the router's Prometheus listener panics on a taken port)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class RouterOptions:
    """What ``clawlan router`` asks of vllm-router; ``argv`` turns it into flags."""

    host: str = "127.0.0.1"
    port: int = 8088
    policy: str = "cache_aware"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 29000
    # Short health checks so a killed node leaves routing within seconds and a restarted one comes back
    # within seconds of its /health answering 200 (the router's defaults are 60 s and 3 failures).
    health_interval_s: int = 2
    health_timeout_s: int = 2
    # A worker that refuses twice opens its breaker, so retries go elsewhere even under cache_aware,
    # which would otherwise keep choosing the dead node that holds the conversation's prefix.
    breaker_failures: int = 2
    breaker_open_s: int = 5
    retries: int = 5
    retry_backoff_ms: int = 100
    log_level: str = "warning"
    extra: list[str] = field(default_factory=list)

    def argv(self, binary: str) -> list[str]:
        return [
            binary,
            "--host", self.host,
            "--port", str(self.port),
            "--policy", self.policy,
            "--prometheus-host", self.metrics_host,
            "--prometheus-port", str(self.metrics_port),
            "--health-check-endpoint", "/health",
            "--health-check-interval-secs", str(self.health_interval_s),
            "--health-check-timeout-secs", str(self.health_timeout_s),
            "--health-failure-threshold", "1",
            "--health-success-threshold", "1",
            "--cb-failure-threshold", str(self.breaker_failures),
            "--cb-timeout-duration-secs", str(self.breaker_open_s),
            "--retry-max-retries", str(self.retries),
            "--retry-initial-backoff-ms", str(self.retry_backoff_ms),
            # A worker is only added once its /health answered 200, so the router need not wait long.
            "--worker-startup-timeout-secs", "10",
            "--worker-startup-check-interval", "1",
            "--log-level", self.log_level,
            *self.extra,
        ]  # fmt: skip


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class RouterProcess:
    """vllm-router running as our child; ``stop`` ends it (and only it)."""

    def __init__(self, options: RouterOptions, binary: str | None = None) -> None:
        self.options = options
        self.binary = find_binary(binary)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.options.host in ("0.0.0.0", "") else self.options.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.options.port}"

    def start(self, timeout_s: float = 30.0) -> RouterProcess:
        o = self.options
        if port_taken(o.host, o.port):
            raise ConfigError(f"--router-port {o.port}: vllm-router's port is already in use on {o.host}; "
                              "choose another, or leave it out for a free one")
        if port_taken(o.metrics_host, o.metrics_port):
            raise ConfigError(f"--metrics-port {o.metrics_port}: the port is already in use; choose another")
        argv = o.argv(self.binary)
        log.info("starting %s", " ".join(argv))
        # Its own process group: a terminal's Ctrl-C reaches us, and we stop it in order. On Linux it
        # also gets SIGTERM if we die without stopping it (SIGKILL), so no router outlives us.
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(f"{BINARY} exited with status {self.proc.returncode} at start (see its log above)")
            try:
                if httpx.get(self.url + "/liveness", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # polling the child's port with a deadline
        self.stop()
        raise ConfigError(f"{BINARY} did not answer on {self.url} within {timeout_s:.0f} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # the router drains gracefully on SIGTERM
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class WorkerAdmin:
    """vllm-router's worker-management API."""

    def __init__(self, base_url: str, timeout_s: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def list(self) -> list[str]:
        r = httpx.get(self.base_url + "/list_workers", timeout=5.0)
        r.raise_for_status()
        return [u.rstrip("/") for u in r.json().get("urls", [])]

    def add(self, url: str) -> bool:
        # The router waits for the worker's /health before answering; we only add healthy ones.
        r = httpx.post(self.base_url + "/add_worker", params={"url": url}, timeout=self.timeout_s)
        if r.status_code != 200:
            log.warning("router refused worker %s: %s", url, r.text.strip()[:200])
        return r.status_code == 200

    def remove(self, url: str) -> bool:
        r = httpx.post(self.base_url + "/remove_worker", params={"url": url}, timeout=self.timeout_s)
        return r.status_code == 200


def healthy(url: str, timeout_s: float = 1.0) -> bool:
    """The node's own readiness: 200 on /health once its model is loaded."""
    try:
        return httpx.get(url.rstrip("/") + "/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def check_policy(policy: str, choices: Sequence[str] = POLICIES) -> str:
    if policy not in choices:
        raise ConfigError(f"--policy {policy}: choose one of {', '.join(choices)}")
    return policy
