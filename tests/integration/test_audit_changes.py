"""Every change of the model registry and of the API keys, and every operator decision on a
prediction, is an audit ledger entry written in the change's own transaction, made here
through the real paths: the REST API on a real uvicorn server (with an API key, and from a
console session), the CLI, the OPC UA feedback methods called by a real asyncua client, and
the registry watcher a gateway runs (mapping seed, refusal at load, canary guard). Each entry
is checked field by field (action, subject, actor, channel, gateway, before, after, reason)
and the chain verifies; a change whose transaction fails leaves no entry and no gap.
SQLite and PostgreSQL (``tests/stores.py``), except the CLI cases (SQLite files).
"""

from __future__ import annotations

import getpass
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import pytest
from asyncua import Client, ua
from asyncua.ua.status_codes import StatusCodes
from click.testing import CliRunner
from pump_mapping import pump_mapping
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from stores import BACKENDS, temp_store
from support import free_port

from bridge.api import ApiServices, close_app
from bridge.api.sessions import SESSION_COOKIE
from bridge.api.view import ModelInfo, TagState
from bridge.audit.verify import verify_chain
from bridge.auth import Scope
from bridge.cli import main
from bridge.config import load_mapping
from bridge.connectors.opcua import OpcUaServerSettings, PredictionServer
from bridge.connectors.opcua.server_config import OpcUaServerUser
from bridge.console.app import create_gateway_app
from bridge.inference import LoadedModel
from bridge.inference.model import file_sha256
from bridge.lifecycle.policy import ModelPolicy
from bridge.lifecycle.service import RegistryService
from bridge.lifecycle.signature import (
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_model,
)
from bridge.lifecycle.states import move
from bridge.runtime.apiserver import ApiServer
from bridge.runtime.insight_wiring import StoreFeedback
from bridge.runtime.live_models import live_models
from bridge.runtime.runner import ModelRunner
from bridge.runtime.tagtable import TagTable
from bridge.simulators.plant.model_variants import write_variants
from bridge.store import PredictionRepository, Store, open_store
from bridge.store.apikeys import ApiKeyRepository, ApiKeyRow
from bridge.store.audit import AuditFilter, AuditRepository, default_writer
from bridge.store.auditchain import AuditEntry
from bridge.store.labels import LabelRepository
from bridge.store.lineage import LineageRepository
from bridge.store.registry import RegistryConflict, RegistryRepository
from bridge.types import (
    ComponentHealth,
    Feedback,
    Prediction,
    PredictionSlot,
    Quality,
    SinkContext,
    TagSample,
)

pytestmark = pytest.mark.timeout(120)

GATEWAY = "gw-audit"
MODEL = "pump-health"


def _ledger(store: Store) -> AuditRepository:
    return AuditRepository(store, GATEWAY)


def _head(store: Store) -> int:
    head = _ledger(store).head()
    return 0 if head is None else head[0]


def _since(store: Store, seq: int) -> list[AuditEntry]:
    return list(_ledger(store).iter_after(seq))


def _verified(store: Store) -> None:
    ledger = _ledger(store)
    result = verify_chain(ledger.iter_entries(), ledger.checkpoints())
    assert result.ok, result.to_json()
    assert result.entries == ledger.count() > 0


def _fields(e: AuditEntry) -> tuple[str, str, str, str, Any, Any]:
    return (e.action, e.subject, e.actor, e.channel, e.before, e.after)


def _prediction(asset: str, seq: int, value: str = "fault") -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/health/{seq}")),
        seq=seq,
        asset=asset,
        model="health",
        version="1.0.0",
        sha256="a" * 64,
        value=value,
        score=0.9,
        quality=Quality.GOOD,
        timestamp=time.time() - 100 + seq,
        input_age_s=0.1,
    )


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, prefix="bridge_audit_changes") as s:
        yield s


# -- the REST API and the console -----------------------------------------------------------


@dataclass
class View:
    gateway_id: str = GATEWAY
    start: float = field(default_factory=time.time)

    def tag_states(self) -> Sequence[TagState]:
        return []

    def latest_predictions(self) -> Sequence[Prediction]:
        return []

    def models(self) -> Sequence[ModelInfo]:
        return []

    def health(self) -> Sequence[ComponentHealth]:
        return []

    def started_at(self) -> float:
        return self.start


