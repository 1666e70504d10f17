"""`bridge certs create` and `bridge browse` as a user runs them: the real CLI in a subprocess,
against the real plant simulator and against a SignAndEncrypt + user-auth server (the gateway's
own prediction server); the scaffold must pass `bridge validate`."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import yaml
from cryptography import x509
from support import free_port

from bridge.connectors.opcua import PredictionServer
from bridge.connectors.opcua.certs import create_application_certificate
from bridge.connectors.opcua.server_config import OpcUaServerSettings, OpcUaServerUser
from bridge.simulators.plant import PLANT_NAMESPACE, PlantSimulator
from bridge.simulators.plant.physics import SIGNALS
from bridge.types import PredictionSlot, SinkContext


async def _bridge(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from bridge.cli import main; main()",
        *args,
        cwd=cwd,
        env={**os.environ, **(env or {})},
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


@pytest_asyncio.fixture
async def plant() -> AsyncIterator[PlantSimulator]:
    sim = PlantSimulator(port=free_port(), pumps=3, update_interval_s=1.0)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def test_browse_writes_a_scaffold_that_validates(
    plant: PlantSimulator, tmp_path: Path
) -> None:
    out = tmp_path / "mapping.yaml"
    code, _, err = await _bridge(
        "browse", plant.endpoint, "--root", "Plant", "-o", str(out), cwd=tmp_path
    )
    assert code == 0, err
    assert "browsed" in err  # progress
    mapping = yaml.safe_load(out.read_text())
    assert set(mapping["assets"]) == {"Pump01", "Pump02", "Pump03"}
    tags = mapping["assets"]["Pump02"]["tags"]
    assert len(tags) == len(SIGNALS)
    vib = tags["vibration"]
    assert vib["address"] == f"nsu={PLANT_NAMESPACE};s=Pump02.Vibration"
    assert vib["unit"] == SIGNALS["Vibration"][0]
    assert vib["description"].startswith("Double;")
    assert tags["running"]["description"].startswith("Boolean;")
    code, text, err = await _bridge("validate", str(out), cwd=tmp_path)
    assert code == 0, text + err
    assert f"{3 * len(SIGNALS)} tags" in text


async def test_browse_is_bounded_and_fails_cleanly(plant: PlantSimulator, tmp_path: Path) -> None:
    code, text, err = await _bridge(
        "browse", plant.endpoint, "--root", "Plant", "--max-nodes", "5", cwd=tmp_path
    )
    assert code == 0, err
    mapping = yaml.safe_load(text)
    n = sum(len(a["tags"]) for a in mapping["assets"].values())
    assert n == 2  # 3 pump objects + 2 variables = 5 nodes, then the walk stops
    code, _, err = await _bridge("browse", plant.endpoint, "--root", "Nope", cwd=tmp_path)
    assert code == 1 and "Nope" in err


async def test_certs_create_sets_application_uri_and_hosts(tmp_path: Path) -> None:
    code, _, err = await _bridge(
        "certs",
        "create",
        "--application-uri",
        "urn:test:gw",
        "--hostname",
        "gw.local",
        cwd=tmp_path,
    )
    assert code == 0, err
    cert = x509.load_der_x509_certificate((tmp_path / "pki/own/cert.der").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:test:gw"]
    assert san.get_values_for_type(x509.DNSName) == ["gw.local"]
    assert (tmp_path / "pki/own/key.pem").stat().st_mode & 0o077 == 0
    code, _, err = await _bridge("certs", "create", cwd=tmp_path)
    assert code == 1 and "exists" in err


SECURE_NS = "urn:test:browse-secure"


@pytest_asyncio.fixture
async def secured_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """SignAndEncrypt only, password users only (None channels and anonymous refused); the
    client certificate in tmp_path/client is trusted by the server."""
    server_cert, server_key = tmp_path / "server" / "cert.der", tmp_path / "server" / "key.pem"
    client_cert = tmp_path / "client" / "cert.der"
    create_application_certificate(server_cert, server_key, hostnames=("localhost",))
    create_application_certificate(
        client_cert, tmp_path / "client" / "key.pem", hostnames=("localhost",)
    )
    (tmp_path / "server-pki" / "trusted").mkdir(parents=True)
    shutil.copy(client_cert, tmp_path / "server-pki" / "trusted" / "client.der")
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    settings = OpcUaServerSettings(
        endpoint=endpoint,
        namespace=SECURE_NS,
        security_policies=["Basic256Sha256_SignAndEncrypt"],
        certificate=str(server_cert),
        private_key=str(server_key),
        pki_dir=str(tmp_path / "server-pki"),
        users=[OpcUaServerUser(username="eng", password="br0wse-pw")],
    )
    slots = (PredictionSlot("P1", "rul", "1.0.0", "c" * 64),)
    server = PredictionServer("hmi", settings, SinkContext("gw", slots))
    await server.start()
    try:
        yield endpoint, server_cert
    finally:
        await server.close()


async def test_browse_over_sign_and_encrypt_with_user(
    secured_server: tuple[str, Path], tmp_path: Path
) -> None:
    endpoint, server_cert = secured_server
    out = tmp_path / "mapping.yaml"
    secure = [
        "--policy", "Basic256Sha256",
        "--certificate", "client/cert.der",
        "--private-key", "client/key.pem",
        "--pki-dir", "client-pki",
        "--username", "eng",
        "--password-env", "BROWSE_PW",
    ]  # fmt: skip
    args = ("browse", endpoint, "--root", "Predictions", "-o", str(out), *secure)

    # Anonymous on None (the old default) is refused by this server.
    code, _, err = await _bridge("browse", endpoint, cwd=tmp_path)
    assert code == 1 and "BadSecurityPolicyRejected" in err, err
    # The password comes from the environment, never from the command line.
    code, _, err = await _bridge(*args, cwd=tmp_path)
    assert code == 2 and "BROWSE_PW is not set" in err, err
    # Unknown server certificate: refused and filed for the operator to trust.
    code, _, err = await _bridge(*args, cwd=tmp_path, env={"BROWSE_PW": "br0wse-pw"})
    assert code == 1 and "BadCertificateUntrusted" in err, err
    (rejected,) = (tmp_path / "client-pki" / "rejected").glob("*.der")
    assert rejected.read_bytes() == server_cert.read_bytes()
    (tmp_path / "client-pki" / "trusted").mkdir()
    shutil.move(rejected, tmp_path / "client-pki" / "trusted" / "server.der")
    # Wrong password: refused.
    code, _, err = await _bridge(*args, cwd=tmp_path, env={"BROWSE_PW": "wrong"})
    assert code == 1 and "BadUserAccessDenied" in err, err
    assert not out.exists()

    code, _, err = await _bridge(*args, cwd=tmp_path, env={"BROWSE_PW": "br0wse-pw"})
    assert code == 0, err
    text = out.read_text()
    assert "br0wse-pw" not in text
    mapping = yaml.safe_load(text)
    block = mapping["sources"]["server"]
    assert block["security"]["policy"] == "Basic256Sha256"
    assert block["security"]["mode"] == "SignAndEncrypt"
    assert block["security"]["pki_dir"] == "client-pki"
    assert block["username"] == "eng" and block["password"] == "${BROWSE_PW}"
    tags = mapping["assets"]["rul"]["tags"]
    assert tags["value"]["address"] == f"nsu={SECURE_NS};s=Predictions.P1.rul.Value"
    assert tags["value"]["description"].startswith("Double;")
    assert tags["model_name"]["description"].startswith("String;")
    code, text, err = await _bridge(
        "validate", str(out), cwd=tmp_path, env={"BROWSE_PW": "br0wse-pw"}
    )
    assert code == 0, text + err
    assert f"{len(tags)} tags" in text


async def test_browse_options_are_checked_before_connecting(tmp_path: Path) -> None:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"  # nothing listens: must not get that far
    code, _, err = await _bridge("browse", endpoint, "--policy", "Basic256Sha256", cwd=tmp_path)
    assert code == 2 and "needs certificate and private_key" in err, err
    code, _, err = await _bridge(
        "browse", endpoint, "--password-file", "pw", "--password-env", "X", cwd=tmp_path
    )
    assert code == 2 and "not both" in err, err
    code, _, err = await _bridge("browse", endpoint, "--mode", "Sign", cwd=tmp_path)
    assert code == 2 and "do not fit" in err, err


async def test_validate_reports_certificate_files_with_line_and_fix(tmp_path: Path) -> None:
    create_application_certificate(tmp_path / "pki/own/cert.der", tmp_path / "pki/own/key.pem")
    create_application_certificate(tmp_path / "other/cert.der", tmp_path / "other/key.pem")
    (tmp_path / "mapping.yaml").write_text(
        "version: 1\n"
        "sources:\n"
        "  scada:\n"
        "    kind: opcua\n"
        "    endpoint: opc.tcp://127.0.0.1:4840\n"
        "    security:\n"
        "      policy: Basic256Sha256\n"
        "      mode: SignAndEncrypt\n"
        "      certificate: pki/own/cert.der\n"
        "      private_key: other/key.pem\n"
        "      application_uri: urn:plant:gateway\n"
        "assets:\n"
        "  p1:\n"
        "    tags:\n"
        '      v: {source: scada, address: "nsu=urn:x;s=V"}\n'
        "outputs:\n"
        "  hmi:\n"
        "    kind: opcua-server\n"
        "    certificate: pki/own/server.der\n"
        "    private_key: pki/own/key.pem\n"
    )
    code, out, err = await _bridge("validate", "mapping.yaml", cwd=tmp_path)
    assert code == 3, out + err  # an invalid mapping
    lines = err.splitlines()
    assert (
        "mapping.yaml:10: sources.scada.security.private_key: other/key.pem is not the private "
        "key of pki/own/cert.der" in err
    ), err
    assert any(
        line.startswith(
            "mapping.yaml:11: sources.scada.security.application_uri: urn:plant:gateway"
        )
        and "--application-uri urn:plant:gateway" in line
        for line in lines
    ), err
    assert any(
        line.startswith("mapping.yaml:19: outputs.hmi.certificate: pki/own/server.der not found")
        and "(fix: run `bridge certs create`" in line
        for line in lines
    ), err
    assert "3 problem(s) found" in err
