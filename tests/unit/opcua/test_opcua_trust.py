"""The trust list (bridge.connectors.opcua.trust) on real certificates and files; the server
roles."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from bridge.connectors.opcua._access import ReaderUserManager, ReadOnlyRuleset
from bridge.connectors.opcua.certs import create_application_certificate
from bridge.connectors.opcua.convert import make_node_id
from bridge.connectors.opcua.server_config import OpcUaServerUser
from bridge.connectors.opcua.trust import TrustList, UntrustedCertificate, thumbprint_of

NOW = dt.datetime.now(dt.UTC)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(
    name: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[str, rsa.RSAPrivateKey] | None = None,
    *,
    ca: bool = False,
    days: tuple[int, int] = (-1, 30),
    serial: int | None = None,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:{name}")]),
            critical=False,
        )
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _crl(issuer: str, key: rsa.RSAPrivateKey, revoked: list[int]) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .last_update(NOW - dt.timedelta(days=1))
        .next_update(NOW + dt.timedelta(days=30))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW).build()
        )
    return builder.sign(key, hashes.SHA256())


def _put(folder: Path, cert: x509.Certificate, name: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (name or f"{thumbprint_of(cert)}.der")).write_bytes(cert.public_bytes(Encoding.DER))


async def _status(trust: TrustList, cert: x509.Certificate) -> int | None:
    """None when trusted, else the status code of the refusal."""
    try:
        await trust.check(cert)
    except UntrustedCertificate as exc:
        return exc.status
    return None


@pytest.fixture
def ca(tmp_path: Path) -> dict[str, object]:
    root_key, inter_key = _key(), _key()
    root = _cert("root", root_key, ca=True)
    inter = _cert("inter", inter_key, ("root", root_key), ca=True)
    return {"root": root, "root_key": root_key, "inter": inter, "inter_key": inter_key}


async def test_empty_or_missing_trusted_refuses_without_error(tmp_path: Path) -> None:
    cert = _cert("hmi", _key())
    trust = TrustList(tmp_path / "nowhere", purpose="clients")
    with capture_logs() as logs, pytest.raises(UntrustedCertificate) as info:
        await trust.check(cert)
    text = str(info.value)
    assert thumbprint_of(cert) in text and "hmi" in text
    assert f"bridge certs trust {thumbprint_of(cert)} --pki-dir {tmp_path / 'nowhere'}" in text
    assert info.value.status == StatusCodes.BadCertificateUntrusted
    assert (tmp_path / "nowhere" / "rejected" / f"{thumbprint_of(cert)}.der").exists()
    (line,) = [e for e in logs if e["event"] == "certificate_rejected"]
    assert line["thumbprint"] == thumbprint_of(cert) and line["subject"] == "hmi"
    (tmp_path / "empty" / "trusted").mkdir(parents=True)
    assert await _status(TrustList(tmp_path / "empty", purpose="clients"), cert) is not None


async def test_ca_chain_through_issuers(tmp_path: Path, ca: dict[str, object]) -> None:
    leaf_key = _key()
    leaf = _cert("hmi", leaf_key, ("inter", ca["inter_key"]))  # type: ignore[arg-type]
    trust = TrustList(tmp_path, purpose="clients")
    _put(tmp_path / "issuers", ca["inter"])  # type: ignore[arg-type]
    _put(tmp_path / "issuers", ca["root"])  # type: ignore[arg-type]
    # Only issuers/: they complete chains but trust nothing by themselves.
    _put(tmp_path / "trusted", _cert("somebody-else", _key()))
    assert await _status(trust, leaf) == StatusCodes.BadCertificateUntrusted
    _put(tmp_path / "trusted", ca["root"], "root.pem")  # type: ignore[arg-type]
    assert await _status(trust, leaf) is None  # root trusted, intermediate from issuers/
    other = _cert("stranger", _key(), ("inter", _key()))  # same issuer name, other key
    assert await _status(trust, other) == StatusCodes.BadCertificateUntrusted


async def test_crl_of_the_issuer_revokes(tmp_path: Path, ca: dict[str, object]) -> None:
    inter_key = ca["inter_key"]
    leaf = _cert("hmi", _key(), ("inter", inter_key), serial=4242)  # type: ignore[arg-type]
    _put(tmp_path / "trusted", ca["root"])  # type: ignore[arg-type]
    _put(tmp_path / "issuers", ca["inter"])  # type: ignore[arg-type]
    trust = TrustList(tmp_path, purpose="servers")
    assert await _status(trust, leaf) is None
    # A CRL naming the issuer but signed by another key is not the issuer's: ignored.
    forged = _crl("inter", _key(), [4242])
    (tmp_path / "issuers" / "crl").mkdir()
    (tmp_path / "issuers" / "crl" / "forged.crl").write_bytes(forged.public_bytes(Encoding.DER))
    assert await _status(TrustList(tmp_path, purpose="servers"), leaf) is None
    real = _crl("inter", inter_key, [4242])  # type: ignore[arg-type]
    (tmp_path / "issuers" / "crl" / "inter.crl").write_bytes(real.public_bytes(Encoding.PEM))
    await asyncio.sleep(1.05)  # the running list sees the new CRL within a second
    assert await _status(trust, leaf) == StatusCodes.BadCertificateRevoked


async def test_expired_refused_even_when_trusted(tmp_path: Path) -> None:
    old = _cert("old", _key(), days=(-30, -1))
    _put(tmp_path / "trusted", old)
    assert await _status(TrustList(tmp_path, purpose="clients"), old) == (
        StatusCodes.BadCertificateTimeInvalid
    )


async def test_trust_on_first_use_only_while_trusted_is_empty(tmp_path: Path) -> None:
    first, second = _cert("plc-1", _key()), _cert("plc-2", _key())
    trust = TrustList(tmp_path, trust_on_first_use=True, purpose="servers")
    assert await _status(trust, first) is None  # commissioning: stored
    assert (tmp_path / "trusted" / f"{thumbprint_of(first)}.der").exists()
    assert await _status(trust, first) is None
    # trusted/ is no longer empty: a new certificate is refused, not added (a swapped server).
    assert await _status(trust, second) == StatusCodes.BadCertificateUntrusted
    assert not (tmp_path / "trusted" / f"{thumbprint_of(second)}.der").exists()
    assert (tmp_path / "rejected" / f"{thumbprint_of(second)}.der").exists()


async def test_changes_count_without_a_new_trust_list(tmp_path: Path) -> None:
    cert = _cert("hmi", _key())
    trust = TrustList(tmp_path, purpose="clients")
    assert await _status(trust, cert) is not None
    _put(tmp_path / "trusted", cert)
    assert await _status(trust, cert) is None  # a refusal reads a changed folder at once
    for path in (tmp_path / "trusted").iterdir():
        path.unlink()
    await asyncio.sleep(1.05)  # an acceptance relies on a listing at most one second old
    assert await _status(trust, cert) == StatusCodes.BadCertificateUntrusted


async def test_rejected_folder_capped(tmp_path: Path) -> None:
    trust = TrustList(tmp_path, rejected_cap=2, purpose="clients")
    certs = [_cert(f"c{i}", _key()) for i in range(4)]
    for cert in certs:
        assert await _status(trust, cert) is not None
        # distinct mtimes so "oldest" is well defined
        for p in (tmp_path / "rejected").iterdir():
            os.utime(p, (p.stat().st_mtime - 10, p.stat().st_mtime - 10))
    kept = sorted(p.name for p in (tmp_path / "rejected").iterdir())
    assert kept == sorted(f"{thumbprint_of(c)}.der" for c in certs[2:])


async def test_application_certificate_of_bridge_certs_create(tmp_path: Path) -> None:
    cert = create_application_certificate(tmp_path / "c.der", tmp_path / "k.pem")
    (tmp_path / "pki" / "trusted").mkdir(parents=True)
    shutil.copy(tmp_path / "c.der", tmp_path / "pki" / "trusted" / "gateway.der")
    assert await _status(TrustList(tmp_path / "pki", purpose="servers"), cert) is None


def test_roles_reader_and_operator_wrong_password() -> None:
    users = [
        OpcUaServerUser(username="r", password="pw"),
        OpcUaServerUser(username="o", password="pw", role="operator"),
    ]
    manager = ReaderUserManager(allow_anonymous=False, users=users)
    assert manager.get_user(None, "r", "wrong") is None
    assert manager.get_user(None, "nobody", "pw") is None
    assert manager.get_user(None) is None  # anonymous not enabled
    reader, operator = manager.get_user(None, "r", "pw"), manager.get_user(None, "o", "pw")
    rules = ReadOnlyRuleset()
    read = make_node_id(ObjectIds.ReadRequest_Encoding_DefaultBinary, 0)
    write = make_node_id(ObjectIds.WriteRequest_Encoding_DefaultBinary, 0)
    call = make_node_id(ObjectIds.CallRequest_Encoding_DefaultBinary, 0)
    assert rules.check_validity(reader, read, None) and rules.check_validity(operator, read, None)
    assert not rules.check_validity(reader, write, None)
    assert rules.check_validity(operator, write, None)
    # Operators call the feedback methods (Acknowledge/Confirm/Reject); readers may not.
    assert rules.check_validity(operator, call, None)
    assert not rules.check_validity(reader, call, None)
