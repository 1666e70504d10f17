"""Trust lists an operator manages without touching files: `bridge certs list|trust|reject|remove`
and `/api/v1/certificates`, on both sides, against real asyncua servers and clients.

Servers side: a plant server whose self-signed certificate the gateway's source refuses is listed
as rejected with where it was seen (its endpoint); trusting it lets the next connection through,
rejecting it refuses the next one again, removing it forgets it. Clients side: an HMI that the
gateway's own OPC UA server refuses, managed over REST with an admin key (other keys get 403),
accepted and refused again by the running server, no restart. Every change is in the audit
ledger; `--mapping` takes the trust lists and the ledger from a mapping.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from asyncua import Client, Server, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaStatusCodeError
from click.testing import CliRunner, Result
from support import free_port, wait_until

from bridge.api import ApiServices, ModelInfo, TagState, create_app
from bridge.auth import Scope
from bridge.connectors.opcua import (
    OpcUaAddress,
    OpcUaSource,
    OpcUaSourceSettings,
    PredictionServer,
)
from bridge.connectors.opcua.certs import create_application_certificate, thumbprint
from bridge.connectors.opcua.cli import certs
from bridge.connectors.opcua.server_config import OpcUaServerSettings, OpcUaServerUser
from bridge.errors import ConnectorError
from bridge.pki.trustlists import TrustDir
from bridge.prepare import prepare
from bridge.runtime.pipeline import build_gateway
from bridge.store import Store, open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.audit import AuditFilter, AuditRepository
from bridge.store.auditchain import AuditEntry
from bridge.types import ComponentHealth, Prediction, PredictionSlot, SinkContext, SourceTag

NS = "urn:test:certs"
SLOT = PredictionSlot("P1", "rul", "1.0.0", "c" * 64)


def _cli(*args: str) -> Result:
    return CliRunner().invoke(certs, list(args), catch_exceptions=False)


def _listed(*args: str) -> list[dict[str, Any]]:
    done = _cli("list", "--json", *args)
    assert done.exit_code == 0, done.output
    return [json.loads(line) for line in done.stdout.splitlines()]


def _ledger(store: Store) -> list[AuditEntry]:
    return AuditRepository(store, "test").page(AuditFilter(action="certificate."), 100)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'gw.db'}")
    try:
        yield s
    finally:
        s.dispose()


# --- servers the gateway connects to ---------------------------------------------------------


@dataclass
class Plant:
    endpoint: str
    cert: Path
    thumbprint: str


@pytest_asyncio.fixture
async def plant(tmp_path: Path) -> AsyncIterator[Plant]:
    """A SignAndEncrypt asyncua server with its own self-signed certificate; it lets any client
    in (the gateway's refusal is what is tested)."""
    cert, key = tmp_path / "plant" / "cert.der", tmp_path / "plant" / "key.pem"
    create_application_certificate(
        cert, key, common_name="plant", application_uri="urn:test:plant", hostnames=("localhost",)
    )
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    server = Server()
    await server.init()
    server.set_endpoint(endpoint)
    await server.set_application_uri("urn:test:plant")
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    ns = await server.register_namespace(NS)
    await server.nodes.objects.add_variable(ua.NodeId("Value", ns), "Value", 1.5)
    await server.start()
    try:
        yield Plant(endpoint, cert, thumbprint(cert.read_bytes()))
    finally:
        await server.stop()


def _source(plant: Plant, tmp_path: Path) -> OpcUaSource:
    gateway_cert, gateway_key = tmp_path / "own" / "cert.der", tmp_path / "own" / "key.pem"
    if not gateway_cert.exists():
        create_application_certificate(gateway_cert, gateway_key, hostnames=("localhost",))
    settings = OpcUaSourceSettings.model_validate(
        {
            "endpoint": plant.endpoint,
            "timeout_s": 3,
            "security": {
                "policy": "Basic256Sha256",
                "mode": "SignAndEncrypt",
                "certificate": str(gateway_cert),
                "private_key": str(gateway_key),
                "pki_dir": "pki/servers",  # the default, relative to the working directory
            },
        }
    )
    tag = SourceTag("v", OpcUaAddress.model_validate(f"nsu={NS};s=Value"))
    return OpcUaSource("plant", settings, [tag])


async def _connects(plant: Plant, tmp_path: Path) -> bool:
    source = _source(plant, tmp_path)
    try:
        await source.connect()
    except ConnectorError as exc:
        assert "BadCertificateUntrusted" in str(exc), exc
        return False
    finally:
        await source.close()
    return True


async def test_a_refused_server_is_listed_trusted_rejected_and_removed(
    plant: Plant, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    tp = plant.thumbprint
    assert not await _connects(plant, tmp_path)

    (row,) = _listed()  # both default trust lists: pki/servers and pki/clients
    assert (row["side"], row["pki_dir"], row["state"], row["folder"]) == (
        "servers",
        "pki/servers",
        "rejected",
        "rejected",
    )
    assert (row["thumbprint"], row["subject"], row["application_uri"]) == (
        tp,
        "plant",
        "urn:test:plant",
    )
    assert row["expired"] is False and row["not_before"] < row["not_after"]
    seen = row["seen"]
    assert (seen["refused"], seen["accepted"], seen["last_outcome"]) == (1, 0, "refused")
    assert seen["peers"] == [plant.endpoint] and "trust list is empty" in seen["reason"]
    text = _cli("list").output
    assert f"rejected  {tp}" in text and f"from {plant.endpoint}" in text
    assert "pki/clients (clients): no certificates" in text

    done = _cli("trust", tp[:10], "--store", url)
    assert done.exit_code == 0, done.output
    assert f"trusted: {Path('pki/servers/trusted') / f'{tp}.der'}" in done.output
    assert await _connects(plant, tmp_path)  # the next connection
    (row,) = _listed("--pki-dir", "pki/servers")
    assert row["state"] == "trusted" and row["seen"]["last_outcome"] == "accepted"
    assert (row["seen"]["refused"], row["seen"]["accepted"]) == (1, 1)

    done = _cli("reject", tp, "--store", url, "--reason", "the PLC was swapped")
    assert done.exit_code == 0, done.output
    assert not await _connects(plant, tmp_path)
    (row,) = _listed()
    assert row["state"] == "rejected" and row["seen"]["refused"] == 2
    again = _cli("reject", tp)
    assert again.exit_code == 1 and f"certificate {tp} is rejected already" in again.output

    done = _cli("remove", tp[:8], "--store", url)
    assert done.exit_code == 0, done.output
    assert _listed() == []
    assert not (tmp_path / "pki" / "servers" / "seen" / f"{tp}.json").exists()
    gone = _cli("trust", tp)
    assert gone.exit_code == 1 and f"no certificate {tp}" in gone.output

    entries = _ledger(store)
    assert [(e.action, e.before["state"], e.after["state"]) for e in entries] == [
        ("certificate.trusted", "rejected", "trusted"),
        ("certificate.rejected", "trusted", "rejected"),
        ("certificate.removed", "rejected", None),
    ]
    assert {(e.subject, e.channel) for e in entries} == {(f"certificate:{tp}", "cli")}
    assert all(e.actor.startswith("cli") and e.after["side"] == "servers" for e in entries)
    assert entries[1].reason == "the PLC was swapped"


# --- clients of the gateway's own server, over REST -------------------------------------------


async def _session(endpoint: str, server_cert: Path, cert: Path, key: Path) -> None:
    client = Client(endpoint, timeout=3)
    client.application_uri = "urn:test:hmi"
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
    await client.disconnect()


@dataclass
class View:
    gateway_id: str = "gw-certs"

    def tag_states(self) -> Sequence[TagState]:
        return []

    def latest_predictions(self) -> Sequence[Prediction]:
        return []

    def models(self) -> Sequence[ModelInfo]:
        return []

    def health(self) -> Sequence[ComponentHealth]:
        return []

    def started_at(self) -> float:
        return 0.0


async def test_an_hmi_refused_by_our_server_is_managed_over_rest(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    own_cert, own_key = tmp_path / "pki" / "own" / "cert.der", tmp_path / "pki" / "own" / "key.pem"
    create_application_certificate(own_cert, own_key, hostnames=("localhost",))
    hmi_cert, hmi_key = tmp_path / "hmi" / "cert.der", tmp_path / "hmi" / "key.pem"
    create_application_certificate(
        hmi_cert, hmi_key, common_name="hmi-7", application_uri="urn:test:hmi"
    )
    tp = thumbprint(hmi_cert.read_bytes())
    settings = OpcUaServerSettings(
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}",
        certificate="pki/own/cert.der",
        private_key="pki/own/key.pem",
        users=[OpcUaServerUser(username="hmi", password="s3cret")],
    )
    server = PredictionServer("hmi", settings, SinkContext("gw", (SLOT,)))

    async def hmi_refused() -> bool:
        try:
            await _session(settings.endpoint, own_cert, hmi_cert, hmi_key)
        except UaStatusCodeError as exc:
            assert exc.code == ua.StatusCodes.BadCertificateUntrusted
            return True
        return False

    keys = ApiKeyRepository(store)
    admin, admin_key = keys.create("admin", Scope.ADMIN)
    lesser = {s: keys.create(s.label, s)[1] for s in (Scope.READ, Scope.OPERATE)}
    clients = TrustDir(Path(settings.pki_dir), "clients", ("outputs.hmi",))
    services = ApiServices.from_store(View(), store, trust_lists=lambda: [clients])
    await server.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(services)),
            base_url="http://bridge.test",
            headers={"Authorization": f"Bearer {admin_key}"},
        ) as http:
            assert await hmi_refused()
            listing = await http.get("/api/v1/certificates")
            assert listing.status_code == 200, listing.text
            assert listing.json()["trust_lists"] == [
                {"side": "clients", "pki_dir": "pki/clients", "used_by": ["outputs.hmi"]}
            ]
            (row,) = listing.json()["certificates"]
            assert (row["state"], row["thumbprint"], row["subject"]) == ("rejected", tp, "hmi-7")
            assert row["application_uri"] == "urn:test:hmi"
            assert row["seen"]["peers"] == ["127.0.0.1"] and row["seen"]["refused"] >= 1
            assert (await http.get("/api/v1/certificates?side=servers")).json()[
                "certificates"
            ] == []

            trust_url = f"/api/v1/certificates/clients/{tp[:12]}/trust"
            for key in lesser.values():
                other = {"Authorization": f"Bearer {key}"}
                assert (await http.get("/api/v1/certificates", headers=other)).status_code == 403
                assert (await http.post(trust_url, headers=other)).status_code == 403
                assert (
                    await http.delete(f"/api/v1/certificates/clients/{tp}", headers=other)
                ).status_code == 403
            assert (tmp_path / "pki" / "clients" / "rejected" / f"{tp}.der").exists()

            trusted = await http.post(trust_url, params={"reason": "new HMI panel"})
            assert trusted.status_code == 200, trusted.text
            (change,) = trusted.json()
            assert (change["before"], change["after"], change["thumbprint"]) == (
                "rejected",
                "trusted",
                tp,
            )
            assert not await hmi_refused()  # the running server, no restart

            rejected = await http.post(f"/api/v1/certificates/clients/{tp}/reject")
            assert rejected.status_code == 200, rejected.text
            # An acceptance may rely on a listing up to a second old: refused again soon after.
            await wait_until(hmi_refused, timeout=15, interval=0.3, what="the HMI refused")
            twice = await http.post(f"/api/v1/certificates/clients/{tp}/reject")
            assert twice.status_code == 409 and "rejected already" in twice.text, twice.text

            removed = await http.delete(f"/api/v1/certificates/clients/{tp}")
            assert removed.status_code == 200 and removed.json()[0]["after"] is None
            assert (await http.get("/api/v1/certificates")).json()["certificates"] == []

            unknown = await http.post("/api/v1/certificates/clients/deadbeefdeadbeef/trust")
            assert unknown.status_code == 404 and "no certificate deadbeefdeadbeef" in unknown.text
            no_side = await http.post(f"/api/v1/certificates/servers/{tp}/trust")
            assert no_side.status_code == 404 and "no trust list of servers" in no_side.text
            short = await http.post(f"/api/v1/certificates/clients/{tp[:5]}/trust")
            assert short.status_code == 422, short.text

            audit = await http.get("/api/v1/audit", params={"action": "certificate."})
            entries = audit.json()["entries"]  # newest first
    finally:
        await server.close()
    assert [e["action"] for e in entries] == [
        "certificate.removed",
        "certificate.rejected",
        "certificate.trusted",
    ]
    assert {(e["actor"], e["channel"], e["subject"]) for e in entries} == {
        (f"key:{admin.key_id}", "rest", f"certificate:{tp}")
    }
    assert entries[2]["reason"] == "new HMI panel"
    assert entries[2]["after"] == {"side": "clients", "pki_dir": "pki/clients", "state": "trusted"}
    assert change["audit_seq"] == entries[2]["seq"]


