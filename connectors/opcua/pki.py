"""What an operator does with a trust-list folder (``bridge certs trust`` / ``bridge certs list``):
trust a rejected certificate by its thumbprint, trust a certificate file, list the folders.

The running gateway picks the change up by itself (``bridge.connectors.opcua.trust`` watches the
folders).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bridge.connectors.opcua.trust import load_certificates, subject_of, thumbprint_of

__all__ = ["Entry", "PkiError", "list_folder", "trust_file", "trust_rejected"]

_FOLDERS = ("trusted", "issuers", "rejected")


class PkiError(Exception):
    """An operator action that cannot be done; the message says what to do instead."""


@dataclass(frozen=True)
class Entry:
    folder: str
    thumbprint: str
    subject: str
    not_after: datetime
    is_ca: bool

    @property
    def expired(self) -> bool:
        return self.not_after < datetime.now(UTC)


def trust_rejected(pki_dir: Path, thumbprint: str) -> Path:
    """Move the rejected certificate whose thumbprint starts with ``thumbprint`` to trusted/."""
    wanted = thumbprint.strip().lower().replace(":", "")
    if len(wanted) < 8 or any(c not in "0123456789abcdef" for c in wanted):
        raise PkiError(f"{thumbprint!r} is neither a file nor a thumbprint (at least 8 hex digits)")
    rejected = pki_dir / "rejected"
    found = [
        (path, cert)
        for path, cert in _certificates_in(rejected)
        if thumbprint_of(cert).startswith(wanted)
    ]
    if not found:
        known = ", ".join(thumbprint_of(c)[:12] for _, c in _certificates_in(rejected)) or "none"
        raise PkiError(f"no certificate {wanted} in {rejected} (rejected ones: {known})")
    if len({thumbprint_of(c) for _, c in found}) > 1:
        raise PkiError(f"{wanted} matches several rejected certificates: give more digits")
    path, cert = found[0]
    target = _write(pki_dir / "trusted", cert)
    path.unlink(missing_ok=True)
    return target


def trust_file(pki_dir: Path, source: Path, *, issuer: bool = False) -> list[Path]:
    """Copy the certificate(s) of ``source`` (DER or PEM) to trusted/ (or issuers/)."""
    certificates = load_certificates_file(source)
    folder = pki_dir / ("issuers" if issuer else "trusted")
    return [_write(folder, cert) for cert in certificates]


def load_certificates_file(source: Path) -> list[x509.Certificate]:
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {source}: {exc.strerror}") from exc
    try:
        if b"-----BEGIN" in data:
            return list(x509.load_pem_x509_certificates(data))
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise PkiError(f"{source} is not a certificate (DER or PEM)") from exc


def list_folder(pki_dir: Path) -> list[Entry]:
    entries = []
    for folder in _FOLDERS:
        for base in (pki_dir / folder, pki_dir / folder / "certs"):
            for cert in load_certificates([base]):
                entries.append(
                    Entry(
                        folder,
                        thumbprint_of(cert),
                        subject_of(cert),
                        cert.not_valid_after_utc,
                        _is_ca(cert),
                    )
                )
    return entries


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _certificates_in(folder: Path) -> list[tuple[Path, x509.Certificate]]:
    found = []
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        try:
            found += [(path, cert) for cert in load_certificates_file(path)]
        except PkiError:
            continue
    return found


def _write(folder: Path, cert: x509.Certificate) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{thumbprint_of(cert)}.der"
    # Written aside and renamed: the watching gateway never reads half a file.
    partial = folder / f".{target.name}.partial"
    partial.write_bytes(cert.public_bytes(Encoding.DER))
    os.replace(partial, target)
    return target
