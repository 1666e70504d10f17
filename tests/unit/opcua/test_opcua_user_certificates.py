"""X.509 user identities on the prediction server: which certificate logs in with which role."""

from __future__ import annotations

from pathlib import Path

from bridge.connectors.opcua._access import (
    CertificateRole,
    ReaderUserManager,
    RoleUser,
    UserCertificate,
)
from bridge.connectors.opcua.certs import create_application_certificate


def _der(tmp_path: Path, name: str) -> bytes:
    create_application_certificate(tmp_path / f"{name}.der", tmp_path / f"{name}.pem")
    return (tmp_path / f"{name}.der").read_bytes()


def test_known_user_certificate_gets_its_role(tmp_path: Path) -> None:
    alice, bob = _der(tmp_path, "alice"), _der(tmp_path, "bob")
    manager = ReaderUserManager(
        False,
        [],
        {alice: CertificateRole("alice", "operator"), bob: CertificateRole("bob", "reader")},
    )
    user = manager.get_user(None, certificate=UserCertificate(alice))
    assert isinstance(user, RoleUser) and (user.name, user.bridge_role) == ("alice", "operator")
    user = manager.get_user(None, certificate=UserCertificate(bob + alice))  # a chain: leaf first
    assert isinstance(user, RoleUser) and user.bridge_role == "reader"


def test_unknown_or_application_certificate_logs_nobody_in(tmp_path: Path) -> None:
    alice, stranger = _der(tmp_path, "alice"), _der(tmp_path, "stranger")
    manager = ReaderUserManager(True, [], {alice: CertificateRole("alice", "operator")})
    assert manager.get_user(None, certificate=UserCertificate(stranger)) is None
    # Anonymous token on a channel whose application certificate is alice's: anonymous, not alice.
    user = manager.get_user(None, certificate=alice)
    assert user is not None and not isinstance(user, RoleUser)
    closed = ReaderUserManager(False, [], {alice: CertificateRole("alice", "operator")})
    assert closed.get_user(None, certificate=alice) is None
