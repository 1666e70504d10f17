"""The client trust store and the server's roles, without sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from asyncua.ua.object_ids import ObjectIds

from connectors.opcua._access import ReaderUserManager, ReadOnlyRuleset
from connectors.opcua.convert import make_node_id
from connectors.opcua.server_config import OpcUaServerUser
from connectors.opcua.trust import TrustStore, UntrustedCertificate


def test_unknown_refused_and_rejected_folder_capped(tmp_path: Path) -> None:
    store = TrustStore(tmp_path, rejected_cap=2)
    for i in range(4):
        with pytest.raises(UntrustedCertificate, match="rejected"):
            store.check(f"cert-{i}".encode())
        # distinct mtimes so "oldest" is well defined
        for p in (tmp_path / "rejected").iterdir():
            os.utime(p, (p.stat().st_mtime - 10, p.stat().st_mtime - 10))
    kept = sorted(p.read_bytes() for p in (tmp_path / "rejected").iterdir())
    assert kept == [b"cert-2", b"cert-3"]


def test_trusted_accepted_and_tofu_only_when_enabled(tmp_path: Path) -> None:
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "a.der").write_bytes(b"known")
    TrustStore(tmp_path).check(b"known")
    with pytest.raises(UntrustedCertificate):
        TrustStore(tmp_path).check(b"new")
    TrustStore(tmp_path, trust_on_first_use=True).check(b"new")
    TrustStore(tmp_path).check(b"new")  # stored on first use, trusted from now on


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