@dataclass
class Api:
    url: str
    store: Store
    services: ApiServices
    models: Path
    signing_key: Path
    keys: dict[str, str]  # scope label -> key
    key_ids: dict[str, str]  # scope label -> key id

    def client(self, who: str | None = "admin") -> httpx.AsyncClient:
        headers = {"X-API-Key": self.keys[who]} if who is not None else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)

    def signature(self, version: str, file: str) -> str:
        sha = file_sha256(self.models / file)
        return sign_model(load_private_key(self.signing_key), MODEL, version, sha)

    async def console(self, who: str) -> tuple[str, str]:
        """A console session of the key ``who``: (cookie, CSRF token)."""
        async with self.client(None) as http:
            r = await http.post("/console/login", data={"api_key": self.keys[who]})
        assert r.status_code == 303, r.text
        cookie = r.cookies[SESSION_COOKIE]
        session = self.services.sessions.get(cookie)
        assert session is not None
        return cookie, session.csrf


@pytest.fixture
async def api(store: Store, tmp_path: Path) -> AsyncIterator[Api]:
    models = tmp_path / "models"
    variants = write_variants(models)
    os.rename(variants["pump_health_v1"], models / "v1.onnx")
    os.rename(variants["pump_health_v2"], models / "v2.onnx")
    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    # The production profile: a version must be signed for its name and version.
    policy = ModelPolicy(
        public_key=load_public_key(tmp_path / "k.pub"), require_signature=True, directory=models
    )
    repo = ApiKeyRepository(store, GATEWAY)
    keys, key_ids = {}, {}
    for scope in Scope:
        record, key = repo.create(f"{scope.label}-person", scope)
        keys[scope.label], key_ids[scope.label] = key, record.key_id
    registry = RegistryService(RegistryRepository(store, GATEWAY), policy)
    services = ApiServices.from_store(View(), store, registry=registry)
    app = create_gateway_app(services)
    server = ApiServer(app, "127.0.0.1", free_port())
    await server.start()
    try:
        yield Api(server.url, store, services, models, tmp_path / "k", keys, key_ids)
    finally:
        await server.stop()
        close_app(app)


