"""Every model server advertised on the LAN, kept current as they announce and say goodbye.

The front end's :class:`~clawlan.discovery.browser.Discoverer` picks one back
end; a router needs all of them, and must skip routers (its own advertisement
included, TXT ``role=router``) so it never routes to itself. Both browse
through :class:`~clawlan.discovery.watch.ServiceWatch`.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable, Sequence

from clawlan.discovery.service import ROUTER_ROLE, SERVICE_TYPE, ServiceRecord
from clawlan.discovery.watch import ServiceWatch

log = logging.getLogger(__name__)

__all__ = ["ROUTER_ROLE", "NodeBrowser", "instance"]


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
        self.service_type = service_type
        self.on_change = on_change
        self._lock = threading.Lock()
        self._nodes: dict[str, ServiceRecord] = {}  # full instance name -> record
        self._watch = ServiceWatch(self._found, self._gone, service_type=service_type, interfaces=interfaces,
                                   want=self._wanted)

    def start(self) -> NodeBrowser:
        self._watch.start()
        return self

    def close(self) -> None:
        self._watch.close()

    def nodes(self) -> list[ServiceRecord]:
        with self._lock:
            return sorted(self._nodes.values(), key=lambda r: r.name)

    def urls(self) -> set[str]:
        return {r.base_url for r in self.nodes()}

    def _wanted(self, name: str) -> bool:
        return fnmatch.fnmatchcase(instance(name, self.service_type), self.match)

    # Both run on zeroconf's thread.
    def _gone(self, name: str) -> None:
        with self._lock:
            gone = self._nodes.pop(name, None)
        if gone is not None:
            log.info("node %s at %s left mDNS", instance(name, self.service_type), gone.base_url)
            self._notify()

    def _found(self, name: str, rec: ServiceRecord) -> None:
        if rec.role == ROUTER_ROLE:
            return  # another router, or ourselves
        with self._lock:
            old = self._nodes.get(name)
            self._nodes[name] = rec
        if old != rec:
            log.info("node %s at %s (model %s)", instance(name, self.service_type), rec.base_url, rec.model or "?")
            self._notify()

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change()
