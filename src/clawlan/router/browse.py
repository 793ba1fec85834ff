"""Every model server advertised on the LAN, kept current as they announce and say goodbye.

The front end's :class:`~clawlan.discovery.browser.Discoverer` picks one back
end; a router needs all of them, and must skip routers (its own advertisement
included, TXT ``role=router``) so it never routes to itself.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable, Sequence

from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

from clawlan.discovery.service import SERVICE_TYPE, ServiceRecord

log = logging.getLogger(__name__)

ROLE_KEY = "role"
ROUTER_ROLE = "router"


class RouterRecord(ServiceRecord):
    """A router's advertisement: the usual TXT contract plus ``role=router``."""

    def txt(self) -> dict[str, str]:
        return {**super().txt(), ROLE_KEY: ROUTER_ROLE}


def instance(name: str, service_type: str = SERVICE_TYPE) -> str:
    """``clawlan on nuc._clawlan._tcp.local.`` -> ``clawlan on nuc``."""
    return name[: -len(service_type) - 1] if name.endswith("." + service_type) else name


class NodeBrowser:
    """Model servers (not routers) whose instance name matches ``match``; ``on_change`` after each change."""

    def __init__(
        self,
        *,
        match: str = "*",
        interfaces: Sequence[str] | None = None,
        service_type: str = SERVICE_TYPE,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.match = match
        self.interfaces = list(interfaces) if interfaces else None
        self.service_type = service_type
        self.on_change = on_change
        self._lock = threading.Lock()
        self._nodes: dict[str, ServiceRecord] = {}  # full instance name -> record
        self._zc: Zeroconf | None = None
        self._browser: ServiceBrowser | None = None

    def start(self) -> NodeBrowser:
        self._zc = Zeroconf(interfaces=self.interfaces or InterfaceChoice.All, ip_version=IPVersion.V4Only)
        self._browser = ServiceBrowser(self._zc, self.service_type, handlers=[self._changed])
        return self

    def close(self) -> None:
        if self._browser is not None:
            self._browser.cancel()
            self._browser = None
        if self._zc is not None:
            self._zc.close()
            self._zc = None

    def nodes(self) -> list[ServiceRecord]:
        with self._lock:
            return sorted(self._nodes.values(), key=lambda r: r.name)

    def urls(self) -> set[str]:
        return {r.base_url for r in self.nodes()}

    # Runs on zeroconf's thread.
    def _changed(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if not fnmatch.fnmatchcase(instance(name, service_type), self.match):
            return
        if state_change is ServiceStateChange.Removed:
            with self._lock:
                gone = self._nodes.pop(name, None)
            if gone is not None:
                log.info("node %s at %s left mDNS", instance(name, service_type), gone.base_url)
                self._notify()
            return
        info = zeroconf.get_service_info(service_type, name, timeout=2000)
        if info is None or not info.port:
            return
        txt = info.properties or {}
        if (txt.get(ROLE_KEY.encode()) or b"").decode() == ROUTER_ROLE:
            return  # another router, or ourselves
        addrs = info.parsed_addresses(IPVersion.V4Only)
        if not addrs:
            return
        rec = ServiceRecord.from_txt(name, addrs[0], info.port, txt)
        with self._lock:
            old = self._nodes.get(name)
            self._nodes[name] = rec
        if old != rec:
            log.info("node %s at %s (model %s)", instance(name, service_type), rec.base_url, rec.model or "?")
            self._notify()

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change()