async def test_registry_changes_over_rest_and_the_console_are_ledger_entries(api: Api) -> None:
    admin = f"key:{api.key_ids['admin']}"
    sha1, sha2 = file_sha256(api.models / "v1.onnx"), file_sha256(api.models / "v2.onnx")
    base = "/api/v1/models/pump-health"
    steps: list[tuple[str, dict[str, Any] | None, list[tuple[Any, ...]], list[str]]] = [
        (
            "/versions",
            {"version": "1", "path": "v1.onnx", "signature": api.signature("1", "v1.onnx")},
            [
                (
                    "model.registered",
                    "1",
                    None,
                    {"state": "registered", "sha256": sha1, "signed": True},
                )
            ],
            [""],
        ),
        (
            "/activate",
            {"version": "1"},
            [("model.activated", "1", {"state": "registered"}, {"state": "active"})],
            [""],
        ),
        (
            "/versions",
            {"version": "2", "path": "v2.onnx", "signature": api.signature("2", "v2.onnx")},
            [
                (
                    "model.registered",
                    "2",
                    None,
                    {"state": "registered", "sha256": sha2, "signed": True},
                )
            ],
            [""],
        ),
        (
            "/shadow",
            {"version": "2"},
            [("model.shadow", "2", {"state": "registered"}, {"state": "shadow"})],
            [""],
        ),
        (
            "/canary",
            {"version": "2", "share": 50, "max_disagreement": 0.3},
            [
                (
                    "model.canary",
                    "2",
                    {"state": "shadow"},
                    {
                        "state": "canary",
                        "share": 50.0,
                        "assets": None,
                        "guard": {"max_disagreement": 0.3},
                    },
                )
            ],
            [""],
        ),
        (
            "/promote",
            None,
            [
                (
                    "model.promoted",
                    "2",
                    {
                        "state": "canary",
                        "share": 50.0,
                        "assets": None,
                        "guard": {"max_disagreement": 0.3},
                    },
                    {"state": "active"},
                ),
                ("model.retired", "1", {"state": "active"}, {"state": "retired"}),
            ],
            ["", "replaced by version 2"],
        ),
    ]
    async with api.client("admin") as http:
        for path, body, expected, reasons in steps:
            seq = _head(api.store)
            r = await http.post(base + path, json=body)
            assert r.status_code in (200, 201), (path, r.text)
            got = _since(api.store, seq)
            assert [
                (e.action, e.subject, e.actor, e.channel, e.gateway, e.before, e.after) for e in got
            ] == [
                (action, f"model:{MODEL}/{v}", admin, "rest", GATEWAY, before, after)
                for action, v, before, after in expected
            ], path
            assert [e.reason for e in got] == reasons

        # The registry's own events name the same key.
        r = await http.get(f"{base}/versions/2")
        assert r.json()["registered_by"] == admin

        # Refused by policy at the command: an unsigned version, a tampered file. Nothing
        # changes, but who tried and why are entries.
        seq = _head(api.store)
        r = await http.post(f"{base}/versions", json={"version": "3", "path": "v1.onnx"})
        assert r.status_code == 422 and "has no signature" in r.json()["detail"], r.text
        (refused,) = _since(api.store, seq)
        assert _fields(refused) == (
            "model.refused",
            f"model:{MODEL}/3",
            admin,
            "rest",
            None,
            {"refused": "register"},
        )
        assert "has no signature" in refused.reason
        original = (api.models / "v1.onnx").read_bytes()
        (api.models / "v1.onnx").write_bytes((api.models / "v2.onnx").read_bytes())
        seq = _head(api.store)
        r = await http.post(f"{base}/activate", json={"version": "1"})
        assert r.status_code == 422, r.text
        (refused,) = _since(api.store, seq)
        assert _fields(refused) == (
            "model.refused",
            f"model:{MODEL}/1",
            admin,
            "rest",
            {"state": "retired"},
            {"state": "retired", "refused": "activate"},
        )
        assert sha1 in refused.reason  # the hash the version was registered with

    # An admin acting from the console: the same key, through the console channel.
    cookie, csrf = await api.console("admin")
    async with api.client(None) as http:
        seq = _head(api.store)
        # Version 1's file is tampered, so rolling back to it is refused ...
        r = await http.post(
            f"{base}/rollback",
            headers={"Cookie": f"{SESSION_COOKIE}={cookie}", "X-CSRF-Token": csrf},
        )
        assert r.status_code == 422, r.text
        (refused,) = _since(api.store, seq)
        assert (refused.action, refused.subject, refused.actor, refused.channel) == (
            "model.refused",
            f"model:{MODEL}/1",
            admin,
            "console",
        )
        assert refused.after == {"state": "retired", "refused": "rollback"}
        # ... and once the file is the approved one again, it is done.
        (api.models / "v1.onnx").write_bytes(original)
        seq = _head(api.store)
        r = await http.post(
            f"{base}/rollback",
            headers={"Cookie": f"{SESSION_COOKIE}={cookie}", "X-CSRF-Token": csrf},
        )
        assert r.status_code == 200, r.text
    assert [(*_fields(e), e.reason) for e in _since(api.store, seq)] == [
        (
            "model.rolled_back",
            f"model:{MODEL}/1",
            admin,
            "console",
            {"state": "retired"},
            {"state": "active"},
            "",
        ),
        (
            "model.retired",
            f"model:{MODEL}/2",
            admin,
            "console",
            {"state": "active"},
            {"state": "retired"},
            "replaced by version 1",
        ),
    ]
    _verified(api.store)


async def test_a_refused_registry_call_leaves_no_entry(api: Api) -> None:
    base = "/api/v1/models/pump-health"
    body = {"version": "1", "path": "v1.onnx", "signature": api.signature("1", "v1.onnx")}
    async with api.client("admin") as http:
        assert (await http.post(f"{base}/versions", json=body)).status_code == 201
        seq = _head(api.store)
        for path, sent in (
            ("/versions", body),  # the same version again: a conflict in the transaction
            ("/promote", None),  # no candidate
            ("/rollback", None),  # nothing to roll back to
            ("/shadow", {"version": "9"}),  # no such version
        ):
            r = await http.post(base + path, json=sent)
            assert r.status_code in (404, 409), (path, r.text)
        # Not an admin: refused before anything is looked at.
        async with api.client("operate") as operator:
            r = await operator.post(f"{base}/activate", json={"version": "1"})
            assert r.status_code == 403
    assert _head(api.store) == seq
    _verified(api.store)