# --- the trust lists and the ledger of a mapping ----------------------------------------------

_MAPPING = """\
version: 1
gateway:
  id: certs-test
  store: "sqlite:///var/gw.db"
sources:
  plc: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840", security: {pki_dir: trust/plc}}
  plc2: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4841"}
assets:
  pump:
    tags:
      temp: {source: plc, address: "nsu=urn:t;s=T"}
outputs:
  hmi:
    kind: opcua-server
    endpoint: opc.tcp://127.0.0.1:4850
    certificate: pki/own/cert.der
    private_key: pki/own/key.pem
    pki_dir: trust/hmi
    users: [{username: hmi, password: "${HMI_PASSWORD_UNSET_HERE}", role: reader}]
"""


def test_a_mapping_names_the_trust_lists_and_its_store_records_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(_MAPPING)
    cert = tmp_path / "panel.der"
    create_application_certificate(cert, tmp_path / "panel.pem", common_name="panel")
    tp = thumbprint(cert.read_bytes())

    listing = _cli("list", "--mapping", "m.yaml")
    assert listing.exit_code == 0, listing.output
    for line in (
        "trust/plc (servers: sources.plc): no certificates",
        "pki/servers (servers: sources.plc2): no certificates",
        "trust/hmi (clients: outputs.hmi): no certificates",
    ):
        assert line in listing.output

    which = _cli("trust", str(cert), "--mapping", "m.yaml")
    assert which.exit_code == 2 and "name the trust list it goes to" in which.output
    # No store yet (the gateway never ran): the change is made, with no ledger entry to write.
    done = _cli("trust", str(cert), "--mapping", "m.yaml", "--pki-dir", "trust/hmi")
    assert done.exit_code == 0 and "audit" not in done.output, done.output
    assert (tmp_path / "trust" / "hmi" / "trusted" / f"{tp}.der").read_bytes() == cert.read_bytes()

    open_store(f"sqlite:///{tmp_path / 'var' / 'gw.db'}").dispose()  # as a first start makes it
    done = _cli("reject", tp, "--mapping", "m.yaml")
    assert done.exit_code == 0 and "audit ledger entry" in done.output, done.output
    (row,) = _listed("--mapping", "m.yaml")
    assert (row["side"], row["pki_dir"], row["state"]) == ("clients", "trust/hmi", "rejected")

    # The same certificate refused on the other side too: a thumbprint alone is ambiguous.
    (tmp_path / "trust" / "plc" / "rejected").mkdir(parents=True)
    shutil.copy(cert, tmp_path / "trust" / "plc" / "rejected" / "panel.der")
    both = _cli("remove", tp, "--mapping", "m.yaml")
    assert both.exit_code == 1 and "trust lists of different sides" in both.output
    done = _cli("remove", tp, "--mapping", "m.yaml", "--pki-dir", "trust/plc")
    assert done.exit_code == 0, done.output
    assert [r["pki_dir"] for r in _listed("--mapping", "m.yaml")] == ["trust/hmi"]

    store = open_store(f"sqlite:///{tmp_path / 'var' / 'gw.db'}", must_exist=True)
    try:
        entries = _ledger(store)
    finally:
        store.dispose()
    assert [(e.action, e.after["pki_dir"]) for e in entries] == [
        ("certificate.rejected", "trust/hmi"),
        ("certificate.removed", "trust/plc"),
    ]

    absent = f"sqlite:///{tmp_path / 'absent.db'}"
    broken = _cli("trust", tp, "--pki-dir", "trust/hmi", "--store", absent)
    assert broken.exit_code == 4 and "no store at" in broken.output
    assert (tmp_path / "trust" / "hmi" / "rejected" / f"{tp}.der").exists()  # left as it was


