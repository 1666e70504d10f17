"""`bridge validate` checks the certificate and key files an OPC UA source and the opcua-server
output name: present, readable, the key belongs to the certificate, the ApplicationUri is the
certificate's SAN URI. Real files made with `bridge certs create`'s code; paths are relative to
the working directory, as when the gateway opens them."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bridge.connectors.opcua.certs import create_application_certificate
from bridge.errors import ConfigError, ConfigIssue
from bridge.prepare import prepare

_MAPPING = """\
version: 1
sources:
  scada:
    kind: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    security:
      policy: Basic256Sha256
      mode: SignAndEncrypt
      certificate: {source_cert}
      private_key: {source_key}
      application_uri: {source_uri}
assets:
  p1:
    tags:
      vibration: {{source: scada, address: "nsu=urn:x;s=P1.V"}}
outputs:
  hmi:
    kind: opcua-server
    certificate: {server_cert}
    private_key: {server_key}
    application_uri: {server_uri}
    user_certificates:
      - {{certificate: {user_cert}}}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    create_application_certificate(Path("pki/own/cert.der"), Path("pki/own/key.pem"))
    create_application_certificate(
        Path("pki/hmi/cert.der"), Path("pki/hmi/key.pem"), application_uri="urn:bridge:hmi"
    )
    create_application_certificate(Path("users/op.der"), Path("users/op.pem"))
    # a PEM copy of the certificate: both encodings are accepted
    cert = x509.load_der_x509_certificate(Path("pki/own/cert.der").read_bytes())
    Path("pki/own/cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    return tmp_path


def _issues(workdir: Path, **files: str) -> list[ConfigIssue]:
    values = {
        "source_cert": "pki/own/cert.der",
        "source_key": "pki/own/key.pem",
        "source_uri": "urn:bridge:gateway",
        "server_cert": "pki/hmi/cert.der",
        "server_key": "pki/hmi/key.pem",
        "server_uri": "urn:bridge:hmi",
        "user_cert": "users/op.der",
        **files,
    }
    mapping = workdir / "mapping.yaml"
    mapping.write_text(_MAPPING.format(**values))
    try:
        prepare(mapping, env={})
    except ConfigError as err:
        return err.issues
    return []


def test_matching_files_pass(workdir: Path) -> None:
    assert _issues(workdir) == []
    assert _issues(workdir, source_cert="pki/own/cert.pem") == []


def test_key_of_another_certificate(workdir: Path) -> None:
    (issue,) = _issues(workdir, source_key="pki/hmi/key.pem")
    assert (issue.line, issue.key) == (10, "sources.scada.security.private_key")
    assert "pki/hmi/key.pem is not the private key of pki/own/cert.der" in issue.message
    assert "bridge certs create" in issue.hint


def test_application_uri_not_in_san(workdir: Path) -> None:
    issues = _issues(workdir, source_uri="urn:plant:gw", server_uri="urn:bridge:gateway")
    by_key = {i.key: i for i in issues}
    assert set(by_key) == {"sources.scada.security.application_uri", "outputs.hmi.application_uri"}
    source = by_key["sources.scada.security.application_uri"]
    assert source.line == 11
    assert "urn:plant:gw" in source.message and "urn:bridge:gateway" in source.message
    assert "--application-uri urn:plant:gw" in source.hint
    assert by_key["outputs.hmi.application_uri"].line == 21
    assert "urn:bridge:hmi" in by_key["outputs.hmi.application_uri"].message


def test_missing_and_unreadable_files(workdir: Path) -> None:
    Path("junk.der").write_bytes(b"not a certificate")
    issues = _issues(
        workdir, server_cert="junk.der", server_key="pki/hmi/nope.pem", user_cert="users/x.der"
    )
    by_key = {i.key: i for i in issues}
    assert set(by_key) == {
        "outputs.hmi.certificate",
        "outputs.hmi.private_key",
        "outputs.hmi.user_certificates.0.certificate",
    }
    assert "junk.der is not a certificate" in by_key["outputs.hmi.certificate"].message
    assert "pki/hmi/nope.pem not found" in by_key["outputs.hmi.private_key"].message
    assert by_key["outputs.hmi.user_certificates.0.certificate"].line == 23
    for issue in issues:
        assert issue.hint


def test_a_directory_is_not_a_key(workdir: Path) -> None:
    (issue,) = _issues(workdir, source_key="pki/own")
    assert issue.key == "sources.scada.security.private_key"
    assert "not a file" in issue.message