async def test_api_keys_created_and_revoked_over_rest_are_entries_without_the_key(
    api: Api,
) -> None:
    admin = f"key:{api.key_ids['admin']}"
    async with api.client("admin") as http:
        seq = _head(api.store)
        r = await http.post("/api/v1/apikeys", json={"name": "line 3 hmi", "scope": "operate"})
        assert r.status_code == 201, r.text
        made = r.json()
        (created,) = _since(api.store, seq)
        assert _fields(created) == (
            "apikey.created",
            f"apikey:{made['key_id']}",
            admin,
            "rest",
            None,
            {"name": "line 3 hmi", "scope": "operate", "state": "active"},
        )
        assert created.gateway == GATEWAY
        with api.store.sessions() as s:
            key_hash = s.scalars(
                select(ApiKeyRow.key_hash).where(ApiKeyRow.key_id == made["key_id"])
            ).one()
        text = json.dumps(created.to_json())
        assert made["key"] not in text and key_hash not in text
        secret = made["key"].split("_", 2)[2]  # brk_<id>_<secret>
        assert secret not in text

        seq = _head(api.store)
        r = await http.delete(f"/api/v1/apikeys/{made['key_id']}")
        assert r.status_code == 200, r.text
        (revoked,) = _since(api.store, seq)
        assert _fields(revoked) == (
            "apikey.revoked",
            f"apikey:{made['key_id']}",
            admin,
            "rest",
            {"name": "line 3 hmi", "scope": "operate", "state": "active"},
            {"name": "line 3 hmi", "scope": "operate", "state": "revoked"},
        )
        # Revoking it again changes nothing, and records nothing.
        seq = _head(api.store)
        assert (await http.delete(f"/api/v1/apikeys/{made['key_id']}")).status_code == 200
        assert (await http.delete("/api/v1/apikeys/0123456789ab")).status_code == 404
        assert _head(api.store) == seq
    _verified(api.store)


async def test_operator_feedback_over_rest_and_the_console_is_an_entry(api: Api) -> None:
    operator = f"key:{api.key_ids['operate']}"
    judged, other = _prediction("P1", 1), _prediction("P1", 2, "ok")
    PredictionRepository(api.store).add_many([judged, other])
    async with api.client("operate") as http:
        seq = _head(api.store)
        r = await http.post(
            f"/api/v1/predictions/{judged.id}/feedback",
            json={"action": "confirm", "by": "anna", "comment": "bearing noise heard on site"},
        )
        assert r.status_code == 201, r.text
        r = await http.post(
            f"/api/v1/predictions/{uuid.uuid4()}/feedback", json={"action": "reject", "by": "anna"}
        )
        assert r.status_code == 404  # no such prediction: nothing stored, nothing recorded
    (confirmed,) = _since(api.store, seq)
    assert _fields(confirmed) == (
        "operator.confirmed",
        f"prediction:{judged.id}",
        operator,
        "rest",
        None,
        {
            "action": "confirm",
            "asset": "P1",
            "model": "health",
            "value": "fault",
            "by": "anna",
            "comment": "bearing noise heard on site",
            "key_id": api.key_ids["operate"],
        },
    )
    assert (confirmed.reason, confirmed.gateway) == ("bearing noise heard on site", GATEWAY)

    cookie, csrf = await api.console("operate")
    async with api.client(None) as http:
        seq = _head(api.store)
        for action in ("acknowledge", "reject"):
            r = await http.post(
                f"/api/v1/predictions/{other.id}/feedback",
                json={"action": action, "by": "ben", "comment": f"{action} from the console"},
                headers={"Cookie": f"{SESSION_COOKIE}={cookie}", "X-CSRF-Token": csrf},
            )
            assert r.status_code == 201, r.text
    got = _since(api.store, seq)
    assert [(e.action, e.subject, e.actor, e.channel, e.reason) for e in got] == [
        (
            "operator.acknowledged",
            f"prediction:{other.id}",
            operator,
            "console",
            "acknowledge from the console",
        ),
        (
            "operator.rejected",
            f"prediction:{other.id}",
            operator,
            "console",
            "reject from the console",
        ),
    ]
    assert got[1].after["by"] == "ben" and got[1].after["action"] == "reject"
    _verified(api.store)


# -- OPC UA ---------------------------------------------------------------------------------

NS = "urn:test:audit"
SLOTS = (PredictionSlot("P1", "health", "1.0.0", "a" * 64, labels=("ok", "fault")),)


