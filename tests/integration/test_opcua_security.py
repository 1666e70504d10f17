"""Security end to end: our OpcUaSource against our PredictionServer with SignAndEncrypt + users
(password and X.509 user certificates), both sides checking certificates against their trust
stores; Write refused by role and AccessLevel; and a raw client on a None channel.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from support import free_port

from bridge.connectors.opcua import OpcUaAddress, OpcUaSource, OpcUaSourceSettings, PredictionServer
from bridge.connectors.opcua.certs import create_application_certificate
from bridge.connectors.opcua.server_config import (
    LoginLockout,
    OpcUaServerCertificateUser,
    OpcUaServerSettings,
    OpcUaServerUser,
)
from bridge.errors import ConnectorError
from bridge.types import PredictionSlot, Quality, SinkContext, SourceTag

NS = "urn:test:secure"
SLOT = PredictionSlot("P1", "rul", "1.0.0", "c" * 64)
NODE = f"nsu={NS};s=Predictions.P1.rul.Value"
pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Pki:
    root: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    server_pki: Path  # the server's trust store
    endpoint: str
    operator_cert: Path  # X.509 user certificates known to the server, by role
    operator_key: Path
    reader_cert: Path
    reader_key: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pki]:
    root = tmp_path_factory.mktemp("pki")
    server_cert, server_key = root / "server" / "cert.der", root / "server" / "key.pem"
    client_cert, client_key = root / "client" / "cert.der", root / "client" / "key.pem"
    create_application_certificate(server_cert, server_key, hostnames=("localhost",))
    create_application_certificate(client_cert, client_key, hostnames=("localhost",))
    server_pki = root / "server-pki"
    (server_pki / "trusted").mkdir(parents=True)
    shutil.copy(client_cert, server_pki / "trusted" / "gateway.der")
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    users = root / "users"
    for who in ("operator", "reader"):
        create_application_certificate(
            users / f"{who}.der", users / f"{who}.pem", common_name=f"{who}-person"
        )
    settings = OpcUaServerSettings(
        endpoint=endpoint,
        namespace=NS,
        security_policies=["Basic256Sha256_SignAndEncrypt", "Aes256_Sha256_RsaPss_Sign"],
        certificate=str(server_cert),
        private_key=str(server_key),
        pki_dir=str(server_pki),
        # Every test here logs in from 127.0.0.1, some on purpose with bad credentials.
        login_lockout=LoginLockout(after_failures=1000),
        users=[
            OpcUaServerUser(username="hmi", password="s3cret"),
            OpcUaServerUser(username="ops", password="0ps-pw", role="operator"),
        ],
        user_certificates=[
            OpcUaServerCertificateUser(certificate=str(users / "operator.der"), role="operator"),
            OpcUaServerCertificateUser(certificate=str(users / "reader.der")),
        ],
    )
    server = PredictionServer("hmi", settings, SinkContext("gw", (SLOT,)))
    await server.start()
    try:
        yield Pki(
            root,
            server_cert,
            server_key,
            client_cert,
            client_key,
            server_pki,
            endpoint,
            users / "operator.der",
            users / "operator.pem",
            users / "reader.der",
            users / "reader.pem",
        )
    finally:
        await server.close()


def _source(pki: Pki, client_pki: Path, **kw: object) -> OpcUaSource:
    security = {
        "policy": "Basic256Sha256",
        "mode": "SignAndEncrypt",
        "certificate": str(pki.client_cert),
        "private_key": str(pki.client_key),
        "pki_dir": str(client_pki),
        **kw.pop("security", {}),  # type: ignore[dict-item]
    }
    settings = OpcUaSourceSettings.model_validate(
        {
            "endpoint": pki.endpoint,
            "timeout_s": 3,
            "security": security,
            "username": "hmi",
            "password": "s3cret",
            **kw,
        }
    )
    tag = SourceTag("rul", OpcUaAddress.model_validate(NODE))
    return OpcUaSource("hmi", settings, [tag])


def _trusting(pki: Pki, name: str) -> Path:
    """A client trust store that holds the server certificate."""
    client_pki = pki.root / name
    (client_pki / "trusted").mkdir(parents=True)
    shutil.copy(pki.server_cert, client_pki / "trusted" / "server.der")
    return client_pki


async def _first_batch(source: OpcUaSource) -> list[object]:
    async for batch in source.samples():
        return list(batch)
    raise AssertionError("no batch")


async def test_sign_and_encrypt_with_user_works(secure: Pki) -> None:
    source = _source(secure, _trusting(secure, "ok-pki"))
    await source.connect()
    try:
        (sample,) = await _first_batch(source)
        # The node exists and was read over the encrypted session (no prediction yet: Bad data).
        assert sample.tag == "rul"  # type: ignore[attr-defined]
        assert sample.reason == "BadWaitingForInitialData"  # type: ignore[attr-defined]
        assert sample.quality is Quality.BAD  # type: ignore[attr-defined]
    finally:
        await source.close()


async def test_password_from_file_works(secure: Pki, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    source = _source(
        secure, _trusting(secure, "file-pki"), password=None, password_file=str(secret)
    )
    await source.connect()
    await source.close()


async def test_bad_password_refused(secure: Pki) -> None:
    source = _source(secure, _trusting(secure, "badpw-pki"), password="wrong")
    with pytest.raises(ConnectorError, match=r"BadUserAccessDenied|BadIdentityTokenRejected"):
        await source.connect()
    assert not source.connected


async def test_unknown_server_certificate_refused_and_filed(secure: Pki) -> None:
    client_pki = secure.root / "empty-pki"
    source = _source(secure, client_pki, security={"rejected_cap": 1})
    with pytest.raises(ConnectorError):
        await source.connect()
    rejected = list((client_pki / "rejected").glob("*.der"))
    assert [p.read_bytes() for p in rejected] == [secure.server_cert.read_bytes()]
    assert not (client_pki / "trusted").exists()


async def test_trust_on_first_use_only_when_asked(secure: Pki) -> None:
    client_pki = secure.root / "tofu-pki"
    source = _source(secure, client_pki, security={"trust_on_first_use": True})
    await source.connect()
    await source.close()
    trusted = list((client_pki / "trusted").glob("*.der"))
    assert [p.read_bytes() for p in trusted] == [secure.server_cert.read_bytes()]


async def test_untrusted_client_certificate_refused_by_server(secure: Pki) -> None:
    stranger_cert, stranger_key = secure.root / "s" / "cert.der", secure.root / "s" / "key.pem"
    create_application_certificate(stranger_cert, stranger_key, hostnames=("localhost",))
    source = _source(
        secure,
        _trusting(secure, "stranger-pki"),
        security={"certificate": str(stranger_cert), "private_key": str(stranger_key)},
    )
    with pytest.raises(ConnectorError, match=r"BadCertificateUntrusted|BadSecurityChecksFailed"):
        await source.connect()


async def test_x509_user_certificate_identity_works(secure: Pki) -> None:
    source = _source(
        secure,
        _trusting(secure, "x509-pki"),
        username=None,
        password=None,
        user_certificate=str(secure.reader_cert),
        user_private_key=str(secure.reader_key),
    )
    await source.connect()
    try:
        (sample,) = await _first_batch(source)
        assert sample.reason == "BadWaitingForInitialData"  # type: ignore[attr-defined]
    finally:
        await source.close()


async def test_unknown_user_certificate_refused(secure: Pki) -> None:
    # A valid certificate whose private key the client holds, but not one the server knows.
    cert, key = secure.root / "mallory" / "cert.der", secure.root / "mallory" / "key.pem"
    create_application_certificate(cert, key, common_name="mallory")
    source = _source(
        secure,
        _trusting(secure, "mallory-pki"),
        username=None,
        password=None,
        user_certificate=str(cert),
        user_private_key=str(key),
    )
    with pytest.raises(ConnectorError, match="BadUserAccessDenied"):
        await source.connect()


async def test_user_certificate_without_its_private_key_refused(secure: Pki) -> None:
    # The known operator certificate, but the token signed with another key: no login.
    stranger_key = secure.root / "forger" / "key.pem"
    create_application_certificate(secure.root / "forger" / "cert.der", stranger_key)
    source = _source(
        secure,
        _trusting(secure, "forger-pki"),
        username=None,
        password=None,
        user_certificate=str(secure.operator_cert),
        user_private_key=str(stranger_key),
    )
    with pytest.raises(ConnectorError, match=r"BadIdentityTokenInvalid|BadUserAccessDenied"):
        await source.connect()


async def _session(
    pki: Pki, *, user: tuple[str, str] | None = None, user_cert: tuple[Path, Path] | None = None
) -> Client:
    """A plain asyncua client on SignAndEncrypt, logged in with a password or a certificate."""
    client = Client(pki.endpoint, timeout=3)
    client.application_uri = "urn:bridge:gateway"
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(pki.client_cert),
        str(pki.client_key),
        server_certificate=str(pki.server_cert),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    if user is not None:
        client.set_user(user[0])
        client.set_password(user[1])
    if user_cert is not None:
        await client.load_client_certificate(str(user_cert[0]))
        await client.load_private_key(user_cert[1])
    await client.connect()
    return client


def _writes(node: ua.NodeId) -> ua.WriteParameters:
    """Write the Value attribute and, separately, the DisplayName of ``node``."""
    value = ua.WriteValue()
    value.NodeId, value.AttributeId = node, ua.AttributeIds.Value
    value.Value = ua.DataValue(ua.Variant(42.0, ua.VariantType.Double))
    name = ua.WriteValue()
    name.NodeId, name.AttributeId = node, ua.AttributeIds.DisplayName
    name.Value = ua.DataValue(ua.Variant(ua.LocalizedText("hacked")))
    params = ua.WriteParameters()
    params.NodesToWrite = [value, name]
    return params


async def _prediction_nodes(client: Client) -> list[ua.NodeId]:
    ns = await client.get_namespace_index(NS)
    fields = ("Value", "Score", "ModelName", "ModelVersion", "Quality", "Timestamp", "InputAge")
    return [ua.NodeId(f"Predictions.P1.rul.{f}", ns) for f in fields]


async def _values(client: Client, nodes: list[ua.NodeId]) -> list[tuple[object, object]]:
    values = await client.uaclient.read_attributes(nodes, ua.AttributeIds.Value)
    return [(dv.Value.Value if dv.Value else None, dv.StatusCode) for dv in values]


@pytest.mark.parametrize("login", ["password", "certificate"])
async def test_reader_write_is_refused_as_a_service(secure: Pki, login: str) -> None:
    if login == "password":
        client = await _session(secure, user=("hmi", "s3cret"))
    else:
        client = await _session(secure, user_cert=(secure.reader_cert, secure.reader_key))
    try:
        nodes = await _prediction_nodes(client)
        before = await _values(client, nodes)
        for node in nodes:
            with pytest.raises(UaStatusCodeError) as info:
                await client.uaclient.write(_writes(node))
            assert info.value.code == ua.StatusCodes.BadUserAccessDenied
        assert await _values(client, nodes) == before
    finally:
        await client.disconnect()


@pytest.mark.parametrize("login", ["password", "certificate"])
async def test_operator_write_meets_read_only_prediction_nodes(secure: Pki, login: str) -> None:
    """An operator may call Write, but every prediction node is read-only (AccessLevel
    CurrentRead, no session is Admin): each item is refused, nothing changes."""
    if login == "password":
        client = await _session(secure, user=("ops", "0ps-pw"))
    else:
        client = await _session(secure, user_cert=(secure.operator_cert, secure.operator_key))
    try:
        nodes = await _prediction_nodes(client)
        before = await _values(client, nodes)
        for node in nodes:
            access = await client.uaclient.read_attributes([node], ua.AttributeIds.AccessLevel)
            assert access[0].Value.Value == ua.AccessLevel.CurrentRead.mask
            results = await client.uaclient.write(_writes(node))  # the service itself is allowed
            assert [r.value for r in results] == [ua.StatusCodes.BadUserAccessDenied] * 2
        assert await _values(client, nodes) == before
    finally:
        await client.disconnect()


async def _raw_none_channel(endpoint: str) -> Client:
    """A client on a None secure channel that skips endpoint selection (it asks no questions)."""
    client = Client(endpoint, timeout=3)
    await client.connect_socket()
    await client.send_hello()
    await client.open_secure_channel()
    return client


async def _refused(client: Client, call: object) -> None:
    try:
        with pytest.raises((UaStatusCodeError, UaError, ConnectionError, TimeoutError)) as info:
            await call  # type: ignore[misc]
        if isinstance(info.value, UaStatusCodeError):
            assert info.value.code == ua.StatusCodes.BadSecurityPolicyRejected
    finally:
        client.disconnect_socket()


async def test_none_channel_refused_for_session_services(secure: Pki) -> None:
    # Discovery stays possible on None (clients learn the server certificate that way) ...
    client = await _raw_none_channel(secure.endpoint)
    endpoints = await client.uaclient.get_endpoints(ua.GetEndpointsParameters())
    assert endpoints and all(e.SecurityMode != ua.MessageSecurityMode.None_ for e in endpoints)
    client.disconnect_socket()

    # ... but CreateSession, ActivateSession and Read are answered BadSecurityPolicyRejected.
    client = await _raw_none_channel(secure.endpoint)
    params = ua.CreateSessionParameters()
    params.ClientDescription = ua.ApplicationDescription()
    params.EndpointUrl = secure.endpoint
    params.SessionName = "raw"
    params.RequestedSessionTimeout = 10_000
    params.ClientNonce = b"\x00" * 32
    await _refused(client, client.uaclient.create_session(params))

    client = await _raw_none_channel(secure.endpoint)
    activate = ua.ActivateSessionParameters()
    token = ua.UserNameIdentityToken()
    token.UserName, token.Password = "hmi", b"s3cret"
    activate.UserIdentityToken = token
    await _refused(client, client.uaclient.activate_session(activate))

    client = await _raw_none_channel(secure.endpoint)
    read = ua.ReadParameters()
    read.NodesToRead = [ua.ReadValueId(NodeId=ua.NodeId(2255, 0), AttributeId=13)]
    await _refused(client, client.uaclient.read(read))


# --- The secure channel's certificate is what the trust list checks -------------------------


def _stranger(pki: Pki, name: str) -> tuple[Path, Path]:
    """A valid application certificate (with its key) that the server does not trust."""
    cert, key = pki.root / name / "cert.der", pki.root / name / "key.pem"
    if not cert.exists():
        create_application_certificate(cert, key, hostnames=("localhost",))
    return cert, key


async def _secured_client(pki: Pki, cert: Path, key: Path) -> Client:
    client = Client(pki.endpoint, timeout=3)
    client.application_uri = "urn:bridge:gateway"
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(cert),
        str(key),
        server_certificate=str(pki.server_cert),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    return client


def _send_client_certificate(client: Client, der: bytes | None) -> None:
    """Make ``client`` put ``der`` in CreateSession.ClientCertificate, whatever its channel uses."""
    send = client.uaclient.create_session

    async def create_session(params: ua.CreateSessionParameters) -> ua.CreateSessionResult:
        params.ClientCertificate = der
        return await send(params)

    client.uaclient.create_session = create_session  # type: ignore[method-assign]


async def _read_server_state(client: Client) -> object:
    read = ua.ReadParameters()
    read.NodesToRead = [ua.ReadValueId(NodeId=ua.NodeId(2259, 0), AttributeId=13)]
    return (await client.uaclient.read(read))[0].Value


async def _assert_session_refused(client: Client, code: int) -> None:
    client.set_user("hmi")
    client.set_password("s3cret")
    try:
        with pytest.raises(UaStatusCodeError) as info:
            await client.connect()
            await _read_server_state(client)  # reached only if the session was granted
        assert info.value.code == code
    finally:
        client.disconnect_socket()


async def test_untrusted_channel_with_empty_client_certificate_refused(secure: Pki) -> None:
    """The review's proof: an untrusted certificate on the SignAndEncrypt channel and an empty
    CreateSession.ClientCertificate got a session, a login and reads."""
    client = await _secured_client(secure, *_stranger(secure, "bypass"))
    _send_client_certificate(client, None)
    await _assert_session_refused(client, ua.StatusCodes.BadCertificateUntrusted)


async def test_client_certificate_must_be_the_channel_certificate(secure: Pki) -> None:
    # Trusted channel, but CreateSession names another certificate (or none): refused.
    other = _stranger(secure, "other")[0].read_bytes()
    for sent in (other, None):
        client = await _secured_client(secure, secure.client_cert, secure.client_key)
        _send_client_certificate(client, sent)
        await _assert_session_refused(client, ua.StatusCodes.BadSecurityChecksFailed)


async def test_trusted_channel_certificate_gets_a_session(secure: Pki) -> None:
    client = await _secured_client(secure, secure.client_cert, secure.client_key)
    client.set_user("hmi")
    client.set_password("s3cret")
    await client.connect()
    try:
        assert await _read_server_state(client) is not None
    finally:
        await client.disconnect()


async def test_session_cannot_be_activated_from_an_untrusted_channel(secure: Pki) -> None:
    """ActivateSession on a new channel (session transfer) is checked too: a channel with an
    untrusted certificate, or a trusted one other than the session's, cannot take it over."""
    owner = await _secured_client(secure, secure.client_cert, secure.client_key)
    await owner.connect_socket()
    await owner.send_hello()
    await owner.open_secure_channel()
    await owner.create_session()
    other_cert, other_key = _stranger(secure, "trusted-other")
    shutil.copy(other_cert, secure.server_pki / "trusted" / "other.der")
    try:
        for cert, key, code in (
            (*_stranger(secure, "thief"), ua.StatusCodes.BadCertificateUntrusted),
            (other_cert, other_key, ua.StatusCodes.BadSecurityChecksFailed),
        ):
            thief = await _secured_client(secure, cert, key)
            await thief.connect_socket()
            await thief.send_hello()
            await thief.open_secure_channel()
            thief.uaclient.protocol.authentication_token = (  # type: ignore[union-attr]
                owner.uaclient.protocol.authentication_token  # type: ignore[union-attr]
            )
            thief._server_nonce = owner._server_nonce
            thief._policy_ids = owner._policy_ids
            try:
                with pytest.raises(UaStatusCodeError) as info:
                    await thief.activate_session("hmi", "s3cret")
                    await _read_server_state(thief)
                assert info.value.code == code
            finally:
                thief.disconnect_socket()
        # The owner's own channel still activates it.
        await owner.activate_session("hmi", "s3cret")
        assert await _read_server_state(owner) is not None
    finally:
        (secure.server_pki / "trusted" / "other.der").unlink()
        owner.disconnect_socket()
