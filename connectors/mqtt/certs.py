"""Certificates for MQTT over mutual TLS (``bridge mqtt certs``): a plant CA, the broker's server
certificate and one client certificate per device and for the gateway.

Mosquitto with ``use_identity_as_username true`` takes a client certificate's CN as the user its
ACL knows, and ``pattern`` lines substitute it for ``%u`` inside topics: so a CN is an identity
and a topic level at once, and must not hold ``/``, ``+`` or ``#``.

Keys are EC P-256 (every MQTT stack and TLS 1.2 device library speaks ECDSA P-256), written as
unencrypted PKCS#8 PEM with mode 0600 from the call that creates the file; certificates are
SHA-256 signed PEM.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.private_files import create_private, replace_private

__all__ = ["CertError", "CertInfo", "create_ca", "describe", "issue", "load_certificate"]

# Devices' clocks drift and a broker may be a little behind: a certificate valid only from "now"
# would be refused as "not yet valid" by a peer whose clock is a few minutes late.
_BACKDATE = dt.timedelta(hours=1)
_CN_MAX = 64  # X.509 upper bound for a CommonName (RFC 5280 ub-common-name)
_TOPIC_SPECIALS = re.compile(r"[/+#]")
# A host name as the TLS hostname check compares it: ASCII labels, an optional leading "*.".
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")
_E = TypeVar("_E", bound=x509.ExtensionType)
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}


class CertError(ValueError):
    """A certificate cannot be made or read as asked; ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message}; fix: {hint}")
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class CertInfo:
    """What ``bridge mqtt certs show`` prints about one certificate."""

    subject_cn: str
    subject: str
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    is_ca: bool
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    eku: tuple[str, ...]
    sha256: str

    @property
    def expired(self) -> bool:
        return self.not_after <= dt.datetime.now(dt.UTC)


# --- making certificates -----------------------------------------------------------------------


