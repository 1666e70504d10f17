"""What ``explain`` says for each way a secure connection fails (the integration tests prove the
common ones against real servers; this table covers the rest without sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from bridge.connectors.opcua._refusal import Attempt, explain, status_of
from bridge.connectors.opcua.certs import create_application_certificate, load_der, thumbprint
from bridge.connectors.opcua.config import OpcUaSourceSettings
from bridge.connectors.opcua.trust import UntrustedCertificate


@pytest.fixture
def attempt(tmp_path: Path) -> Attempt:
    create_application_certificate(tmp_path / "cert.der", tmp_path / "key.pem")
    return Attempt(certificate=load_der(tmp_path / "cert.der"))


def _settings(**kw: object) -> OpcUaSourceSettings:
    return OpcUaSourceSettings.model_validate(
        {
            "endpoint": "opc.tcp://plc:4840",
            "security": {
                "policy": "Basic256Sha256",
                "mode": "SignAndEncrypt",
                "certificate": "pki/own/cert.der",
                "private_key": "pki/own/key.pem",
            },
            **kw,
        }
    )


@pytest.mark.parametrize(
    ("status", "settings", "phrases"),
    [
        (
            "BadCertificateRevoked",
            {},
            ["refused the gateway's application certificate pki/own/cert.der", "on the server"],
        ),
        ("BadCertificateTimeInvalid", {}, ["outside its validity", "bridge certs create --force"]),
        (
            "BadCertificateUriInvalid",
            {},
            ["ApplicationUri urn:bridge:gateway", "it has urn:bridge:gateway"],
        ),
        ("BadSecurityPolicyRejected", {}, ["does not offer security policy Basic256Sha256"]),
        ("BadIdentityTokenRejected", {}, ["anonymous login", "username and password"]),
        (
            "BadUserAccessDenied",
            {"username": "op", "password_file": "/run/secrets/pw"},
            ["user 'op'", "password_file"],
        ),
        (
            "BadIdentityTokenInvalid",
            {"user_certificate": "u.der", "user_private_key": "u.pem"},
            ["user certificate u.der"],
        ),
        ("BadTooManySessions", {}, ["The server has reached its maximum number of sessions"]),
    ],
)
def test_status_and_advice(
    attempt: Attempt, status: str, settings: dict[str, object], phrases: list[str]
) -> None:
    code = getattr(StatusCodes, status)
    text = explain(ua.UaStatusCodeError(code), _settings(**settings), attempt)
    assert text.startswith(f"{status}: ")
    for phrase in phrases:
        assert phrase in text


def test_our_certificate_is_named_with_its_thumbprint(attempt: Attempt) -> None:
    assert attempt.certificate is not None
    text = explain(ua.UaStatusCodeError(StatusCodes.BadSecurityChecksFailed), _settings(), attempt)
    assert f"thumbprint {thumbprint(attempt.certificate)}" in text


def test_bare_assertion_error_uses_the_fault_read_from_the_channel(attempt: Attempt) -> None:
    attempt.reached = True
    attempt.open_fault = StatusCodes.BadSecurityChecksFailed
    assert explain(AssertionError(), _settings(), attempt).startswith("BadSecurityChecksFailed: ")
    attempt.open_fault = None
    text = explain(AssertionError(), _settings(), attempt)
    assert "refused the secure channel" in text and "AssertionError()" in text


def test_channel_closed_before_it_opened_points_at_our_certificate(attempt: Attempt) -> None:
    exc = ConnectionError("connection lost")
    assert explain(exc, _settings(), attempt) == repr(exc)  # never reached the server
    attempt.reached = True
    assert "on the server, trust pki/own/cert.der" in explain(exc, _settings(), attempt)
    attempt.channel_opened = True  # lost later: not a refusal of the channel
    assert explain(exc, _settings(), attempt) == repr(exc)
    no_security = OpcUaSourceSettings(endpoint="opc.tcp://plc:4840")
    attempt.channel_opened = False
    assert explain(exc, no_security, Attempt(reached=True)) == repr(exc)


def test_the_gateways_own_refusal_wins_over_the_status(attempt: Attempt) -> None:
    attempt.refused_server = UntrustedCertificate(
        thumbprint="ab" * 20,
        subject="plc",
        reason="the trust list is empty",
        command=f"bridge certs trust {'ab' * 20} --pki-dir pki/servers",
        status=StatusCodes.BadCertificateUntrusted,
    )
    text = explain(ua.UaStatusCodeError(StatusCodes.BadCertificateUntrusted), _settings(), attempt)
    assert text.startswith("BadCertificateUntrusted: the gateway does not trust the server's")
    assert f"pki/servers/rejected/{'ab' * 20}.der" in text
    assert text.endswith(f"bridge certs trust {'ab' * 20} --pki-dir pki/servers")


def test_other_failures_keep_their_repr(attempt: Attempt) -> None:
    exc = ConnectionRefusedError(111, "Connect call failed")
    assert explain(exc, _settings(), attempt) == repr(exc)
    assert explain(TimeoutError(), _settings(), attempt) == "TimeoutError()"


def test_status_found_in_the_cause_chain() -> None:
    try:
        try:
            raise ua.UaStatusCodeError(StatusCodes.BadCertificateUntrusted)
        except ua.UaError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert status_of(outer) == StatusCodes.BadCertificateUntrusted
    assert status_of(ValueError()) is None
