"""Keep the router's worker list equal to the healthy model servers we know of.

Wanted = the ``--worker`` URLs plus every node mDNS shows. A wanted node joins
once its own ``/health`` answers 200 (so the router's ``/add_worker``, which
waits for health, never blocks on a loading model); a node that leaves mDNS,
or fails ``/health`` twice in a row (killed without a goodbye), is removed, so
neither new requests nor the cache-aware prefix tree point at it. It joins
again on the first 200. The router's own health checks and circuit breaker
work underneath, between our passes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import httpx

from clawlan.router.process import WorkerAdmin, healthy

log = logging.getLogger(__name__)

FAILURES_TO_LEAVE = 2  # one slow /health on a busy node must not throw its prefix cache away


class Pool:
    def __init__(
        self,
        admin: WorkerAdmin,
        *,
        static: Iterable[str] = (),
        discovered: Callable[[], set[str]] | None = None,
        interval_s: float = 1.0,
        health_timeout_s: float = 2.0,
    ) -> None:
        self.admin = admin
        self.static = {u.rstrip("/") for u in static}
        self.discovered = discovered
        self.interval_s = interval_s
        self.health_timeout_s = health_timeout_s
        self._failures: dict[str, int] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.members: set[str] = set()  # the router's list after the last pass
        self.passes = 0

    def wanted(self) -> set[str]:
        found = self.discovered() if self.discovered is not None else set()
        return self.static | {u.rstrip("/") for u in found}

    def sync(self) -> set[str]:
        """One pass: remove what is unwanted or dead, add what is wanted and healthy."""
        want = self.wanted()
        have = set(self.admin.list())
        for url in sorted(have - want):
            if self.admin.remove(url):
                log.info("worker %s left the pool (no longer advertised)", url)
        for url in sorted(want):
            if healthy(url, self.health_timeout_s):
                self._failures.pop(url, None)
                if url not in have and self.admin.add(url):
                    log.info("worker %s joined the pool", url)
            else:
                n = self._failures[url] = self._failures.get(url, 0) + 1
                if url in have and n >= FAILURES_TO_LEAVE and self.admin.remove(url):
                    log.info("worker %s left the pool (/health failed %d times)", url, n)
        for url in list(self._failures):
            if url not in want:
                del self._failures[url]
        self.members = set(self.admin.list())
        self.passes += 1
        return self.members

    def poke(self) -> None:
        """Something changed (an mDNS announcement): sync now rather than at the next tick."""
        self._wake.set()

    def start(self) -> Pool:
        self._thread = threading.Thread(target=self._loop, name="router-pool", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except httpx.HTTPError as exc:  # the router is restarting or busy: try again next tick
                log.warning("worker sync failed: %s", exc)
            self._wake.wait(self.interval_s)
            self._wake.clear()
