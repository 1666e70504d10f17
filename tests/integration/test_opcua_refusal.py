"""Why a secure connection failed, as the operator sees it: the source's error (and so the log and
the health detail) and `bridge browse` name the OPC UA status and what to do, against real asyncua
servers that refuse the gateway's certificate, refuse its login, or that the gateway refuses.

Three ways servers refuse an untrusted client certificate are covered: asyncua's own (a
ServiceFault to CreateSession), and refusing the secure channel itself, either with a ServiceFault
answering OpenSecureChannel (which asyncua's client turns into a bare ``AssertionError()``) or by
closing the connection. The last two are made by checking the channel's certificate in the test
server's OpenSecureChannel handler.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Server, ua
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.uaprocessor import UaProcessor
from asyncua.server.user_managers import UserManager
from asyncua.ua.ua_binary import struct_from_binary
from cryptography import x509
from structlog.testing import capture_logs
from support import free_port, wait_until

from bridge.connectors.opcua import OpcUaAddress, OpcUaSource, OpcUaSourceSettings
from bridge.connectors.opcua.certs import create_application_certificate, load_der, thumbprint
from bridge.errors import ConnectorError
from bridge.runtime.sources import SourceSupervisor
from bridge.types import SourceTag, TagSample

NODE = "nsu=urn:test:refusal;s=Value"


@dataclass
class Certs:
    root: Path
    server_cert: Path
    server_key: Path
    gateway_cert: Path
    gateway_key: Path
    other_cert: Path  # trusted by the servers, so their trust store is not empty


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    made = []
    for who in ("server", "gateway", "other"):
        cert, key = tmp_path / who / "cert.der", tmp_path / who / "key.pem"
        create_application_certificate(cert, key, common_name=who, hostnames=("localhost",))
        made += [cert, key]
    return Certs(tmp_path, made[0], made[1], made[2], made[3], made[4])


class _OnlyAlice(UserManager):
    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        return User(role=UserRole.User) if (username, password) == ("alice", "right") else None


@dataclass
class RunningServer:
    endpoint: str
    server: Server


async def _server(
    certs: Certs,
    trusted: Sequence[Path],
    *,
    cert: Path | None = None,
    key: Path | None = None,
) -> RunningServer:
    """A SignAndEncrypt asyncua server that trusts only the client certificates ``trusted``."""
    store_dir = certs.root / f"server-trust-{free_port()}"
    store_dir.mkdir()
    for i, path in enumerate(trusted):
        shutil.copy(path, store_dir / f"{i}.der")
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    server = Server(user_manager=_OnlyAlice())
    await server.init()
    server.set_endpoint(endpoint)
    server.set_security_policy(
        [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
        permission_ruleset=SimpleRoleRuleset(),
    )
    server.set_security_IDs(["Username"])
    await server.load_certificate(str(cert or certs.server_cert))
    await server.load_private_key(str(key or certs.server_key))
    store = TrustStore([store_dir], [])
    await store.load()
    options = (
        CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
    )
    server.set_certificate_validator(CertificateValidator(options, store))
    ns = await server.register_namespace("urn:test:refusal")
    await server.nodes.objects.add_variable(ua.NodeId("Value", ns), "Value", 1.0)
    await server.start()
    return RunningServer(endpoint, server)


@pytest_asyncio.fixture
async def refusing(certs: Certs) -> AsyncIterator[RunningServer]:
    """Trusts some other client, not the gateway."""
    running = await _server(certs, [certs.other_cert])
    try:
        yield running
    finally:
        await running.server.stop()


@pytest_asyncio.fixture
async def trusting(certs: Certs) -> AsyncIterator[RunningServer]:
    """Trusts the gateway."""
    running = await _server(certs, [certs.gateway_cert])
    try:
        yield running
    finally:
        await running.server.stop()


def _refuse_untrusted_channels(monkeypatch: pytest.MonkeyPatch, *, answer: bool) -> None:
    """Make the test servers check the channel's certificate on OpenSecureChannel and refuse an
    untrusted one: with a ServiceFault (BadSecurityChecksFailed) if ``answer``, else by closing
    the connection. Both are ways SDK servers refuse; asyncua's own server checks later."""
    original = UaProcessor.open_secure_channel

    def open_checked(self: UaProcessor, algohdr: Any, seqhdr: Any, body: Any) -> None:
        validator = self.iserver.certificate_validator
        sender = algohdr.SenderCertificate
        if (
            sender
            and isinstance(validator, CertificateValidator)
            and not self._connection.is_open()
        ):
            store = validator._trust_store
            assert store is not None
            if not store.is_trusted(x509.load_der_x509_certificate(sender)):
                if not answer:
                    self._transport.close()
                    return
                request = struct_from_binary(ua.OpenSecureChannelRequest, body)
                self._connection.select_policy(algohdr.SecurityPolicyURI, sender, None)
                fault = ua.ServiceFault()
                fault.ResponseHeader.ServiceResult = ua.StatusCode(
                    ua.StatusCodes.BadSecurityChecksFailed
                )
                self.send_response(
                    request.RequestHeader.RequestHandle, seqhdr, fault, ua.MessageType.SecureOpen
                )
                return
        original(self, algohdr, seqhdr, body)

    monkeypatch.setattr(UaProcessor, "open_secure_channel", open_checked)


