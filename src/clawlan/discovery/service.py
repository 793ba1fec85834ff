"""The DNS-SD contract between the back end and anyone browsing for it.

Service type ``_clawlan._tcp.local.``; one instance per model server. TXT
records (all strings):

=========  ==========================================================
``model``  model id as /v1/models reports it
``api``    API base path, ``/v1``
``version`` clawlan version
``auth``   ``1`` when a Bearer API key is required, else ``0``
``tls``    ``1`` when the service speaks HTTPS, else ``0``
=========  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

SERVICE_TYPE = "_clawlan._tcp.local."


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
        }

    @classmethod
    def from_txt(cls, name: str, host: str, port: int, txt: dict[bytes, bytes | None]) -> ServiceRecord:
        t = {k.decode(): (v or b"").decode() for k, v in txt.items()}
        return cls(
            name=name,
            host=host,
            port=port,
            model=t.get("model", ""),
            api=t.get("api", "/v1"),
            version=t.get("version", ""),
            auth=t.get("auth") == "1",
            tls=t.get("tls") == "1",
        )
