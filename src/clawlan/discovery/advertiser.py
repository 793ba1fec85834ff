"""Advertise the model server on the LAN with mDNS / DNS-SD (python-zeroconf)."""

from __future__ import annotations

import logging
import socket

import psutil
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

from clawlan.discovery.service import SERVICE_TYPE, ServiceRecord

log = logging.getLogger(__name__)


def lan_addresses() -> list[str]:
    """Every non-loopback IPv4 address of this host."""
    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                out.append(a.address)
    return out


class Advertiser:
    """Registers one ``_clawlan._tcp`` instance for as long as the server runs."""

    def __init__(self, record: ServiceRecord, bind_host: str) -> None:
        self.record = record
        if bind_host in ("0.0.0.0", "", "::"):
            self.addresses = lan_addresses() or ["127.0.0.1"]
            self.interfaces: InterfaceChoice | list[str] = InterfaceChoice.All
        else:
            self.addresses = [bind_host]
            self.interfaces = [bind_host]
        self.zc: Zeroconf | None = None
        self.info: ServiceInfo | None = None

    def start(self) -> None:
        host = socket.gethostname().split(".")[0] or "clawlan"
        self.info = ServiceInfo(
            SERVICE_TYPE,
            f"{self.record.name}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(a) for a in self.addresses],
            port=self.record.port,
            properties=self.record.txt(),
            server=f"{host}.local.",
        )
        self.zc = Zeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        # allow_name_change: two servers on one LAN must not fight over one instance name.
        self.zc.register_service(self.info, allow_name_change=True)
        log.info("mDNS: advertising %s on %s port %d", SERVICE_TYPE, ", ".join(self.addresses), self.record.port)

    def stop(self) -> None:
        if self.zc is not None:
            if self.info is not None:
                self.zc.unregister_service(self.info)
            self.zc.close()
            self.zc = None
