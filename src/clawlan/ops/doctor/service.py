"""What answers on the LAN: /health over HTTP or HTTPS, the mDNS advertisement, and each server's pin state.

A server bound to the LAN speaks HTTPS by default with a self-signed
certificate; its TXT record carries ``tls=1`` and the certificate's
fingerprint (``fp``). The doctor never turns verification off quietly: it
reads the certificate once (handshake only), judges its fingerprint against
this machine's trust (``frontend.trusted_backends`` and the front end's
``trusted_backends.json``) and the advertised one, reports that as the
``tls`` result, then talks HTTP over a connection that accepts exactly that
certificate, so the server it measured is the server it judged.

Advertised servers other than the back end checked get a TLS handshake only
(no request): enough to tell a rogue that copies a trusted fingerprint.
"""

from __future__ import annotations

import logging
import ssl
import statistics
import threading
import time
from pathlib import Path

from clawlan.discovery.service import SERVICE_TYPE, ServiceRecord, show_fingerprint
from clawlan.discovery.trust import (
    PINS_FILE,
    TrustStore,
    classify,
    explain_pin_mismatch,
    fetch_certificate,
    fingerprint_of_der,
    pinned_context,
)
from clawlan.ops.doctor.network import source_address
from clawlan.ops.doctor.report import Results, Status, Target

log = logging.getLogger(__name__)

LAN_RTT_MS = 5.0  # the seed: "LAN latency under 5 ms"


def browse(interface: str, service_type: str, timeout: float, prefer: str | None = None) -> list[ServiceRecord]:
    """Every record answered on ``interface`` within ``timeout`` s (the whole time: the pin report lists them
    all, not the first); a record with several addresses is given ``prefer`` when it has it.

    Raises OSError when mDNS cannot be opened there.
    """
    from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

    records: dict[str, ServiceRecord] = {}
    lock = threading.Lock()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        try:  # anyone on the LAN writes these records: a bad one is skipped, never fatal
            info = zeroconf.get_service_info(service_type, name, timeout=int(timeout * 1000))
            addrs = info.parsed_addresses(IPVersion.V4Only) if info else []
            if not info or not addrs or not info.port:
                return
            host = prefer if prefer in addrs else addrs[0]
            rec = ServiceRecord.from_txt(name, host, info.port, info.properties or {})
        except Exception:  # noqa: BLE001
            log.debug("unusable mDNS record %r", name, exc_info=True)
            return
        with lock:
            records[name] = rec

    zc = Zeroconf(interfaces=[interface], ip_version=IPVersion.V4Only)
    try:
        browser = ServiceBrowser(zc, service_type, handlers=[on_change])
        time.sleep(timeout)  # the browse window itself: answers arrive in the browser's thread meanwhile
        browser.cancel()
    finally:
        zc.close()
    with lock:
        return sorted(records.values(), key=lambda r: r.name)