@pytest.fixture
def refuse_at_open(monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_untrusted_channels(monkeypatch, answer=True)


@pytest.fixture
def drop_at_open(monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_untrusted_channels(monkeypatch, answer=False)


def _settings(certs: Certs, endpoint: str, **security: Any) -> OpcUaSourceSettings:
    client_pki = certs.root / "gateway-pki"
    if "pki_dir" not in security and not (client_pki / "trusted").exists():
        (client_pki / "trusted").mkdir(parents=True)
        shutil.copy(certs.server_cert, client_pki / "trusted" / "server.der")
    return OpcUaSourceSettings.model_validate(
        {
            "endpoint": endpoint,
            "timeout_s": 3,
            "username": "alice",
            "password": "right",
            "security": {
                "policy": "Basic256Sha256",
                "mode": "SignAndEncrypt",
                "certificate": str(certs.gateway_cert),
                "private_key": str(certs.gateway_key),
                "pki_dir": str(client_pki),
                **security,
            },
        }
    )


def _source(settings: OpcUaSourceSettings) -> OpcUaSource:
    return OpcUaSource("plant", settings, [SourceTag("v", OpcUaAddress.model_validate(NODE))])


async def _connect_error(settings: OpcUaSourceSettings) -> str:
    source = _source(settings)
    try:
        with pytest.raises(ConnectorError) as info:
            await source.connect()
    finally:
        await source.close()
    return str(info.value)


def _gateway_thumbprint(certs: Certs) -> str:
    return thumbprint(load_der(certs.gateway_cert))


async def test_refused_at_open_secure_channel_names_status_and_certificate(
    certs: Certs, refuse_at_open: None, refusing: RunningServer
) -> None:
    with capture_logs() as logs:
        message = await _connect_error(_settings(certs, refusing.endpoint))
    assert "AssertionError" not in message
    assert "BadSecurityChecksFailed" in message
    assert str(certs.gateway_cert) in message
    assert _gateway_thumbprint(certs) in message
    assert "trust" in message and "on the server" in message
    (logged,) = [e for e in logs if e["event"] == "connect_failed"]
    assert logged["log_level"] == "warning"
    assert logged["error"].startswith("BadSecurityChecksFailed: ") and logged["error"] in message


async def test_dropped_at_open_secure_channel_points_at_the_certificate(
    certs: Certs, drop_at_open: None, refusing: RunningServer
) -> None:
    message = await _connect_error(_settings(certs, refusing.endpoint))
    assert "closed or refused the secure channel" in message
    assert _gateway_thumbprint(certs) in message
    assert "on the server, trust" in message


async def test_refused_at_create_session_names_status_and_certificate(
    certs: Certs, refusing: RunningServer
) -> None:
    message = await _connect_error(_settings(certs, refusing.endpoint))
    assert "BadCertificateUntrusted" in message
    assert str(certs.gateway_cert) in message
    assert _gateway_thumbprint(certs) in message
    assert "on the server" in message
    # The server refused us; nothing in the gateway's own trust list is to blame.
    assert "bridge certs trust" not in message


async def test_health_detail_names_status_and_fix(
    certs: Certs, refuse_at_open: None, refusing: RunningServer
) -> None:
    async def deliver(batch: Sequence[TagSample]) -> None:
        pass

    supervisor = SourceSupervisor(
        _source(_settings(certs, refusing.endpoint)),
        "opcua",
        ["v"],
        deliver,
        lambda tags, reason: None,
        max_backoff_s=1.0,
    )
    task = asyncio.create_task(supervisor.run())
    try:
        await wait_until(lambda: supervisor.detail != "", timeout=15, what="a failed connect")
        health = supervisor.health()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert health.state == "down"
    assert "BadSecurityChecksFailed" in health.detail
    assert _gateway_thumbprint(certs) in health.detail
    assert "AssertionError" not in health.detail


async def test_application_uri_not_in_certificate_names_both_uris(
    certs: Certs, trusting: RunningServer
) -> None:
    message = await _connect_error(
        _settings(certs, trusting.endpoint, application_uri="urn:plant:gateway")
    )
    assert "BadCertificateUriInvalid" in message
    assert "urn:plant:gateway" in message and "urn:bridge:gateway" in message
    assert "bridge certs create --application-uri urn:plant:gateway" in message


async def test_login_refused_names_the_user(certs: Certs, trusting: RunningServer) -> None:
    settings = _settings(certs, trusting.endpoint).model_copy(update={"password": "wrong"})
    message = await _connect_error(settings)
    assert "BadUserAccessDenied" in message or "BadIdentityTokenRejected" in message
    assert "alice" in message and "password" in message


async def test_unknown_server_certificate_refused_filed_under_pki_servers(
    certs: Certs, trusting: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default trust folder for servers the gateway connects to is pki/servers.
    workdir = certs.root / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    settings = _settings(certs, trusting.endpoint)
    security = settings.security.model_dump(exclude={"pki_dir"})
    settings = settings.model_copy(
        update={"security": type(settings.security).model_validate(security)}
    )
    assert settings.security.pki_dir == "pki/servers"
    message = await _connect_error(settings)
    server_thumbprint = thumbprint(load_der(certs.server_cert))
    (filed,) = (workdir / "pki" / "servers" / "rejected").glob("*.der")
    assert filed.read_bytes() == load_der(certs.server_cert)
    assert not (workdir / "pki" / "servers" / "trusted").exists()
    assert "BadCertificateUntrusted" in message
    assert server_thumbprint in message
    assert f"bridge certs trust {server_thumbprint} --pki-dir pki/servers" in message


async def test_trust_on_first_use_only_while_trusted_is_empty(certs: Certs) -> None:
    first = await _server(certs, [certs.gateway_cert])
    second_cert, second_key = certs.root / "server2" / "cert.der", certs.root / "server2" / "k.pem"
    create_application_certificate(second_cert, second_key, hostnames=("localhost",))
    second = await _server(certs, [certs.gateway_cert], cert=second_cert, key=second_key)
    client_pki = certs.root / "tofu-pki"
    try:
        source = _source(
            _settings(certs, first.endpoint, pki_dir=str(client_pki), trust_on_first_use=True)
        )
        await source.connect()
        await source.close()
        (stored,) = (client_pki / "trusted").glob("*.der")
        assert stored.read_bytes() == load_der(certs.server_cert)

        message = await _connect_error(
            _settings(certs, second.endpoint, pki_dir=str(client_pki), trust_on_first_use=True)
        )
        assert "BadCertificateUntrusted" in message
        assert thumbprint(load_der(second_cert)) in message
        assert [p.read_bytes() for p in (client_pki / "trusted").glob("*.der")] == [
            load_der(certs.server_cert)
        ]
        (filed,) = (client_pki / "rejected").glob("*.der")
        assert filed.read_bytes() == load_der(second_cert)
    finally:
        await first.server.stop()
        await second.server.stop()


async def _bridge(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from bridge.cli import main; main()",
        *args,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_browse_prints_status_and_fix_without_traceback(
    certs: Certs, refuse_at_open: None, refusing: RunningServer
) -> None:
    (certs.root / "pki" / "servers" / "trusted").mkdir(parents=True)
    shutil.copy(certs.server_cert, certs.root / "pki" / "servers" / "trusted" / "server.der")
    code, out, err = await _bridge(
        "browse",
        refusing.endpoint,
        "--policy", "Basic256Sha256",
        "--certificate", "gateway/cert.der",
        "--private-key", "gateway/key.pem",
        "--username", "alice",
        "--password-env", "REFUSAL_PW",
        "--timeout", "3",
        cwd=certs.root,
        env={"REFUSAL_PW": "right"},
    )  # fmt: skip
    assert code != 0
    assert out == ""
    assert "Traceback" not in err
    assert "AssertionError" not in err
    assert "ConnectorError(" not in err  # the message itself, not its repr
    assert "BadSecurityChecksFailed" in err
    assert _gateway_thumbprint(certs) in err
    assert "gateway/cert.der" in err
