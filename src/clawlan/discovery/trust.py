"""Which back ends a front end may talk to: pinned TLS identities, as SSH pins host keys.

Anyone on the LAN can advertise ``_clawlan._tcp``. A front end therefore
uses an mDNS-found server only when the SHA-256 fingerprint of its TLS
certificate is trusted, either

* listed in config (``frontend.trusted_backends``), or
* pinned: an admin accepted it on the page (stored in ``trusted_backends.json``
  in the front end's data dir, mode 0600).

A new server, or a known name with a new fingerprint, is shown as pending and
never used until an admin accepts it. Trust is checked twice: the TXT record's
``fp`` picks the candidate, and the connection itself is verified against the
pinned certificate (:func:`pinned_context`), so a rogue that copies the
advertised fingerprint still fails the TLS handshake without the private key.

The explicitly configured static back end is the other trusted path (someone
typed its URL); plain HTTP is accepted there, never from mDNS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from clawlan.discovery.service import ServiceRecord, normalize_fingerprint, show_fingerprint

log = logging.getLogger(__name__)

PINS_FILE = "trusted_backends.json"


class TrustStore:
    """Configured and pinned fingerprints; thread-safe (the mDNS browser thread reads it)."""

    def __init__(self, path: str | Path | None = None, configured: list[str] | tuple[str, ...] = ()) -> None:
        self.path = Path(path) if path else None
        self.configured = [f for f in (normalize_fingerprint(c) for c in configured) if f]
        self._lock = threading.Lock()
        self._pins: dict[str, dict[str, Any]] = {}
        if self.path and self.path.is_file():
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                for fp, meta in (raw.get("pins") or {}).items():
                    if normalize_fingerprint(fp):
                        self._pins[normalize_fingerprint(fp)] = dict(meta)
            except (OSError, ValueError, AttributeError) as exc:
                # A damaged pin file trusts nothing (safe side) and says so; the admin re-accepts.
                log.warning("%s is unreadable (%s); no pinned back ends", self.path, exc)

    def trusted(self, fp: str) -> bool:
        fp = normalize_fingerprint(fp)
        with self._lock:
            return bool(fp) and (fp in self.configured or fp in self._pins)

    def rank(self, fp: str) -> tuple[int, float]:
        """Order of preference: configured ones in config order, then pins by acceptance time."""
        fp = normalize_fingerprint(fp)
        if fp in self.configured:
            return (0, float(self.configured.index(fp)))
        with self._lock:
            meta = self._pins.get(fp)
        return (1, float(meta.get("accepted", 0.0))) if meta else (2, 0.0)

    def pinned_for(self, name: str) -> str | None:
        """The fingerprint once accepted under this instance name (to tell "changed" from "new")."""
        with self._lock:
            for fp, meta in self._pins.items():
                if meta.get("name") == name:
                    return fp
        return None

    def pins(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {fp: dict(m) for fp, m in self._pins.items()}

    def accept(self, fp: str, name: str = "", address: str = "", cert_pem: str | None = None) -> None:
        fp = normalize_fingerprint(fp)
        if not fp:
            raise ValueError("not a SHA-256 fingerprint")
        with self._lock:
            # One pin per instance name: accepting a changed server replaces the old key, as ssh-keygen -R would.
            for old in [f for f, m in self._pins.items() if name and m.get("name") == name]:
                del self._pins[old]
            self._pins[fp] = {"name": name, "address": address, "accepted": time.time(),
                              **({"cert": cert_pem} if cert_pem else {})}
            self._save()

    def forget(self, fp: str) -> bool:
        with self._lock:
            gone = self._pins.pop(normalize_fingerprint(fp), None) is not None
            if gone:
                self._save()
        return gone

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"pins": self._pins}, f, indent=1)
        os.replace(tmp, self.path)


def classify(rec: ServiceRecord, trust: TrustStore) -> str:
    """``trusted``; ``new`` (never accepted); ``changed`` (this name was pinned with another key);
    ``plain`` (no TLS identity to check: never used from mDNS)."""
    if not rec.tls or not rec.fingerprint:
        return "plain"
    if trust.trusted(rec.fingerprint):
        return "trusted"
    return "changed" if trust.pinned_for(rec.name) else "new"


# -- the connection check -------------------------------------------------------


def fetch_certificate(host: str, port: int, timeout: float = 3.0) -> bytes:
    """The DER certificate a TLS server presents. Nothing is sent but the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we only read the certificate here; trust is decided by its fingerprint
    with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server presented no certificate")
    return der


def fingerprint_of_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pinned_context(der: bytes) -> ssl.SSLContext:
    """An SSL context that accepts exactly this certificate (and so only the holder of its key)."""
    ctx = ssl.create_default_context(cadata=ssl.DER_cert_to_PEM_cert(der))
    # The pin replaces the name check: addresses change with DHCP; the key does not.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# -- explaining it ----------------------------------------------------------------


def explain_pin_mismatch(name: str, address: str, pinned: str | None, seen: str, data_dir: str | Path | None = None,
                         admin_url: str = "http://127.0.0.1:8081/admin/backends") -> str:
    """What ``clawlan doctor`` (and the log) says when a server's key is not the one accepted."""
    where = f" ({Path(data_dir) / PINS_FILE})" if data_dir else ""
    head = (
        f"back end {name!r} at {address} presents a TLS key with fingerprint {show_fingerprint(seen)}"
        if seen else f"back end {name!r} at {address} has no TLS identity (plain HTTP)"
    )
    if pinned:
        lines = [
            head + ",",
            f"  but this front end accepted {show_fingerprint(pinned)} for that name{where}.",
            "  It is not used. Either the server was reinstalled (its state dir and key were replaced)",
            "  or another host is pretending to be it.",
        ]
    else:
        lines = [head + ", which this front end has never accepted. It is not used."]
    lines += [
        "  Check the fingerprint on the server itself: `clawlan serve` logs it at start, or run",
        "  openssl x509 -in ~/.local/state/clawlan/server/server-cert.pem -noout -fingerprint -sha256",
        f"  If it matches, accept it as admin at {admin_url}, or add it to frontend.trusted_backends",
        "  in the front end's config.",
    ]
    return "\n".join(lines)


def pin_report(records: list[ServiceRecord], trust: TrustStore, data_dir: str | Path | None = None) -> list[str]:
    """One explanation per advertised server that is not trusted (``clawlan doctor`` prints these)."""
    out = []
    for r in records:
        state = classify(r, trust)
        if state == "trusted":
            continue
        pinned = trust.pinned_for(r.name) if state == "changed" else None
        out.append(explain_pin_mismatch(r.name, f"{r.host}:{r.port}", pinned, r.fingerprint, data_dir))
    return out
