"""TLS settings of the MES output and the drift webhook are checked when the mapping is
validated: missing files, a key of another certificate, a CA file that is no certificate, a
certificate without its key, TLS settings on an http:// URL. Each is one issue at the key."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import testca

from bridge.client_tls import ClientTls
from bridge.config import load_mapping
from bridge.errors import ConfigError, ConfigIssue


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> testca.TlsFiles:
    return testca.make_ca(tmp_path_factory.mktemp("pki"))


def _issues(tmp_path: Path, url: str, tls: str) -> list[ConfigIssue]:
    file = tmp_path / "mapping.yaml"
    file.write_text(
        "version: 1\nsources: {}\nassets: {}\noutputs:\n  mes:\n    kind: mes-rest\n"
        f"    url: {url}\n    tls: {tls}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_mapping(file, env={})
    return info.value.issues


def test_valid_settings_build_a_verifying_context(ca: testca.TlsFiles) -> None:
    tls = ClientTls(
        ca_file=str(ca.ca), client_certificate=str(ca.client_cert), client_key=str(ca.client_key)
    )
    context = tls.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    # Only the plant CA is trusted, not the public ones.
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "bridge test CA"),),)
    ]


def test_missing_ca_file(tmp_path: Path) -> None:
    [issue] = _issues(tmp_path, "https://mes.local/e", "{ca_file: /nonexistent/plant-ca.pem}")
    assert (issue.key, issue.line) == ("outputs.mes.tls", 8)
    assert "ca_file: no such file: /nonexistent/plant-ca.pem" in issue.message
    assert "relative" in issue.hint


def test_ca_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    [issue] = _issues(tmp_path, "https://mes.local/e", f"{{ca_file: {junk}}}")
    assert "holds no usable CA certificate" in issue.message
    assert "PEM" in issue.hint


def test_key_of_another_certificate(tmp_path: Path, ca: testca.TlsFiles) -> None:
    tls = f"{{ca_file: {ca.ca}, client_certificate: {ca.client_cert}, client_key: {ca.server_key}}}"
    [issue] = _issues(tmp_path, "https://mes.local/e", tls)
    assert "client_key does not belong to client_certificate" in issue.message


def test_certificate_without_key(tmp_path: Path, ca: testca.TlsFiles) -> None:
    [issue] = _issues(tmp_path, "https://mes.local/e", f"{{client_certificate: {ca.client_cert}}}")
    assert "go together" in issue.message and issue.hint


def test_tls_on_http_url(tmp_path: Path, ca: testca.TlsFiles) -> None:
    [issue] = _issues(tmp_path, "http://mes.local/e", f"{{ca_file: {ca.ca}}}")
    assert "not https://" in issue.message and "https://" in issue.hint


def test_webhook_tls_on_http_url(tmp_path: Path, ca: testca.TlsFiles) -> None:
    from bridge.config.spec import DriftConfig

    with pytest.raises(ValueError, match="webhook_tls is set but the URL is not https://"):
        DriftConfig.model_validate(
            {"webhook": "http://ml.local/retrain", "webhook_tls": {"ca_file": str(ca.ca)}}
        )
    ok = DriftConfig.model_validate(
        {"webhook": "https://ml.local/retrain", "webhook_tls": {"ca_file": str(ca.ca)}}
    )
    assert ok.webhook_tls is not None and ok.webhook_tls.ca_file == str(ca.ca)