# --- a running gateway serves its own mapping's trust lists ------------------------------------


async def test_a_running_gateway_lists_the_trust_lists_of_its_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    create_application_certificate(
        tmp_path / "pki" / "own" / "cert.der", tmp_path / "pki" / "own" / "key.pem"
    )
    api_port = free_port()
    api = f"  id: certs-test\n  api: {{host: 127.0.0.1, port: {api_port}}}\n"
    text = (
        _MAPPING.replace("4840", str(free_port()))
        .replace("4841", str(free_port()))
        .replace("4850", str(free_port()))
        .replace("${HMI_PASSWORD_UNSET_HERE}", "s3cret")
        .replace("  id: certs-test\n", api)
    )
    mapping = tmp_path / "m.yaml"
    mapping.write_text(text)
    refused = _cert_file(tmp_path / "trust" / "hmi" / "rejected" / "x.der", "panel-9")
    store = open_store(f"sqlite:///{tmp_path / 'var' / 'gw.db'}")
    try:
        _, key = ApiKeyRepository(store).create("admin", Scope.ADMIN)
    finally:
        store.dispose()
    gateway = await build_gateway(await asyncio.to_thread(prepare, mapping))
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        await asyncio.wait_for(gateway.started.wait(), 60)
        # A reload rebuilds the gateway's parts: seconds on a loaded machine (httpx's 5 s
        # default timed out once while two test suites and a soak shared 2 cores).
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ) as http:
            r = await http.get("/api/v1/certificates")
            assert r.status_code == 200, r.text
            assert {(t["side"], t["pki_dir"]) for t in r.json()["trust_lists"]} == {
                ("servers", "trust/plc"),
                ("servers", "pki/servers"),
                ("clients", "trust/hmi"),
            }
            (row,) = r.json()["certificates"]
            assert (row["pki_dir"], row["thumbprint"]) == ("trust/hmi", refused)
            # A reload that moves a pki_dir moves the API's trust lists with it.
            mapping.write_text(text.replace("pki_dir: trust/hmi", "pki_dir: trust/hmi2"))
            reloaded = await http.post("/api/v1/reload")
            assert reloaded.status_code == 200, reloaded.text
            r = await http.get("/api/v1/certificates", params={"side": "clients"})
            assert [t["pki_dir"] for t in r.json()["trust_lists"]] == ["trust/hmi2"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def _cert_file(path: Path, name: str) -> str:
    create_application_certificate(path, path.with_suffix(".pem"), common_name=name)
    return thumbprint(path.read_bytes())
