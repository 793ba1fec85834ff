"""The DNS-SD contract between the back end and anyone browsing for it.

Service type ``_clawlan._tcp.local.``; one instance per model server. TXT
records (all strings):

=========  ==========================================================
``model``  model id as /v1/models reports it
``api``    API base path, ``/v1``
``version`` clawlan version
``auth``   ``1`` when a Bearer API key is required, else ``0``
``tls``    ``1`` when the service speaks HTTPS, else ``0``
``fp``     SHA-256 fingerprint (hex) of the server's TLS certificate
``role``   ``router`` for ``clawlan router`` (routers skip it as a worker); absent for a server
=========  ==========================================================

Everything in a TXT record is a claim anyone on the LAN can make; the ``fp``
only helps a front end find the pin it already trusts (discovery/trust.py),
and the TLS handshake proves the server holds the matching key.
"""

from __future__ import annotations

from dataclasses import dataclass

SERVICE_TYPE = "_clawlan._tcp.local."
ROUTER_ROLE = "router"


@dataclass(frozen=True)
class ServiceRecord:
    """What a browser learns about one advertised back end."""

    name: str
    host: str  # an address, ready for a URL
    port: int
    model: str = ""
    api: str = "/v1"
    version: str = ""
    auth: bool = False
    tls: bool = False
    fingerprint: str = ""
    role: str = ""  # "router" for clawlan router; "" for a model server

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def txt(self) -> dict[str, str]:
        return {
            "model": self.model,
            "api": self.api,
            "version": self.version,
            "auth": "1" if self.auth else "0",
            "tls": "1" if self.tls else "0",
            **({"fp": self.fingerprint} if self.fingerprint else {}),
            **({"role": self.role} if self.role else {}),
        }

    @classmethod
    def from_txt(cls, name: str, host: str, port: int, txt: dict[bytes, bytes | None]) -> ServiceRecord:
        # A TXT record is anyone's bytes: undecodable ones must not stop the browser (errors="replace").
        t = {
            (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)):
            (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or ""))
            for k, v in txt.items()
        }
        try:
            port = int(port)
        except (TypeError, ValueError):
            port = 0
        return cls(
            name=name,
            host=host,
            port=port,
            model=t.get("model", ""),
            api=t.get("api", "/v1"),
            version=t.get("version", ""),
            auth=t.get("auth") == "1",
            tls=t.get("tls") == "1",
            fingerprint=normalize_fingerprint(t.get("fp", "")),
            role=t.get("role", ""),
        )


def normalize_fingerprint(fp: str) -> str:
    """Lowercase hex without separators; "" when it is not a SHA-256 fingerprint."""
    h = fp.strip().lower().replace(":", "").replace(" ", "")
    if h.startswith("sha256"):
        h = h[6:].lstrip("/=-")
    return h if len(h) == 64 and all(c in "0123456789abcdef" for c in h) else ""


def show_fingerprint(fp: str) -> str:
    """The fingerprint as people compare it: colon-separated pairs, as openssl prints it."""
    return ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper()