async def _opcua_call(url: str, method: str, *args: str) -> list[object]:
    client = Client(url, timeout=5)
    client.set_user("ops")
    client.set_password("0ps-pw")
    async with client:
        ns = await client.get_namespace_index(NS)
        obj = client.get_node(ua.NodeId("Predictions.P1.health", ns))
        result = await obj.call_method(ua.NodeId(f"Predictions.P1.health.{method}", ns), *args)
        return result if isinstance(result, list) else [result]


async def test_operator_feedback_over_opcua_names_the_session_user(store: Store) -> None:
    feedback = StoreFeedback(LabelRepository(store, GATEWAY), LineageRepository(store))
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    settings = OpcUaServerSettings(
        endpoint=url,
        namespace=NS,
        security_policies=["None"],
        users=[OpcUaServerUser(username="ops", password="0ps-pw", role="operator")],
    )
    server = PredictionServer("hmi", settings, SinkContext(GATEWAY, SLOTS, feedback=feedback))
    await server.start()
    try:
        judged = _prediction("P1", 1)
        await server.write([judged])
        seq = _head(store)
        assert await _opcua_call(url, "Reject", judged.id, "sensor drift, pump is fine") == [
            judged.id
        ]
        with pytest.raises(ua.UaStatusCodeError) as unknown:
            await _opcua_call(url, "Confirm", str(uuid.uuid4()), "")
        assert unknown.value.code == StatusCodes.BadNoMatch
    finally:
        await server.close()
    (rejected,) = _since(store, seq)
    assert _fields(rejected) == (
        "operator.rejected",
        f"prediction:{judged.id}",
        "opcua:ops",
        "opcua",
        None,
        {
            "action": "reject",
            "asset": "P1",
            "model": "health",
            "value": "fault",
            "by": "ops",
            "comment": "sensor drift, pump is fine",
        },
    )
    assert (rejected.reason, rejected.gateway) == ("sensor drift, pump is fine", GATEWAY)
    _verified(store)


# -- the CLI --------------------------------------------------------------------------------


def _cli(*args: str) -> str:
    out = CliRunner().invoke(main, list(args))
    assert out.exit_code == 0, out.output
    return out.stdout


def test_cli_changes_name_the_os_user(tmp_path: Path) -> None:
    user = f"cli:{getpass.getuser()}"
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    models = tmp_path / "models"
    variants = write_variants(models)
    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    where = ["--store", url]

    _cli("models", "register", str(variants["pump_health_v1"]), "--name", MODEL,
         "--version", "1", "--models-dir", str(models), *where)  # fmt: skip
    _cli("models", "activate", MODEL, "1", *where)
    # Refused at the command (unsigned, a public key given): an entry, nothing registered.
    out = CliRunner().invoke(
        main,
        ["models", "register", str(variants["pump_health_v2"]), "--name", MODEL, "--version",
         "2", "--models-dir", str(models), "--public-key", str(tmp_path / "k.pub"), *where],
    )  # fmt: skip
    assert out.exit_code != 0 and "has no signature" in out.output

    key = _cli("apikeys", "create", "night shift", "--scope", "operate", *where).strip()
    store = open_store(url)
    try:
        (record,) = ApiKeyRepository(store).list()
        _cli("apikeys", "revoke", record.key_id, *where)
        # A key whose file cannot be written is revoked at once: that too is recorded.
        out = CliRunner().invoke(
            main, ["apikeys", "create", "lost", "-o", str(tmp_path / "no" / "key"), *where]
        )
        assert out.exit_code != 0 and "key revoked" in out.output
        (lost,) = [
            r for r in ApiKeyRepository(store).list(include_revoked=True) if r.name == "lost"
        ]

        got = _ledger(store).page(AuditFilter(), 100)
        sha1 = file_sha256(variants["pump_health_v1"])
        assert [(*_fields(e), e.gateway) for e in got] == [
            (
                "model.registered",
                f"model:{MODEL}/1",
                user,
                "cli",
                None,
                {"state": "registered", "sha256": sha1, "signed": False},
                default_writer(),
            ),
            (
                "model.activated",
                f"model:{MODEL}/1",
                user,
                "cli",
                {"state": "registered"},
                {"state": "active"},
                default_writer(),
            ),
            (
                "model.refused",
                f"model:{MODEL}/2",
                user,
                "cli",
                None,
                {"refused": "register"},
                default_writer(),
            ),
            (
                "apikey.created",
                f"apikey:{record.key_id}",
                user,
                "cli",
                None,
                {"name": "night shift", "scope": "operate", "state": "active"},
                default_writer(),
            ),
            (
                "apikey.revoked",
                f"apikey:{record.key_id}",
                user,
                "cli",
                {"name": "night shift", "scope": "operate", "state": "active"},
                {"name": "night shift", "scope": "operate", "state": "revoked"},
                default_writer(),
            ),
            (
                "apikey.created",
                f"apikey:{lost.key_id}",
                user,
                "cli",
                None,
                {"name": "lost", "scope": "read", "state": "active"},
                default_writer(),
            ),
            (
                "apikey.revoked",
                f"apikey:{lost.key_id}",
                user,
                "cli",
                {"name": "lost", "scope": "read", "state": "active"},
                {"name": "lost", "scope": "read", "state": "revoked"},
                default_writer(),
            ),
        ]
        assert "has no signature" in got[2].reason
        assert got[-1].reason == f"the key could not be written to {tmp_path / 'no' / 'key'}"
        assert key not in json.dumps([e.to_json() for e in got])
        _verified(store)
    finally:
        store.dispose()


