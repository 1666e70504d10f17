"""The certificate and key files OPC UA settings name, checked by ``bridge validate``.

Each file must be there and readable, a private key must belong to its certificate, and the
ApplicationUri must be a SubjectAltName URI of the application certificate (peers refuse the
connection otherwise, with BadCertificateUriInvalid or only BadSecurityChecksFailed). Paths are
taken as the gateway opens them: relative ones from the working directory. Reads local files
only; imports no protocol library (validation never needs asyncua).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
    load_pem_private_key,
)

from bridge.connectors.opcua.config import OpcUaSourceSettings
from bridge.connectors.opcua.server_config import OpcUaServerSettings
from bridge.plugins import SettingsProblem

__all__ = ["check_server_files", "check_source_files"]

Key = tuple[str | int, ...]
# Certificates and keys are a few KiB; a larger file is the wrong file (or not a file at all).
_MAX_BYTES = 1024 * 1024
_CREATE = "`bridge certs create` writes both"
_FIX_CREATE = (
    "run `bridge certs create` (it writes the certificate and its key) or correct the path"
)


def check_source_files(settings: Any) -> list[SettingsProblem]:
    """Files of an ``opcua`` source block."""
    assert isinstance(settings, OpcUaSourceSettings)
    security = settings.security
    problems = _application(
        ("security",), security.certificate, security.private_key, security.application_uri
    )
    if security.server_certificate:
        problems += _certificate(
            ("security", "server_certificate"),
            security.server_certificate,
            "copy the server's application certificate there, or remove server_certificate to "
            "check it against the trust list",
        )[1]
    if settings.user_certificate and settings.user_private_key:
        problems += _pair((), settings.user_certificate, settings.user_private_key, user=True)[1]
    return problems


def check_server_files(settings: Any) -> list[SettingsProblem]:
    """Files of an ``opcua-server`` output block."""
    assert isinstance(settings, OpcUaServerSettings)
    problems = _application(
        (), settings.certificate, settings.private_key, settings.application_uri
    )
    for i, user in enumerate(settings.user_certificates):
        problems += _certificate(
            ("user_certificates", i, "certificate"),
            user.certificate,
            "copy the user's certificate there (DER or PEM)",
        )[1]
    return problems


def _application(
    block: Key, cert_path: str | None, key_path: str | None, application_uri: str
) -> list[SettingsProblem]:
    if not cert_path:
        return []
    if not key_path:
        return _certificate((*block, "certificate"), cert_path, _FIX_CREATE)[1]
    cert, problems = _pair(block, cert_path, key_path, user=False)
    if cert is not None:
        problems += _uri(block, cert, cert_path, application_uri)
    return problems


def _pair(
    block: Key, cert_path: str, key_path: str, *, user: bool
) -> tuple[x509.Certificate | None, list[SettingsProblem]]:
    names = ("user_certificate", "user_private_key") if user else ("certificate", "private_key")
    fix = (
        "give the user certificate and the private key it was issued with" if user else _FIX_CREATE
    )
    cert, problems = _certificate((*block, names[0]), cert_path, fix)
    key_problem, key = _private_key((*block, names[1]), key_path, fix)
    if key_problem is not None:
        problems.append(key_problem)
    if cert is not None and key is not None and _public(cert) != _public_of_key(key):
        problems.append(
            SettingsProblem(
                (*block, names[1]),
                f"{key_path} is not the private key of {cert_path}",
                f"give the key created with this certificate ({_CREATE}), or the certificate "
                "of this key",
            )
        )
    return cert, problems


def _certificate(
    key: Key, path: str, fix: str
) -> tuple[x509.Certificate | None, list[SettingsProblem]]:
    data = _read(key, path, fix)
    if isinstance(data, SettingsProblem):
        return None, [data]
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data), []
        return x509.load_der_x509_certificate(data), []
    except ValueError:
        return None, [SettingsProblem(key, f"{path} is not a certificate (DER or PEM)", fix)]


def _private_key(
    key: Key, path: str, fix: str
) -> tuple[SettingsProblem | None, PrivateKeyTypes | None]:
    data = _read(key, path, fix)
    if isinstance(data, SettingsProblem):
        return data, None
    try:
        if b"-----BEGIN" in data:
            return None, load_pem_private_key(data, password=None)
        return None, load_der_private_key(data, password=None)
    except TypeError:  # cryptography's word for "encrypted, and no password given"
        return (
            SettingsProblem(
                key,
                f"{path} is encrypted with a password",
                "give the key without a password (keep it readable only by the gateway, mode 0600)",
            ),
            None,
        )
    except (ValueError, UnsupportedAlgorithm):
        return SettingsProblem(key, f"{path} is not a private key (PEM or DER)", fix), None


def _read(key: Key, path: str, fix: str) -> bytes | SettingsProblem:
    file = Path(path)
    where = "" if file.is_absolute() else " (relative paths start in the working directory)"
    try:
        if not file.exists():
            return SettingsProblem(key, f"{path} not found{where}", fix)
        if not file.is_file():
            return SettingsProblem(key, f"{path} is not a file", fix)
        if file.stat().st_size > _MAX_BYTES:
            return SettingsProblem(
                key, f"{path} is larger than 1 MiB: not a certificate or key", fix
            )
        return file.read_bytes()
    except OSError as exc:
        return SettingsProblem(
            key, f"{path} cannot be read: {exc.strerror}", "let the gateway's user read it"
        )


def _uri(
    block: Key, cert: x509.Certificate, cert_path: str, application_uri: str
) -> list[SettingsProblem]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if application_uri in uris:
        return []
    recreate = (
        f"re-create the certificate with `bridge certs create --application-uri {application_uri}`"
    )
    fix = f"set application_uri: {uris[0]}, or {recreate}" if uris else recreate
    has = f"its URI is {', '.join(uris)}" if uris else "it has no SubjectAltName URI"
    return [
        SettingsProblem(
            (*block, "application_uri"),
            f"{application_uri} is not the ApplicationUri of {cert_path} ({has}): OPC UA peers "
            "refuse the connection",
            fix,
        )
    ]


def _public(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _public_of_key(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
