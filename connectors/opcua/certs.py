"""Application certificates for OPC UA (``bridge certs create``).

OPC UA peers check that the certificate's SubjectAltName URI equals the ApplicationUri the
application announces; a mismatch is refused (BadCertificateUriInvalid) by strict servers, so the
URI written here is the one the client and the server of this package announce.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "APPLICATION_URI",
    "create_application_certificate",
    "load_der",
    "thumbprint",
    "write_private",
]

# asyncua's Client announces this URI unless told otherwise; the source sets it explicitly too.
APPLICATION_URI = "urn:bridge:gateway"


def create_application_certificate(
    cert_path: Path,
    key_path: Path,
    *,
    application_uri: str = APPLICATION_URI,
    hostnames: tuple[str, ...] = (),
    common_name: str = "bridge",
    days: int = 365 * 2,
    overwrite: bool = False,
) -> x509.Certificate:
    """Write a self-signed application certificate (DER) and its private key (PEM).

    The certificate is valid as client and as server (the gateway is both), carries the
    ApplicationUri as SAN URI and each host name as SAN DNS (the local host name by default).
    The key file is created with mode 0600 (never readable by others, not even for a moment);
    an existing key is replaced only with ``overwrite`` (else ``FileExistsError``).
    """
    names = hostnames or (socket.gethostname(),)
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    san.extend(x509.DNSName(h) for h in names)
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        common_name,
        {"organizationName": "bridge"},
        san,
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
        days=days,
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        key_path.unlink(missing_ok=True)
    write_private(key_path, cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    return cert


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from its first byte and write ``data``.

    O_EXCL: an existing file, or a symlink planted where the key goes, is refused rather than
    written through.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def load_der(path: Path) -> bytes:
    """A certificate file (DER or PEM) as DER bytes."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return data


def thumbprint(der: bytes) -> str:
    """SHA-1 thumbprint, the identifier OPC UA tools use in trust-list file names."""
    return hashlib.sha1(der).hexdigest()