# -- the runtime: mapping seed, refusal at load, canary guard ------------------------------

ASSETS = ("pump-a", "pump-b")
HEALTHY = {"vibration": 2.0, "bearing_temperature": 50.0, "discharge_pressure": 4.2, "speed": 1470}
FAULTY = {"vibration": 20.0, "bearing_temperature": 90.0, "discharge_pressure": 4.2, "speed": 1470}


def _feed(table: TagTable, asset: str, values: dict[str, float]) -> None:
    # The table stamps window samples with its own monotonic clock: replay the last seconds.
    now, mono = time.time(), time.monotonic()
    for age in (6.0, 4.0, 2.0, 0.5):
        with patch.object(table, "monotonic_clock", return_value=mono - age):
            table.apply(
                [
                    TagSample(f"{asset}.{tag}", value, Quality.GOOD, now - age, now - age)
                    for tag, value in values.items()
                ]
            )


async def test_runtime_changes_are_the_systems_and_the_mappings(
    store: Store, tmp_path: Path
) -> None:
    variants = write_variants(tmp_path / "models")
    path = tmp_path / "mapping.yaml"
    path.write_text(
        pump_mapping(
            store=tmp_path / "unused.db",
            model=variants["pump_health_v1"],
            assets=ASSETS,
            gateway_id="gw-runtime",
        )
    )
    mapping = load_mapping(path)
    table = TagTable(mapping)
    loaded = LoadedModel.load(variants["pump_health_v1"])

    async def publish(batch: Sequence[Prediction]) -> None:
        return None

    runner = ModelRunner(
        mapping.models[MODEL], loaded, loaded.labels, table.get, publish, "gw-runtime", "boot"
    )
    _feed(table, "pump-a", HEALTHY)
    _feed(table, "pump-b", FAULTY)
    policy = ModelPolicy(directory=variants["pump_health_v1"].parent)
    live = live_models(mapping, store, [runner], [], policy)
    # What `bridge models --store` does elsewhere: no mapping, so no fit check at the command.
    command = RegistryService(RegistryRepository(store), policy)

    await live.watcher.seed()
    sha1 = file_sha256(variants["pump_health_v1"])
    assert [(*_fields(e), e.gateway) for e in _since(store, 0)] == [
        (
            "model.registered",
            f"model:{MODEL}/1",
            "mapping",
            "mapping",
            None,
            {"state": "registered", "sha256": sha1, "signed": False},
            "gw-runtime",
        ),
        (
            "model.activated",
            f"model:{MODEL}/1",
            "mapping",
            "mapping",
            {"state": "registered"},
            {"state": "active"},
            "gw-runtime",
        ),
    ]
    await live.watcher.sync()

    # A version that does not fit the mapping: the gateway refuses it at load and says so.
    command.register(variants["five_features"], MODEL, "3", actor="cli:someone")
    command.activate(MODEL, "3", "cli:someone")
    seq = _head(store)
    await live.watcher.sync()
    refused, restored = _since(store, seq)
    assert [(*_fields(e), e.gateway) for e in (refused, restored)] == [
        (
            "model.refused",
            f"model:{MODEL}/3",
            "system",
            "system",
            {"state": "active"},
            {"state": "refused"},
            "gw-runtime",
        ),
        (
            "model.restored",
            f"model:{MODEL}/1",
            "system",
            "system",
            {"state": "retired"},
            {"state": "active"},
            "gw-runtime",
        ),
    ]
    assert "expects 5 values per row" in refused.reason
    assert restored.reason == "version 3 was refused"

    # A canary that fails on its asset: the guard rolls it back.
    command.register(variants["nan_when_calm"], MODEL, "4", actor="cli:someone")
    command.canary(MODEL, "4", "cli:someone", assets=["pump-a"])
    await live.watcher.sync()
    assert runner.deployment.candidate is not None
    await runner.tick()
    assert runner.guard_tripped is not None
    seq = _head(store)
    await live.watcher.sync()
    (rolled_back,) = _since(store, seq)
    assert _fields(rolled_back) == (
        "model.rolled_back",
        f"model:{MODEL}/4",
        "system",
        "system",
        {"state": "canary", "share": None, "assets": ["pump-a"], "guard": None},
        {"state": "retired"},
    )
    assert rolled_back.reason.startswith("automatic: ")
    assert "not a finite number" in rolled_back.reason
    _verified(store)


