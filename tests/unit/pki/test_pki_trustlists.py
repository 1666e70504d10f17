"""The trust-list operations on real folders (bridge.pki): a certificate inside a PEM bundle is
taken out without losing the others, a second identical change is refused, errors say what is
wrong; where-seen records stay small and bounded; the trust list records what it checks."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from bridge.connectors.opcua.trust import TrustList, UntrustedCertificate
from bridge.pki.certificates import thumbprint_of
from bridge.pki.seen import read_seen, record_seen
from bridge.pki.trustlists import (
    AlreadyInState,
    PkiError,
    TrustDir,
    UnknownCertificate,
    list_certificates,
    reject,
    remove,
    trust,
    trust_file,
)


def _cert(name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:test:{name}")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def test_a_certificate_leaves_a_pem_bundle_and_the_others_stay(tmp_path: Path) -> None:
    a, b = _cert("a"), _cert("b")
    bundle = tmp_path / "trusted" / "plant-ca.pem"
    bundle.parent.mkdir()
    bundle.write_bytes(a.public_bytes(Encoding.PEM) + b.public_bytes(Encoding.PEM))
    pki = TrustDir(tmp_path, "clients")

    (change,) = reject([pki], thumbprint_of(a)[:8])
    assert (change.before, change.after, change.files) == (
        "trusted",
        "rejected",
        (tmp_path / "rejected" / f"{thumbprint_of(a)}.der",),
    )
    assert x509.load_pem_x509_certificates(bundle.read_bytes()) == [b]
    listed = {(e.state, e.subject, e.path.name) for e in list_certificates([pki])}
    assert listed == {
        ("trusted", "b", "plant-ca.pem"),
        ("rejected", "a", f"{thumbprint_of(a)}.der"),
    }
    with pytest.raises(AlreadyInState, match="is rejected already"):
        reject([pki], thumbprint_of(a))

    (change,) = trust([pki], thumbprint_of(a))
    assert change.action == "certificate.trusted"
    assert list((tmp_path / "rejected").glob("*.der")) == []
    assert sorted(p.name for p in (tmp_path / "trusted").iterdir()) == sorted(
        [f"{thumbprint_of(a)}.der", "plant-ca.pem"]
    )
    reject([pki], thumbprint_of(b))
    assert not bundle.exists()  # its last certificate went: the file goes


def test_errors_name_what_is_wrong(tmp_path: Path) -> None:
    pki = TrustDir(tmp_path, "servers")
    with pytest.raises(PkiError, match="not a thumbprint"):
        trust([pki], "abc")
    with pytest.raises(UnknownCertificate, match="no certificate deadbeef in"):
        remove([pki], "DE:AD:BE:EF")
    not_a_cert = tmp_path / "notes.txt"
    not_a_cert.write_text("hello")
    with pytest.raises(PkiError, match="is not a certificate"):
        trust_file(pki, not_a_cert)
    (change,) = trust_file(pki, _write(tmp_path / "ca.der", _cert("ca")), issuer=True)
    assert (change.before, change.after, change.action) == (
        None,
        "issuers",
        "certificate.issuer_added",
    )


def _write(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(Encoding.DER))
    return path


def test_where_seen_stays_small_and_bounded(tmp_path: Path) -> None:
    for i in range(8):
        record_seen(tmp_path, "aa" * 20, "refused", peer=f"10.0.0.{i}", reason="x" * 1000)
    seen = read_seen(tmp_path, "aa" * 20)
    assert seen is not None and seen.refused == 8
    assert seen.peers == tuple(f"10.0.0.{i}" for i in range(3, 8))
    assert len(seen.reason) == 300
    record_seen(tmp_path, "aa" * 20, "accepted", peer="10.0.0.3", times=4)
    seen = read_seen(tmp_path, "aa" * 20)
    assert seen is not None and (seen.accepted, seen.last_outcome) == (4, "accepted")
    assert seen.peers[-1] == "10.0.0.3" and seen.reason == "x" * 300  # the last refusal's
    for tp in ("bb" * 20, "cc" * 20):
        record_seen(tmp_path, tp, "refused", cap=2)
    assert sorted(p.stem for p in (tmp_path / "seen").iterdir()) == ["bb" * 20, "cc" * 20]
    (tmp_path / "seen" / f"{'bb' * 20}.json").write_text("{not json")
    assert read_seen(tmp_path, "bb" * 20) is None


async def test_the_trust_list_records_refusals_each_and_acceptances_once_a_minute(
    tmp_path: Path,
) -> None:
    cert = _cert("hmi")
    trust_list = TrustList(tmp_path, purpose="clients")
    with pytest.raises(UntrustedCertificate):
        await trust_list.check(cert, peer="10.1.1.1")
    (tmp_path / "trusted").mkdir()
    _write(tmp_path / "trusted" / "hmi.der", cert)
    for _ in range(3):  # CreateSession, ActivateSession, the validator: one login
        await trust_list.check(cert, peer="10.1.1.2")
    record = json.loads((tmp_path / "seen" / f"{thumbprint_of(cert)}.json").read_text())
    assert (record["refused"], record["accepted"]) == (1, 1)  # the other two wait their minute
    assert record["peers"] == ["10.1.1.1", "10.1.1.2"] and record["last_outcome"] == "accepted"
