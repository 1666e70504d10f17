"""Certificate files of a trust list: reading them (DER or PEM, several per PEM file), naming
them (SHA-1 thumbprint, common name, ApplicationUri) and writing one so that a watching
gateway never reads half a file."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

__all__ = [
    "CERTIFICATE_SUFFIXES",
    "application_uri_of",
    "certificate_files",
    "is_ca",
    "load_certificates",
    "parse_certificates",
    "subject_of",
    "thumbprint_of",
    "write_atomically",
    "write_certificate",
]

log = structlog.get_logger(__name__)

CERTIFICATE_SUFFIXES = (".der", ".pem", ".crt", ".cer")


def thumbprint_of(certificate: x509.Certificate) -> str:
    """SHA-1 of the DER bytes in hex: the name OPC UA tools give a certificate file."""
    return hashlib.sha1(certificate.public_bytes(Encoding.DER)).hexdigest()


def subject_of(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else certificate.subject.rfc4514_string()


def application_uri_of(certificate: x509.Certificate) -> str | None:
    """The SAN URI: what an OPC UA application announces as its ApplicationUri."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def parse_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a DER or PEM file's bytes; ``ValueError`` if there is none."""
    if b"-----BEGIN" in data:
        return list(x509.load_pem_x509_certificates(data))
    return [x509.load_der_x509_certificate(data)]


def certificate_files(folders: Iterable[Path]) -> list[Path]:
    """The files of ``folders`` named like certificates, sorted per folder; missing ones skipped."""
    found: list[Path] = []
    for folder in folders:
        try:
            entries = sorted(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        found += [p for p in entries if p.suffix.lower() in CERTIFICATE_SUFFIXES and p.is_file()]
    return found


def load_certificates(folders: Iterable[Path]) -> list[x509.Certificate]:
    """Every readable certificate in ``folders``; an unreadable file is logged and skipped."""
    found: list[x509.Certificate] = []
    for path in certificate_files(folders):
        try:
            found += parse_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("unreadable_certificate", path=str(path), error=repr(exc))
    return found


def write_atomically(path: Path, data: bytes) -> None:
    """Written aside and renamed: a reader sees the old file or the new one, never half of one.
    The name aside is unique, so two writers of one path do not share it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_certificate(folder: Path, certificate: x509.Certificate) -> Path:
    """``folder/<thumbprint>.der``, the name OPC UA tools use."""
    target = folder / f"{thumbprint_of(certificate)}.der"
    write_atomically(target, certificate.public_bytes(Encoding.DER))
    return target
