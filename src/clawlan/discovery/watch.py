"""One mDNS browse loop: each ``_clawlan._tcp`` instance as it is announced, updated or withdrawn.

The front end's :class:`~clawlan.discovery.browser.Discoverer` (which picks one
trusted back end) and the router's node list (which takes every model server)
both sit on this, so the zeroconf lifecycle, the resolve of an announcement
and the parse of its TXT record are written once. What a record means is
theirs to decide: here it is only turned into a :class:`ServiceRecord`.

Zeroconf is imported at start, so a static-only front end never opens
multicast sockets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from clawlan.discovery.service import SERVICE_TYPE, ServiceRecord

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_MS = 2000


class ServiceWatch:
    """Calls ``on_found(name, record)`` for each announcement and ``on_gone(name)`` for each goodbye.

    Both run on zeroconf's thread. ``name`` is the full instance name
    (``clawlan on nuc._clawlan._tcp.local.``); ``want`` may narrow which names count.
    """

    def __init__(
        self,
        on_found: Callable[[str, ServiceRecord], None],
        on_gone: Callable[[str], None],
        *,
        service_type: str = SERVICE_TYPE,
        interfaces: Sequence[str] | None = None,
        want: Callable[[str], bool] | None = None,
    ) -> None:
        self.on_found = on_found
        self.want = want  # names it refuses are never resolved (each resolve is a network round trip)
        self.on_gone = on_gone
        self.service_type = service_type
        self.interfaces = list(interfaces) if interfaces else None
        self.zc: Any = None
        self._browser: Any = None

    def start(self) -> ServiceWatch:
        from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, Zeroconf

        self.zc = Zeroconf(interfaces=self.interfaces or InterfaceChoice.All, ip_version=IPVersion.V4Only)
        self._browser = ServiceBrowser(self.zc, self.service_type, handlers=[self._changed])
        return self

    def close(self) -> None:
        if self._browser is not None:
            self._browser.cancel()
            self._browser = None
        if self.zc is not None:
            self.zc.close()
            self.zc = None

    def resolve(self, name: str, zc: Any = None) -> ServiceRecord | None:
        """Ask the network for ``name``'s address, port and TXT now; None when it does not answer usably."""
        from zeroconf import IPVersion

        zc = zc or self.zc
        if zc is None:
            return None
        info = zc.get_service_info(self.service_type, name, timeout=RESOLVE_TIMEOUT_MS)
        if info is None or not info.port:
            return None
        addrs = info.parsed_addresses(IPVersion.V4Only)
        if not addrs:
            return None
        return ServiceRecord.from_txt(name, addrs[0], info.port, info.properties or {})

    def refresh(self, name: str) -> None:
        """Resolve ``name`` again and report it as found (a moved server answers now, not at its next announcement)."""
        try:
            rec = self.resolve(name)
            if rec is not None:
                self.on_found(name, rec)
        except Exception:  # noqa: BLE001 - a refresh is best effort; the browser keeps listening
            log.debug("refresh of %s failed", name, exc_info=True)

    def _changed(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        from zeroconf import ServiceStateChange

        # Whatever a LAN host sends, the browser thread must survive it: one bad record must not end discovery.
        try:
            if self.want is not None and not self.want(name):
                return
            if state_change is ServiceStateChange.Removed:
                self.on_gone(name)
                return
            rec = self.resolve(name, zeroconf)
            if rec is not None:
                self.on_found(name, rec)
        except Exception:  # noqa: BLE001
            log.warning("ignoring an unusable mDNS record for %r", name, exc_info=True)
