"""The documented secure HMI server starts with an empty trust list: a client with a certificate
is refused and filed in rejected/, `bridge certs trust` trusts it, and the running server accepts
it without a restart (and refuses it again once it is removed)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaStatusCodeError
from click.testing import CliRunner
from structlog.testing import capture_logs
from support import free_port

from bridge.connectors.opcua import PredictionServer
from bridge.connectors.opcua.certs import create_application_certificate, thumbprint
from bridge.connectors.opcua.cli import certs
from bridge.connectors.opcua.server_config import OpcUaServerSettings, OpcUaServerUser
from bridge.types import PredictionSlot, SinkContext

SLOT = PredictionSlot("P1", "rul", "1.0.0", "c" * 64)


async def _session(endpoint: str, server_cert: Path, cert: Path, key: Path) -> None:
    client = Client(endpoint, timeout=3)
    client.application_uri = "urn:bridge:gateway"
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(cert),
        str(key),
        server_certificate=str(server_cert),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.set_user("hmi")
    client.set_password("s3cret")
    try:
        await client.connect()
    except BaseException:
        client.disconnect_socket()
        raise
    try:
        assert await client.get_node(ua.NodeId(2259, 0)).read_value() == 0
    finally:
        await client.disconnect()


async def test_empty_trust_list_starts_refuses_files_and_trusts_without_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the documented relative layout: pki/own, pki/clients
    runner = CliRunner()
    created = runner.invoke(certs, ["create", "--hostname", "localhost"], catch_exceptions=False)
    assert created.exit_code == 0, created.output
    hmi_cert, hmi_key = tmp_path / "hmi" / "cert.der", tmp_path / "hmi" / "key.pem"
    create_application_certificate(hmi_cert, hmi_key, hostnames=("localhost",))
    hmi_thumbprint = thumbprint(hmi_cert.read_bytes())
    settings = OpcUaServerSettings(
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}",
        certificate="pki/own/cert.der",
        private_key="pki/own/key.pem",
        users=[OpcUaServerUser(username="hmi", password="s3cret")],
    )
    assert settings.pki_dir == "pki/clients"  # its own folder, not the servers' one
    server = PredictionServer("hmi", settings, SinkContext("gw", (SLOT,)))
    await server.start()  # asyncua's TrustStore raised ValueError on this empty folder
    try:
        own = tmp_path / "pki" / "own" / "cert.der"
        with capture_logs() as logs, pytest.raises(UaStatusCodeError) as info:
            await _session(settings.endpoint, own, hmi_cert, hmi_key)
        assert info.value.code == ua.StatusCodes.BadCertificateUntrusted
        rejected = tmp_path / "pki" / "clients" / "rejected" / f"{hmi_thumbprint}.der"
        assert rejected.read_bytes() == hmi_cert.read_bytes()
        (line,) = [e for e in logs if e["event"] == "certificate_rejected"]
        assert line["thumbprint"] == hmi_thumbprint and line["subject"] == "bridge"
        assert line["trust_with"] == f"bridge certs trust {hmi_thumbprint} --pki-dir pki/clients"

        listed = runner.invoke(certs, ["list"], catch_exceptions=False)
        assert f"rejected  {hmi_thumbprint}" in listed.output

        trusted = runner.invoke(certs, ["trust", hmi_thumbprint[:10], "--pki-dir", "pki/clients"])
        assert trusted.exit_code == 0, trusted.output
        assert not rejected.exists()
        await _session(settings.endpoint, own, hmi_cert, hmi_key)  # same server, no restart

        # Taken out of trusted/ again: refused again once the listing is renewed (<= 1 s).
        shutil.rmtree(tmp_path / "pki" / "clients" / "trusted")
        await asyncio.sleep(1.1)
        with pytest.raises(UaStatusCodeError) as info:
            await _session(settings.endpoint, own, hmi_cert, hmi_key)
        assert info.value.code == ua.StatusCodes.BadCertificateUntrusted
    finally:
        await server.close()


def test_trust_a_certificate_file_and_errors(tmp_path: Path) -> None:
    cert = tmp_path / "scada.der"
    create_application_certificate(cert, tmp_path / "scada.pem")
    runner = CliRunner()
    pki = tmp_path / "pki" / "servers"
    done = runner.invoke(certs, ["trust", str(cert), "--pki-dir", str(pki)])
    assert done.exit_code == 0, done.output
    assert (pki / "trusted" / f"{thumbprint(cert.read_bytes())}.der").read_bytes() == (
        cert.read_bytes()
    )
    unknown = runner.invoke(certs, ["trust", "deadbeefdead", "--pki-dir", str(pki)])
    assert unknown.exit_code == 1 and "no certificate deadbeefdead" in unknown.output
    bad = runner.invoke(certs, ["trust", "not-a-thumbprint", "--pki-dir", str(pki)])
    assert bad.exit_code == 1 and "neither a file nor a thumbprint" in bad.output