# -- a change whose transaction fails -------------------------------------------------------


def _failing_after_append(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """The module's ledger append succeeds, then its transaction fails (as a lost connection
    or a constraint on the change itself would): both must be rolled back together."""
    import bridge.store.audit as audit

    def append_then_fail(*args: Any, **kwargs: Any) -> AuditEntry:
        audit.append_entry(*args, **kwargs)
        raise SQLAlchemyError("injected failure after the ledger append")

    monkeypatch.setattr(f"{module}.append_entry", append_then_fail)


def test_a_change_whose_transaction_fails_leaves_no_entry(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variants = write_variants(tmp_path / "models")
    policy = ModelPolicy(directory=tmp_path / "models")
    repo = RegistryRepository(store, GATEWAY)
    service = RegistryService(repo, policy)
    service.register(variants["pump_health_v1"], MODEL, "1", actor="cli:ops")
    service.activate(MODEL, "1", "cli:ops")
    keys = ApiKeyRepository(store, GATEWAY)
    record, _ = keys.create("kept", Scope.READ, actor="cli:ops", channel="cli")
    labels = LabelRepository(store, GATEWAY)
    judged = _prediction("P1", 1)
    answer = Feedback(
        judged.id, "P1", "health", "confirm", "anna", "rest", judged.timestamp, "fault", "", "k1"
    )
    seq = _head(store)

    # Conflicts the registry finds inside its transaction: nothing written.
    with pytest.raises(RegistryConflict):
        service.register(variants["pump_health_v1"], MODEL, "1", actor="cli:ops")
    with pytest.raises(RegistryConflict):
        repo.transition(MODEL, "1", move("1", "shadow", "shadow"), "cli:ops")
    assert _head(store) == seq

    # The entry appended, then the transaction failed: neither the change nor its entry stays.
    service.register(variants["pump_health_v2"], MODEL, "2", actor="cli:ops")
    seq = _head(store)
    _failing_after_append(monkeypatch, "bridge.store.registry")
    with pytest.raises(Exception, match="injected"):
        service.shadow(MODEL, "2", "cli:ops")
    assert repo.get(MODEL, "2").state == "registered"  # type: ignore[union-attr]

    _failing_after_append(monkeypatch, "bridge.store.apikeys")
    with pytest.raises(Exception, match="injected"):
        keys.revoke(record.key_id, actor="cli:ops", channel="cli")
    assert keys.list() == [record]
    with pytest.raises(Exception, match="injected"):
        keys.create("never", Scope.ADMIN, actor="cli:ops", channel="cli")
    assert [r.name for r in keys.list(include_revoked=True)] == ["kept"]

    _failing_after_append(monkeypatch, "bridge.store.labels")
    with pytest.raises(Exception, match="injected"):
        labels.add(answer)
    assert labels.of_predictions([judged.id]) == []
    assert _head(store) == seq
    monkeypatch.undo()

    # The chain goes on from where it was: no gap, no orphan, and it verifies.
    service.shadow(MODEL, "2", "cli:ops")
    labels.add(answer)
    after = _since(store, seq)
    assert [(e.seq, e.action) for e in after] == [
        (seq + 1, "model.shadow"),
        (seq + 2, "operator.confirmed"),
    ]
    assert after[1].actor == "key:k1" and after[1].channel == "rest"
    _verified(store)