def create_ca(
    cert_path: Path,
    key_path: Path,
    *,
    common_name: str = "bridge MQTT CA",
    days: int = 3650,
    force: bool = False,
) -> x509.Certificate:
    """Write a self-signed CA certificate and its key; the broker's ``cafile`` and every
    client's trust anchor. Existing files are refused unless ``force``."""
    _check_days(days)
    _check_common_name(common_name, topic_level=False)
    _check_free(cert_path, key_path, force=force)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    now = dt.datetime.now(dt.UTC)
    cert = (
        _builder(name, name, key.public_key(), now - _BACKDATE, now + dt.timedelta(days=days))
        # path_length 0: this CA signs end-entity certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _write(cert, key, cert_path, key_path, force=force)
    return cert


def issue(
    ca_cert: Path,
    ca_key: Path,
    cert_path: Path,
    key_path: Path,
    *,
    common_name: str,
    server: bool,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    days: int = 825,
    force: bool = False,
) -> x509.Certificate:
    """Write a certificate signed by the CA and its new key.

    ``server``: serverAuth with a SubjectAltName of ``dns``/``ips`` (clients check the broker's
    address against these, never against the CN). Otherwise clientAuth, ``common_name`` being
    the identity the broker's ACL sees. The certificate ends no later than the CA does (a chain
    is only as valid as its CA). Existing files are refused unless ``force``.
    """
    _check_days(days)
    _check_common_name(common_name, topic_level=True)
    san = _subject_alt_name(dns, ips, server=server)
    _check_free(cert_path, key_path, force=force)
    authority, authority_key = _load_authority(ca_cert, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    not_after = min(now + dt.timedelta(days=days), authority.not_valid_after_utc)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(
            _name(common_name), authority.subject, key.public_key(), now - _BACKDATE, not_after
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(_authority_key_id(authority), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    cert = builder.sign(authority_key, hashes.SHA256())
    _write(cert, key, cert_path, key_path, force=force)
    return cert


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    # A leaf signs the TLS handshake (ECDSA); a CA signs certificates and revocation lists.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(authority: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # Point at the CA's own SubjectKeyIdentifier when it has one (a CA made elsewhere may have
    # computed it differently), so strict verifiers (X509_STRICT) can match the chain.
    try:
        ski = authority.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(_ec_public(authority))
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


# --- checks --------------------------------------------------------------------------------------


def _check_days(days: int) -> None:
    if days <= 0:
        raise CertError(
            f"validity of {days} days", "give a positive number of days, e.g. --days 825"
        )


def _check_common_name(common_name: str, *, topic_level: bool) -> None:
    if not common_name.strip() or len(common_name) > _CN_MAX:
        raise CertError(
            f"common name {common_name!r} is empty or longer than {_CN_MAX} characters",
            "give a short name such as the device id, e.g. --cn pump-a",
        )
    if topic_level and _TOPIC_SPECIALS.search(common_name):
        raise CertError(
            f"common name {common_name!r} contains '/', '+' or '#': the broker uses the CN as "
            "the username, which ACL patterns (%u) put into a topic as one level",
            "use letters, digits, '-', '_' or '.', e.g. --cn pump-a",
        )


def _subject_alt_name(
    dns: Sequence[str], ips: Sequence[str], *, server: bool
) -> x509.SubjectAlternativeName | None:
    if not server:
        if dns or ips:
            raise CertError(
                "--dns/--ip name the broker's addresses, a client certificate has none",
                "add --server for the broker's certificate, or leave --dns/--ip out",
            )
        return None
    if not dns and not ips:
        raise CertError(
            "a server certificate needs the names clients connect to: TLS checks the broker's "
            "address against the SubjectAltName, not the CN",
            "add --dns broker.plant and/or --ip 10.0.0.5 (repeatable)",
        )
    names: list[x509.GeneralName] = [x509.DNSName(_dns_name(d)) for d in dns]
    names.extend(x509.IPAddress(_ip_address(i)) for i in ips)
    return x509.SubjectAlternativeName(names)


def _dns_name(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:  # clients compare an address they dial only with IP entries, never DNS ones
        raise CertError(f"--dns {value} is an IP address", f"use --ip {value}")
    if not _DNS_NAME.fullmatch(value):
        raise CertError(
            f"--dns {value!r} is not a host name",
            "give ASCII labels (an internationalised name in its xn-- form), e.g. broker.plant",
        )
    return value


def _ip_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise CertError(
            f"--ip {value!r} is not an IP address", "give e.g. --ip 10.0.0.5 (or --dns for names)"
        ) from None


def _check_free(*paths: Path, force: bool) -> None:
    if force:
        return
    taken = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if taken:
        raise CertError(
            f"{' and '.join(taken)} exist{'s' if len(taken) == 1 else ''}; not overwritten",
            "choose other paths, or add --force to replace them (devices using the old "
            "certificate then need the new one)",
        )


# --- reading -------------------------------------------------------------------------------------


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM (or DER) file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read {path}: {exc.strerror}", "check the path") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)[0]
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertError(
            f"{path} holds no certificate", "give a certificate file (.pem), not a key"
        ) from None


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    """The key of ``path``, or None if it is not an EC key (it cannot match our CA then)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read {path}: {exc.strerror}", "check the --ca-key path") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's word for "encrypted, and no password given"
        raise CertError(
            f"{path} is encrypted",
            f"write a decrypted copy: openssl pkey -in {path} -out ca-plain.key",
        ) from None
    except ValueError:
        raise CertError(
            f"{path} holds no PEM private key", "give the CA's key file (--ca-key)"
        ) from None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _load_authority(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = load_certificate(cert_path)
    if not _is_ca(cert):
        raise CertError(
            f"{cert_path} ({cert.subject.rfc4514_string()}) is not a CA certificate",
            "give the CA made by `bridge mqtt certs ca` as --ca",
        )
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise CertError(
            f"the CA {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}",
            "make a new CA (bridge mqtt certs ca) and issue every certificate again",
        )
    key = _load_private_key(key_path)
    if key is None or _spki(key.public_key()) != _spki(cert.public_key()):
        raise CertError(
            f"{key_path} is not the private key of {cert_path}",
            "give the key file written together with that CA (--ca-key)",
        )
    return cert, key


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca:
        return False
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True  # no KeyUsage: not restricted
    return usage.key_cert_sign


def _ec_public(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertError("the CA's key is not an EC key", "make the CA with `bridge mqtt certs ca`")
    return key


def _spki(key: object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return b""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def describe(path: Path) -> CertInfo:
    """Subject, issuer, validity, SANs, EKU and SHA-256 fingerprint of a certificate file."""
    cert = load_certificate(path)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    san = _extension(cert, x509.SubjectAlternativeName)
    eku = _extension(cert, x509.ExtendedKeyUsage)
    return CertInfo(
        subject_cn=str(cns[0].value) if cns else "",
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_ca=_is_ca(cert),
        dns=tuple(san.get_values_for_type(x509.DNSName)) if san else (),
        ips=tuple(str(i) for i in san.get_values_for_type(x509.IPAddress)) if san else (),
        eku=tuple(_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku) if eku else (),
        # The form `openssl x509 -fingerprint -sha256` prints, to compare with a broker's files.
        sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    )


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


# --- writing -------------------------------------------------------------------------------------


def _write(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    cert_path: Path,
    key_path: Path,
    *,
    force: bool,
) -> None:
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # the broker and devices load it unattended
    ).decode("ascii")
    pem_cert = cert.public_bytes(serialization.Encoding.PEM)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if force:
            replace_private(key_path, pem_key)
        else:
            create_private(key_path, pem_key)
    except FileExistsError:  # appeared since _check_free looked
        raise CertError(
            f"{key_path} exists; not overwritten", "add --force to replace it"
        ) from None
    # "x": a certificate file that appeared meanwhile is not overwritten without force either.
    with cert_path.open("wb" if force else "xb") as out:
        out.write(pem_cert)
