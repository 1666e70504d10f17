"""Logins to the gateway's OPC UA server: failed logins throttled per peer address (a lockout that
leaves other HMIs alone), and users whose password is configured as a scrypt hash.

The second peer connects from 127.0.0.2 (Linux routes all of 127/8 to loopback).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaStatusCodeError
from support import free_port

from bridge.connectors.opcua import PredictionServer
from bridge.connectors.opcua._passwords import hash_password
from bridge.connectors.opcua.certs import create_application_certificate
from bridge.connectors.opcua.server_config import LoginLockout, OpcUaServerSettings, OpcUaServerUser
from bridge.types import PredictionSlot, SinkContext

SLOT = PredictionSlot("P1", "rul", "1.0.0", "c" * 64)
LOCKOUT_S = 1.5
pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Gateway:
    endpoint: str
    server_cert: Path
    client_cert: Path
    client_key: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    root = tmp_path_factory.mktemp("logins")
    server_cert, server_key = root / "own" / "cert.der", root / "own" / "key.pem"
    client_cert, client_key = root / "hmi" / "cert.der", root / "hmi" / "key.pem"
    create_application_certificate(server_cert, server_key, hostnames=("localhost",))
    create_application_certificate(client_cert, client_key, hostnames=("localhost",))
    (root / "clients" / "trusted").mkdir(parents=True)
    shutil.copy(client_cert, root / "clients" / "trusted" / "hmi.der")
    settings = OpcUaServerSettings(
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}",
        security_policies=["Basic256Sha256_SignAndEncrypt"],
        certificate=str(server_cert),
        private_key=str(server_key),
        pki_dir=str(root / "clients"),
        users=[
            OpcUaServerUser(username="hmi", password="s3cret"),
            OpcUaServerUser(
                username="hashed", password_hash=hash_password("h4shed-pw"), role="operator"
            ),
        ],
        login_lockout=LoginLockout(
            after_failures=3, first_lockout_s=LOCKOUT_S, max_lockout_s=LOCKOUT_S * 4
        ),
    )
    server = PredictionServer("hmi", settings, SinkContext("gw", (SLOT,)))
    await server.start()
    try:
        yield Gateway(settings.endpoint, server_cert, client_cert, client_key)
    finally:
        await server.close()


async def _login(gw: Gateway, user: str, password: str, source: str = "127.0.0.1") -> None:
    """Connect, log in, read ServerStatus.State, disconnect; raises what the server answered."""
    client = Client(gw.endpoint, timeout=3)
    client.application_uri = "urn:bridge:gateway"
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(gw.client_cert),
        str(gw.client_key),
        server_certificate=str(gw.server_cert),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.set_user(user)
    client.set_password(password)
    if source != "127.0.0.1":
        _connect_from(client, source)
    try:
        await client.connect()
    except BaseException:
        client.disconnect_socket()
        raise
    try:
        assert await client.get_node(ua.NodeId(2259, 0)).read_value() == 0  # Running
    finally:
        await client.disconnect()


def _connect_from(client: Client, source: str) -> None:
    """Open ``client``'s TCP connection from the local address ``source``."""
    ua_client = client.uaclient

    async def connect_socket(host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(ua_client._make_protocol, host, port, local_addr=(source, 0))
        ua_client._set_state(UaClientState.SOCKET_OPEN)

    ua_client.connect_socket = connect_socket  # type: ignore[method-assign]


async def _refused(gw: Gateway, user: str, password: str, source: str = "127.0.0.1") -> int:
    with pytest.raises(UaStatusCodeError) as info:
        await _login(gw, user, password, source)
    return info.value.code


async def test_failed_logins_lock_out_that_peer_only(gateway: Gateway) -> None:
    await _login(gateway, "hmi", "s3cret")
    for _ in range(3):
        assert await _refused(gateway, "hmi", "guess") == ua.StatusCodes.BadUserAccessDenied
    started = time.monotonic()
    # Locked out: even the right password is refused now, from this address ...
    assert await _refused(gateway, "hmi", "s3cret") == ua.StatusCodes.BadUserAccessDenied
    # ... while another HMI, from another address, logs in as usual.
    await _login(gateway, "hmi", "s3cret", source="127.0.0.2")
    await asyncio.sleep(max(0.0, LOCKOUT_S + 0.2 - (time.monotonic() - started)))
    await _login(gateway, "hmi", "s3cret")  # lockout over; success clears the count
    assert await _refused(gateway, "hmi", "guess") == ua.StatusCodes.BadUserAccessDenied
    await _login(gateway, "hmi", "s3cret")


async def test_user_with_a_password_hash(gateway: Gateway) -> None:
    await _login(gateway, "hashed", "h4shed-pw")
    await _login(gateway, "hashed", "h4shed-pw")  # the remembered good password
    assert await _refused(gateway, "hashed", "wrong") == ua.StatusCodes.BadUserAccessDenied
    assert await _refused(gateway, "nobody", "h4shed-pw") == ua.StatusCodes.BadUserAccessDenied
    await _login(gateway, "hashed", "h4shed-pw")
