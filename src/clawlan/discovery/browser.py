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

Only trusted servers are used (discovery/trust.py): an mDNS answer whose TLS
fingerprint is neither configured nor pinned is listed as pending for an
admin, never picked. Among trusted ones the choice is deterministic
(configured order, then acceptance order, then name and address), and a
goodbye packet alone never moves the front end: it is a claim anyone can
send, so the current server is dropped only when a request to it fails.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clawlan.discovery.service import SERVICE_TYPE, ServiceRecord, show_fingerprint
from clawlan.discovery.trust import TrustStore, classify
from clawlan.discovery.watch import ServiceWatch

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
    fingerprint: str = ""  # the pinned TLS fingerprint an mDNS-found server must present

    @property
    def configured(self) -> bool:
        """Someone typed this address (static or fallback): trusted as given, plain HTTP included."""
        return self.how in ("static", "fallback")

    def to_json(self) -> dict[str, object]:
        return {
            "base_url": self.base_url,
            "how": self.how,
            "name": self.name,
            "model": self.model,
            "auth": self.auth,
            "found_after_ms": self.found_after_ms,
            "fingerprint": show_fingerprint(self.fingerprint) if self.fingerprint else "",
            "verified": bool(self.fingerprint),
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
        trust: TrustStore | None = None,
    ) -> None:
        self.protocol = protocol
        self.fallback_timeout_ms = fallback_timeout_ms
        self.static_backend = static_backend.rstrip("/")
        self.interfaces = list(interfaces) if interfaces else None
        self.service_type = service_type
        self.trust = trust or TrustStore()
        self._mismatch: dict[str, str] = {}  # base URL -> trusted fingerprint it claimed but could not prove
        self._cond = threading.Condition()
        self._services: dict[str, ServiceRecord] = {}  # instance name -> record
        self._seen_fp: dict[str, str] = {}  # base URL -> fingerprint its server really presented
        self._bad: set[str] = set()  # base URLs that failed since they were last announced
        self._current: Backend | None = None
        self._watch: ServiceWatch | None = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Start browsing in the background (a no-op for ``static``)."""
        if self._started or self.protocol != "mDNS":
            self._started = True
            return
        self._watch = ServiceWatch(self._found, self._gone, service_type=self.service_type,
                                   interfaces=self.interfaces).start()
        self._started = True
        self._t0 = time.monotonic()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    @property
    def _zc(self) -> Any:
        """The running zeroconf instance (None when static or closed)."""
        return self._watch.zc if self._watch is not None else None

    # -- mDNS events (run in the browser's own thread) ---------------------
    def _gone(self, name: str) -> None:
        with self._cond:
            # Forget the record, but keep using the current server: a goodbye is a claim anyone can
            # spoof, a failed request (invalidate) is evidence.
            self._services.pop(name, None)
            log.info("back end %s said goodbye", name)

    def _found(self, name: str, rec: ServiceRecord) -> None:
        with self._cond:
            old = self._services.get(name)
            self._services[name] = rec
            # A fresh announcement means the address is worth trying again.
            self._bad.discard(rec.base_url)
            if old and old.base_url != rec.base_url and self._current and self._current.base_url == old.base_url:
                self._current = None  # moved: the next resolve picks up the new address
            self._cond.notify_all()
        state = classify(rec, self.trust)
        if state == "trusted":
            log.info("back end %s at %s", name, rec.base_url)
        else:
            log.warning("back end %s at %s is %s; not used until an admin accepts it", name, rec.base_url, state)

    # -- lookup ------------------------------------------------------------
    def _usable(self, r: ServiceRecord) -> bool:
        return (r.base_url not in self._bad and self._mismatch.get(r.base_url) != r.fingerprint
                and classify(r, self.trust) == "trusted")

    def _pick(self) -> ServiceRecord | None:
        good = [r for r in self._services.values() if self._usable(r)]
        # Deterministic choice: the same box keeps talking to the same server, whatever order answers came in.
        return min(good, key=lambda r: (self.trust.rank(r.fingerprint), r.name, r.base_url)) if good else None

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
                    found_after_ms=round(elapsed, 1), fingerprint=rec.fingerprint,
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
            usable = cur is not None and cur.how == "fallback" and any(self._usable(r) for r in self._services.values())
            if cur is not None and not usable and cur.base_url not in self._bad:
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
        watch = self._watch
        if watch is not None:
            # Ask the network again so a moved server answers quickly rather than at its next announcement.
            with self._cond:
                names = list(self._services)
            for name in names:
                threading.Thread(target=watch.refresh, args=(name,), daemon=True).start()

    @property
    def current(self) -> Backend | None:
        return self._current

    def mismatch(self, base_url: str, claimed: str, seen: str) -> None:
        """The server at ``base_url`` advertised ``claimed`` (trusted) but presented ``seen``: never use it as is."""
        url = base_url.rstrip("/")
        with self._cond:
            self._mismatch[url] = claimed
            self._seen_fp[url] = seen
        log.warning("back end at %s presented fingerprint %s, not the pinned %s; not used", url, seen, claimed)
        self.invalidate(url)

    def candidates(self) -> list[dict[str, object]]:
        """Every advertised server with its trust state, for the page and the admin."""
        out = []
        with self._cond:
            recs = list(self._services.values())
            cur = self._current.base_url if self._current else None
            seen = dict(self._seen_fp)
            mism = dict(self._mismatch)
        for r in sorted(recs, key=lambda r: (r.name, r.base_url)):
            state = classify(r, self.trust)
            if state == "trusted" and mism.get(r.base_url) == r.fingerprint:
                state = "mismatch"  # the TXT record names a trusted key the server could not prove it holds
            presented = seen.get(r.base_url, r.fingerprint) if state == "mismatch" else r.fingerprint
            out.append({
                "name": r.name, "base_url": r.base_url, "model": r.model, "state": state, "in_use": r.base_url == cur,
                "fingerprint": presented, "fingerprint_shown": show_fingerprint(presented) if presented else "",
                "pinned": self.trust.pinned_for(r.name) or "",
            })
        return out

    def trust_changed(self) -> None:
        """An admin accepted or forgot a server: pick again."""
        with self._cond:
            self._mismatch.clear()
            if self._current is not None and self._current.how == "fallback":
                self._current = None  # a newly trusted mDNS server takes over from the provisional fallback
            if self._current is not None and self._current.how == "mDNS" and not self.trust.trusted(
                    self._current.fingerprint):
                self._current = None
            self._cond.notify_all()

    def services(self) -> list[ServiceRecord]:
        with self._cond:
            return list(self._services.values())
