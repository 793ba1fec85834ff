"""Find the back end: browse mDNS, fall back to a static address, re-discover on failure.

The seed's ``frontend`` section drives it: ``discovery_protocol`` ``"mDNS"``
browses for ``_clawlan._tcp.local.``; if nothing answers within
``fallback_timeout`` ms the ``static_backend`` URL is used. ``"static"`` never
touches multicast.

The browser keeps running after the first answer, so a back end that goes
away (goodbye packet) or comes back on another port (a DHCP change, a restart)
is tracked without waiting for a request to fail. A request that does fail
calls :meth:`Discoverer.invalidate`, which drops that address and makes the
next :meth:`Discoverer.resolve` look again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from clawlan.discovery.service import SERVICE_TYPE, ServiceRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    """The back end in use, and how it was found (shown in the UI)."""

    base_url: str
    how: str  # "mDNS", "static" (configured), "fallback" (mDNS found none in time)
    name: str = ""
    model: str = ""
    auth: bool = False
    api: str = "/v1"
    found_after_ms: float | None = None  # time the lookup took, for the UI and the tests

    def to_json(self) -> dict[str, object]:
        return {
            "base_url": self.base_url,
            "how": self.how,
            "name": self.name,
            "model": self.model,
            "auth": self.auth,
            "found_after_ms": self.found_after_ms,
        }


class Discoverer:
    """Thread-safe back-end lookup. ``resolve`` blocks; ``aresolve`` is the asyncio form."""

    def __init__(
        self,
        protocol: str = "mDNS",
        fallback_timeout_ms: int = 5000,
        static_backend: str = "http://127.0.0.1:8080",
        *,
        interfaces: Sequence[str] | None = None,
        service_type: str = SERVICE_TYPE,
    ) -> None:
        self.protocol = protocol
        self.fallback_timeout_ms = fallback_timeout_ms
        self.static_backend = static_backend.rstrip("/")
        self.interfaces = list(interfaces) if interfaces else None
        self.service_type = service_type
        self._cond = threading.Condition()
        self._services: dict[str, ServiceRecord] = {}  # instance name -> record
        self._bad: set[str] = set()  # base URLs that failed since they were last announced
        self._current: Backend | None = None
        self._zc = None
        self._browser = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Start browsing in the background (a no-op for ``static``)."""
        if self._started or self.protocol != "mDNS":
            self._started = True
            return
        # Imported here so a static-only front end never opens multicast sockets.
        from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, Zeroconf

        if self.interfaces:
            self._zc = Zeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        else:
            self._zc = Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
        self._browser = ServiceBrowser(self._zc, self.service_type, handlers=[self._on_change])
        self._started = True
        self._t0 = time.monotonic()

    def close(self) -> None:
        if self._browser is not None:
            self._browser.cancel()
            self._browser = None
        if self._zc is not None:
            self._zc.close()
            self._zc = None

    # -- zeroconf callbacks (run in the browser's own thread) -------------
    def _on_change(self, zeroconf, service_type: str, name: str, state_change) -> None:  # noqa: ANN001
        from zeroconf import ServiceStateChange

        if state_change is ServiceStateChange.Removed:
            with self._cond:
                rec = self._services.pop(name, None)
                if rec and self._current and self._current.base_url == rec.base_url:
                    self._current = None
                log.info("back end %s went away", name)
            return
        info = zeroconf.get_service_info(service_type, name, timeout=2000)
        if info is None:
            return
        addrs = info.parsed_addresses()
        if not addrs or not info.port:
            return
        rec = ServiceRecord.from_txt(name, addrs[0], info.port, info.properties or {})
        with self._cond:
            old = self._services.get(name)
            self._services[name] = rec
            # A fresh announcement means the address is worth trying again.
            self._bad.discard(rec.base_url)
            if old and old.base_url != rec.base_url and self._current and self._current.base_url == old.base_url:
                self._current = None  # moved: the next resolve picks up the new address
            self._cond.notify_all()
        log.info("back end %s at %s", name, rec.base_url)

    # -- lookup ------------------------------------------------------------
    def _pick(self) -> ServiceRecord | None:
        good = [r for r in self._services.values() if r.base_url not in self._bad]
        # Deterministic choice: the same box keeps talking to the same server.
        return sorted(good, key=lambda r: r.name)[0] if good else None

    def resolve(self, timeout_ms: int | None = None) -> Backend:
        """The back end to use now; waits up to ``fallback_timeout`` for mDNS before falling back."""
        self.start()
        if self.protocol != "mDNS":
            with self._cond:
                if self._current is None:
                    self._current = Backend(self.static_backend, "static", found_after_ms=0.0)
                return self._current
        wait_s = (self.fallback_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        t0 = time.monotonic()
        with self._cond:
            cur = self._current
            # A fallback is provisional: a service announced since then takes over.
            if cur is not None and cur.how == "mDNS" and cur.base_url not in self._bad:
                return cur
            rec = self._pick()
            if rec is None and (cur is None or cur.base_url in self._bad):
                deadline = t0 + wait_s
                while rec is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                    rec = self._pick()
            elapsed = (time.monotonic() - t0) * 1000
            if rec is not None:
                self._current = Backend(
                    rec.base_url, "mDNS", name=rec.name, model=rec.model, auth=rec.auth, api=rec.api,
                    found_after_ms=round(elapsed, 1),
                )
            elif cur is not None and cur.how == "fallback" and cur.base_url not in self._bad:
                return cur
            else:
                self._current = Backend(self.static_backend, "fallback", found_after_ms=round(elapsed, 1))
                log.info("no back end answered mDNS in %d ms; using %s", self.fallback_timeout_ms, self.static_backend)
            return self._current

    async def aresolve(self, timeout_ms: int | None = None) -> Backend:
        with self._cond:
            cur = self._current
            if cur is not None and (cur.how != "fallback" or not self._services) and cur.base_url not in self._bad:
                return cur  # the common case costs no thread hop
        return await asyncio.to_thread(self.resolve, timeout_ms)

    def invalidate(self, base_url: str) -> None:
        """A request to ``base_url`` failed: look again next time."""
        with self._cond:
            self._bad.add(base_url.rstrip("/"))
            if self._current and self._current.base_url == base_url.rstrip("/"):
                self._current = None
        # The static address is never permanently bad: it is the last resort.
        if base_url.rstrip("/") == self.static_backend:
            with self._cond:
                self._bad.discard(self.static_backend)
        if self._zc is not None:
            # Ask the network again so a moved server answers quickly rather than at its next announcement.
            with self._cond:
                names = list(self._services)
            for name in names:
                threading.Thread(target=self._refresh, args=(name,), daemon=True).start()

    def _refresh(self, name: str) -> None:
        zc = self._zc
        if zc is None:
            return
        try:
            from zeroconf import ServiceStateChange

            self._on_change(zc, self.service_type, name, ServiceStateChange.Updated)
        except Exception:  # noqa: BLE001 - a refresh is best effort; the browser keeps listening
            log.debug("refresh of %s failed", name, exc_info=True)

    @property
    def current(self) -> Backend | None:
        return self._current

    def services(self) -> list[ServiceRecord]:
        with self._cond:
            return list(self._services.values())