class ServiceChecks(Results):
    """health, rtt, tls, mdns and pin; each appends results and never raises."""

    target: Target
    timeout: float
    mdns_timeout: float
    service_type: str
    trusted_backends: list[str]
    frontend_data_dir: str | None
    admin_url: str
    records: list[ServiceRecord] | None  # None: not browsed (skipped, or no interface faces the back end)
    mdns_problem: str  # why not browsed, for the mdns result
    mdns_src: str  # the interface address browsed

    # -- trust ------------------------------------------------------------------------------------

    def trust(self) -> TrustStore:
        pins = Path(self.frontend_data_dir) / PINS_FILE if self.frontend_data_dir else None
        return TrustStore(pins, self.trusted_backends)

    def explain(self, name: str, where: str, pinned: str | None, seen: str) -> str:
        return explain_pin_mismatch(name, where, pinned, seen, self.frontend_data_dir, admin_url=self.admin_url)

    def explain_mismatch(self, name: str, where: str, advertised: str, seen: str) -> str:
        """A server whose TXT record claims one key while its handshake shows another (the trust module's
        explanation is about a changed pin; this one is about a claim the server cannot back)."""
        host = where.rsplit(":", 1)[0]
        return "\n".join([
            f"{name!r} at {where} advertises fingerprint {show_fingerprint(advertised)}",
            f"  but its TLS handshake presents {show_fingerprint(seen)}: it does not hold the key it claims.",
            "  Front ends refuse it. If the advertised key is a server you accepted, another host is pretending",
            f"  to be it: find it (tcpdump -i any udp port 5353 and host {host}) and take it off the LAN.",
            "  If it is your server, reinstalled, restart it so it advertises its new key; then check that key",
            f"  on the server and accept it as admin at {self.admin_url}, or add it to frontend.trusted_backends.",
        ])

    def record_for(self, addr: str) -> ServiceRecord | None:
        return next((r for r in self.records or [] if r.host == addr and r.port == self.target.port), None)

    # -- mDNS ------------------------------------------------------------------------------------

    def browse_mdns(self, addr: str | None) -> None:
        """Browse on the interface facing the back end only: the question is whether *this* path sees it."""
        self.records, self.mdns_problem = None, ""
        src = source_address(addr, self.target.port) if addr else None
        if not src or ":" in src:
            self.mdns_problem = "no IPv4 interface faces the back end; mDNS not browsed"
            return
        try:
            self.records = browse(src, self.service_type, self.mdns_timeout, prefer=addr)
        except OSError as exc:
            self.mdns_problem = f"cannot open mDNS on {src}: {exc}"
        self.mdns_src = src

    def check_mdns(self, addr: str | None) -> None:
        if self.records is None:
            status = Status.WARN if self.mdns_problem.startswith("cannot") else Status.SKIP
            self.add("mdns", status, self.mdns_problem, "check UDP 5353 is free and multicast allowed"
                     if status is Status.WARN else "")
            return
        names = ", ".join(r.name for r in self.records)
        where = f"{addr or self.target.host}:{self.target.port}"
        mine = self.record_for(addr) if addr else None
        if mine:
            self.add("mdns", Status.PASS, f"{self.service_type} seen on {self.mdns_src}: {mine.name} at {where}"
                     + (f" (also: {', '.join(r.name for r in self.records if r is not mine)})"
                        if len(self.records) > 1 else ""))
            return
        self.add(
            "mdns",
            Status.WARN,
            f"no {self.service_type} service at {where} seen on {self.mdns_src} within {self.mdns_timeout:g} s"
            + (f" (seen: {names})" if names else ""),
            "on the server: clawlan serve --host 0.0.0.0 advertises on the LAN (discovery.advertise); "
            'allow UDP 5353 multicast; or set frontend.discovery_protocol = "static" with frontend.static_backend',
        )

    def check_pins(self) -> None:
        """One ``pin`` result per advertised server: would a front end here use it, and if not, how to accept it."""
        if not self.records:
            return
        trust = self.trust()
        for rec in self.records:
            where = f"{rec.host}:{rec.port}"
            head = f"{rec.name} at {where}"
            if not rec.tls or not rec.fingerprint:
                self.add("pin", Status.WARN, f"{head}: plain HTTP, no TLS identity: front ends never use it from mDNS",
                         "serve the LAN with TLS (the default with --host 0.0.0.0; server.tls not false), or "
                         f"name it as frontend.static_backend ({rec.base_url}) if it is yours")
                continue
            try:
                seen = fingerprint_of_der(fetch_certificate(rec.host, rec.port, self.timeout))
            except (OSError, ssl.SSLError) as exc:
                self.add("pin", Status.WARN, f"{head}: advertises TLS but no handshake: {exc}",
                         "the server is down or another program holds its port; see the server's log")
                continue
            if seen != rec.fingerprint:
                # It claims one key and holds another: a copied fingerprint, or a record left from a reinstall.
                self.add("pin", Status.FAIL,
                         f"{head}: mismatch: advertises {show_fingerprint(rec.fingerprint)} but presents "
                         f"{show_fingerprint(seen)}; front ends refuse it",
                         self.explain_mismatch(rec.name, where, rec.fingerprint, seen))
                continue
            state = classify(rec, trust)
            if state == "trusted":
                how = "configured" if rec.fingerprint in trust.configured else "pinned"
                self.add("pin", Status.PASS, f"{head}: trusted ({how}), {show_fingerprint(seen)}")
            elif state == "changed":
                pinned = trust.pinned_for(rec.name)
                self.add("pin", Status.FAIL,
                         f"{head}: changed: presents {show_fingerprint(seen)}, accepted was "
                         f"{show_fingerprint(pinned or '')}; not used",
                         self.explain(rec.name, where, pinned, seen))
            else:
                self.add("pin", Status.WARN, f"{head}: new: {show_fingerprint(seen)} never accepted; not used",
                         self.explain(rec.name, where, None, seen))

    # -- the back end's own answer ----------------------------------------------------------------

    def tls_context(self, addr: str) -> ssl.SSLContext | None:
        """For an HTTPS back end: judge its certificate (one ``tls`` result) and return a context that accepts
        exactly that certificate; None when no TLS handshake is possible (reported)."""
        where = f"{addr}:{self.target.port}"
        try:
            der = fetch_certificate(addr, self.target.port, self.timeout)
        except (OSError, ssl.SSLError) as exc:
            self.add("tls", Status.FAIL, f"no TLS handshake with {where}: {exc}",
                     f"if the server speaks plain HTTP, use --backend http://{where}; else see the server's log")
            return None
        seen = fingerprint_of_der(der)
        trust = self.trust()
        rec = self.record_for(addr)
        if trust.trusted(seen):
            how = "frontend.trusted_backends" if seen in trust.configured else "pinned on this front end"
            self.add("tls", Status.PASS, f"certificate {show_fingerprint(seen)} verified: {how}")
        elif rec and rec.fingerprint and rec.fingerprint != seen:
            self.add("tls", Status.FAIL,
                     f"{where} presents {show_fingerprint(seen)} but its mDNS record advertises "
                     f"{show_fingerprint(rec.fingerprint)}",
                     f"see the pin result for {rec.name} below")
        else:
            name = rec.name if rec else where
            pinned = trust.pinned_for(rec.name) if rec else None
            self.add("tls", Status.FAIL if pinned else Status.WARN,
                     f"certificate {show_fingerprint(seen)} is not trusted here"
                     + (" (it matches the advertised fingerprint)" if rec and rec.fingerprint == seen else ""),
                     # The pin results below explain each advertised server once; say it here only without them.
                     f"see the pin result for {name} below" if rec else self.explain(name, where, pinned, seen))
        return pinned_context(der)

    def check_health(self, addr: str) -> None:
        import httpx

        rec = self.record_for(addr)
        if rec and rec.tls and not self.target.explicit_scheme:
            self.target.scheme = "https"  # the server says it speaks HTTPS (the default on the LAN)
        verify: ssl.SSLContext | bool = True  # plain HTTP has nothing to verify; never False
        if self.target.scheme == "https":
            ctx = self.tls_context(addr)
            if ctx is None:
                return
            verify = ctx  # accepts exactly the certificate judged above, nothing else
        host = f"[{addr}]" if ":" in addr else addr
        url = f"{self.target.scheme}://{host}:{self.target.port}/health"
        times = []
        try:
            with httpx.Client(timeout=self.timeout, verify=verify, trust_env=False) as client:
                r = client.get(url)
                # A few more requests on the same connection: the RTT a front end will see per call.
                for _ in range(5):
                    t0 = time.perf_counter()
                    client.get(url)
                    times.append((time.perf_counter() - t0) * 1000)
        except httpx.HTTPError as exc:
            fix = ("the port answers TCP but not HTTP: is this clawlan serve (or another program on that port)? "
                   "check --backend's scheme (http/https)")
            if self.target.scheme == "http" and self._speaks_tls(addr):
                fix = (f"the server speaks HTTPS (the default on the LAN): use --backend https://{host}:"
                       f"{self.target.port}, and https:// in frontend.static_backend")
            self.add("health", Status.FAIL, f"GET {url} failed: {type(exc).__name__}: {exc}", fix)
            return
        if r.status_code != 200:
            body = " ".join(r.text.split())[:100]
            fix = (
                "another program answers on this port (clawlan serves /health): check the port number"
                if r.status_code == 404
                else "the server is up but not ready (still loading the model?); see its log"
            )
            self.add("health", Status.FAIL, f"GET {url} returned {r.status_code}: {body!r}", fix)
        else:
            self.add("health", Status.PASS, f"GET {url} -> 200 {r.text[:80].strip()}")
        rtt = statistics.median(times)
        if rtt <= LAN_RTT_MS:
            self.add("rtt", Status.PASS, f"median /health round trip {rtt:.2f} ms (target {LAN_RTT_MS:g} ms)")
        else:
            self.add(
                "rtt",
                Status.WARN,
                f"median /health round trip {rtt:.1f} ms, above the {LAN_RTT_MS:g} ms a wired LAN should give",
                "use wired Ethernet (2.5 GbE recommended), keep front end and server on one switch, "
                "and check the server is not swapping or overloaded",
            )

    def _speaks_tls(self, addr: str) -> bool:
        try:
            fetch_certificate(addr, self.target.port, min(self.timeout, 2.0))
        except (OSError, ssl.SSLError):
            return False
        return True


__all__ = ["LAN_RTT_MS", "SERVICE_TYPE", "ServiceChecks", "browse"]
