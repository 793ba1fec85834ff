"""A service's identity on the LAN: a self-signed TLS certificate made at first start.

Used by ``clawlan serve`` and ``clawlan router`` alike (each keeps its own, so
pinning a router never pins the node on the same box). It lives in discovery
because the fingerprint is what discovery's trust (trust.py) pins.

A front end cannot tell a real clawlan server from any other host that
advertises ``_clawlan._tcp`` on mDNS: names and addresses are free to claim.
What it can check is a key. So a server that serves the LAN speaks HTTPS by
default with a certificate it makes once and keeps (under its state
directory, the private key readable by its owner only), and advertises the
certificate's SHA-256 fingerprint in its TXT record. The front end pins that
fingerprint (an admin accepts it once, as with an SSH host key) and then only
ever talks to the holder of the matching private key.

No CA is involved: an office has none, and a pinned self-signed certificate
gives the same guarantee with nothing to renew (the certificate is valid for
100 years; it is replaced only by deleting it, which front ends then report
as a changed server).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CERT_NAME = "server-cert.pem"
KEY_NAME = "server-key.pem"


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path
    fingerprint: str  # lowercase hex SHA-256 of the DER certificate


def fingerprint_of_pem(pem: str | bytes) -> str:
    text = pem.decode() if isinstance(pem, bytes) else pem
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(text)).hexdigest()


def _make(cert_path: Path, key_path: Path, kind: str) -> None:
    # Imported here: only a LAN service without a configured certificate needs it.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname() or "clawlan"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"clawlan {kind} {host}"[:64])])
    now = datetime.datetime.now(datetime.UTC)
    # Names are informative only: front ends check the pinned fingerprint, not the name (DHCP moves addresses).
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    if host.replace("-", "").replace(".", "").isalnum():
        sans.insert(0, x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=36500))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The key file is created 0600 from the start (no window where it is world-readable).
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_identity(state_dir: str | Path | None = None, kind: str = "server") -> Identity:
    """The service's certificate and key, made on first call and reused after (``kind``: server, router)."""
    d = Path(state_dir) if state_dir else state_dir(kind)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    cert, key = d / CERT_NAME, d / KEY_NAME
    if not (cert.is_file() and key.is_file()):
        _make(cert, key, kind)
        log.info("made this %s's TLS identity in %s", kind, d)
    elif key.stat().st_mode & 0o077:
        os.chmod(key, 0o600)  # tighten a key someone copied in with loose permissions
    return Identity(cert, key, fingerprint_of_pem(cert.read_text()))


def server_identity(tls_cert: str | None, tls_key: str | None, lan: bool, tls: bool | None,
                    state_dir: str | Path | None = None, kind: str = "server") -> Identity | None:
    """What a service listens with: the configured certificate, else its own on the LAN, else plain HTTP.

    ``tls`` is ``server.tls`` (or the router's ``--tls``): None (default) means
    on when serving the LAN and off on loopback, where no one else can listen in.
    """
    if tls_cert and tls_key:
        return Identity(Path(tls_cert), Path(tls_key), fingerprint_of_pem(Path(tls_cert).read_text()))
    if tls is False or (tls is None and not lan):
        return None
    return ensure_identity(state_dir, kind)
