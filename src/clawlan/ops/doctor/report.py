"""What a doctor run produces: results with their fixes, the back end it checked, and the printed report."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from urllib.parse import urlsplit

from clawlan.errors import ConfigError


class Status(IntEnum):
    PASS = 0
    SKIP = -1  # shown, but never worsens the exit status
    WARN = 1
    FAIL = 2


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status.name, "detail": self.detail, "fix": self.fix}


@dataclass
class Target:
    host: str
    port: int
    scheme: str = "http"
    source: str = "flag --backend"
    explicit_scheme: bool = False  # the user wrote http:// or https://; else the TXT record's tls flag decides

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_backend(text: str, source: str = "flag --backend") -> Target:
    """HOST:PORT or a URL; the port defaults to the seed's 8080."""
    raw = text.strip()
    u = urlsplit(raw if "://" in raw else f"http://{raw}")
    try:
        port = u.port or 8080
    except ValueError:
        raise ConfigError(
            f"{source} {text!r}: the port is not a number 1-65535; write HOST:PORT, e.g. 192.168.1.100:8080"
        ) from None
    if not u.hostname:
        raise ConfigError(f"{source} {text!r} has no host; write HOST:PORT, e.g. 192.168.1.100:8080")
    return Target(u.hostname, port, u.scheme or "http", source, explicit_scheme="://" in raw)


class Results:
    """The list each check appends to; the check mixins (network, service, machine) share it."""

    checks: list[Check]

    def add(self, name: str, status: Status, detail: str, fix: str = "") -> Check:
        c = Check(name, status, detail, fix)
        self.checks.append(c)
        return c

    @property
    def worst(self) -> Status:
        return max((c.status for c in self.checks), default=Status.PASS)


def ranges(ports: list[int]) -> str:
    """8080, 8082-8090: ports as people write them."""
    ports = sorted(ports)
    out, start = [], ports[0]
    for a, b in zip(ports, ports[1:] + [None], strict=True):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            if b is not None:
                start = b
    return ", ".join(out)


def render(checks: list[Check], target: Target) -> str:
    lines = [f"clawlan doctor: back end {target.url} (from {target.source})", ""]
    for c in checks:
        lines.append(f"{c.status.name:<5} {c.name:<15} {c.detail}")
        if c.fix and c.status is not Status.PASS:
            # A fix may be several lines (a pin explanation): each is indented under the first.
            first, *rest = c.fix.splitlines()
            lines.append(f"{'':6}{'':15} fix: {first}")
            lines.extend(f"{'':6}{'':15}      {line.strip()}" for line in rest)
    worst = max((c.status for c in checks), default=Status.PASS)
    counts = {s: sum(1 for c in checks if c.status is s) for s in (Status.PASS, Status.WARN, Status.FAIL)}
    lines.append("")
    lines.append(
        f"{counts[Status.PASS]} passed, {counts[Status.WARN]} warnings, {counts[Status.FAIL]} failed; "
        f"exit status {max(int(worst), 0)}"
    )
    return "\n".join(lines)
