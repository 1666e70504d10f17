"""Decision lineage export on SQLite and PostgreSQL: predictions stored through the store writer
with their outbox rows (an MES event rejected for good, one pending with an answer, one
accepted; an MQTT UNS event pending), an operator's feedback (and its audit ledger entry);
exported by id and by time range as JSON documents and as OpenLineage run events, through the
exporter, the `bridge lineage export` command (a real process) and `GET /api/v1/lineage` (a
real uvicorn server). A range of 5,000 predictions is read one page at a time."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import jsonschema_rs
import pytest
from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.facet_v2 import (
    datasource_dataset,
    job_type_job,
    processing_engine_run,
)
from openlineage.client.serde import Serde
from sqlalchemy import event as sa_event
from stores import BACKENDS, PG_URL, pg_schema
from support import LOOPBACK, free_port
from testca import make_ca

from bridge.api import ApiServices, create_app
from bridge.api.view import ModelInfo, TagState
from bridge.auth import Scope
from bridge.config.loader import load_mapping
from bridge.config.spec import ApiSettings
from bridge.lineage import LineageContext, OutputRef, Selection, SourceRef, decision_pages
from bridge.lineage import write_export as export_to
from bridge.lineage.runevents import (
    FACETS_SCHEMA,
    DecisionRunFacet,
    DeliveryOutputFacet,
    ModelOutputFacet,
    OperatorActionsRunFacet,
    PredictionOutputFacet,
    TagReadingInputFacet,
)
from bridge.outbox.feed import Budget, OutboxFeed
from bridge.runtime.apiserver import ApiServer
from bridge.store import PredictionRepository, Store, open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.audit import AuditFilter, AuditRepository
from bridge.store.decisions import DecisionPage, DecisionRepository, PageKey
from bridge.store.labels import LabelRepository
from bridge.store.outbox import OutboxRepository
from bridge.types import (
    ComponentHealth,
    Contribution,
    Explanation,
    Feedback,
    InputSnapshot,
    Prediction,
    Quality,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = 1714564800.0  # 2024-05-01T12:00:00Z
GATEWAY = "gw-lx"
MODEL_SHA = "5e" * 32
DEAD_ANSWER = 'HTTP 422: {"error": "unknown asset a0"}'
PENDING_ANSWER = "HTTP 409: line 4 is stopped"


@dataclass
class Backend:
    store: Store
    url: str  # the same store for a command in another process


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'lineage.db'}"
            store = open_store(url)
        else:
            schema = stack.enter_context(pg_schema("bridge_lineage"))
            store = open_store(PG_URL, schema=schema)
            url = f"{PG_URL}?options={quote(f'-csearch_path={schema}')}"
        try:
            yield Backend(store, url)
        finally:
            store.dispose()


def pred(asset: str, seq: int, ts: float, model: str = "health") -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/{model}/{seq}")),
        seq=seq,
        asset=asset,
        model=model,
        version="2.1.0",
        sha256=MODEL_SHA,
        value="bearing_fault",
        score=0.91,
        quality=Quality.GOOD,
        timestamp=ts,
        input_age_s=0.4,
        inputs=(
            InputSnapshot(f"{asset}.temp", 71.5 + seq, Quality.GOOD, ts - 0.5),
            InputSnapshot(f"{asset}.pressure", 3, Quality.UNCERTAIN, None),
        ),
        explanation=Explanation(
            "bearing temperature +18 °C above normal",
            (Contribution("temp.mean", 71.5, 53.5, 0.42),),
        ),
        drift_score=0.05,
    )


@dataclass
class Facts:
    dead: Prediction  # its MES event rejected for good
    pending: Prediction  # its MES event waiting after an answer; confirmed by an operator
    accepted: Prediction  # its MES event accepted (the row is gone)
    revision: str


def record(store: Store, revision: str) -> Facts:
    """Three decisions through the store writer with two durable outputs (mes, uns), the MES
    relay's outcomes as the relay records them, and an operator's answer."""
    made = [pred("a0", 1, T0 + 1), pred("a1", 1, T0 + 2), pred("a2", 1, T0 + 3)]
    feeds = [
        OutboxFeed(name, lambda p: json.dumps({"id": p.id, "value": p.value}), Budget(100))
        for name in ("mes", "uns")
    ]
    PredictionRepository(store, revision, GATEWAY).add_many(made, feeds)
    outbox = OutboxRepository(store)
    claim = outbox.claim("mes", limit=10)
    head = {e.asset: e for e in claim.events}
    assert set(head) == {"a0", "a1", "a2"}
    # a2 accepted; a0 rejected, dead at the first rejection; a1 not sent (released).
    claim.finish([head["a2"].id], {head["a0"].id: DEAD_ANSWER}, 1, 0.0)
    claim.close()
    again = outbox.claim("mes", limit=10)
    assert [e.asset for e in again.events] == ["a1"]
    again.finish([], {again.events[0].id: PENDING_ANSWER}, 5, 60.0)
    again.close()
    LabelRepository(store).add(
        Feedback(
            prediction_id=made[1].id,
            asset="a1",
            model="health",
            action="confirm",
            by="anna",
            channel="rest",
            prediction_time=made[1].timestamp,
            value=made[1].value,
            comment="checked on site",
        ),
        at=T0 + 30,
    )
    return Facts(made[0], made[1], made[2], revision)


def context(revision: str | None) -> LineageContext:
    """What `--mapping` gives the export: the tags' sources and that revision's outputs."""
    plant = SourceRef("plant", "opcua", "opc.tcp://127.0.0.1:4840")
    plc = SourceRef("plc", "modbus", "modbus://127.0.0.1:5020")
    return LineageContext(
        gateway_id=GATEWAY,
        tag_sources={f"{a}.temp": plant for a in ("a0", "a1", "a2")}
        | {f"{a}.pressure": plc for a in ("a0", "a1", "a2")},
        revision=revision,
        outputs=(
            OutputRef("hmi", "opcua-server", False, "opc.tcp://127.0.0.1:4850"),
            OutputRef("mes", "mes-rest", True, "http://127.0.0.1:8081"),
            OutputRef("uns", "uns", True, "mqtt://broker.plant:8883"),
        ),
    )


def export(store: Store, ctx: LineageContext, fmt: str, selection: Selection) -> str:
    out = io.StringIO()
    pages = decision_pages(DecisionRepository(store), selection, 100)
    export_to(pages, ctx, out, "openlineage" if fmt == "openlineage" else "json", selection)
    return out.getvalue()


def delivery(doc: dict[str, Any], output: str) -> dict[str, Any]:
    (found,) = [d for d in doc["deliveries"] if d["output"] == output]
    return found


def iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- the JSON documents ---------------------------------------------------------------------


def test_one_decision_by_id_carries_its_whole_lineage(backend: Backend) -> None:
    facts = record(backend.store, "ab" * 32)
    ctx = context(facts.revision)
    text = export(backend.store, ctx, "json", Selection(facts.pending.id))
    whole = json.loads(text)
    assert whole["gateway"] == GATEWAY and whole["count"] == 1
    assert whole["selection"] == {"prediction_id": facts.pending.id}
    assert any("OPC UA" in line for line in whole["not_recorded"])
    (doc,) = whole["decisions"]
    p = facts.pending
    assert (doc["id"], doc["asset"], doc["seq"]) == (p.id, "a1", 1)
    assert iso(doc["time"]) == pytest.approx(p.timestamp)
    assert doc["mapping_revision"] == facts.revision
    assert doc["model"] == {"name": "health", "version": "2.1.0", "sha256": MODEL_SHA}
    temp, pressure = doc["inputs"]
    assert (temp["tag"], temp["value"], temp["quality"]) == ("a1.temp", 72.5, "Good")
    assert iso(temp["source_time"]) == pytest.approx(p.timestamp - 0.5)
    assert (temp["source"], temp["namespace"]) == ("plant", "opc.tcp://127.0.0.1:4840")
    assert (pressure["value"], pressure["quality"], pressure["source_time"]) == (
        3,
        "Uncertain",
        None,
    )
    assert pressure["namespace"] == "modbus://127.0.0.1:5020"
    assert doc["output"] == {
        "value": "bearing_fault",
        "score": 0.91,
        "quality": "Good",
        "reason": "",
        "input_age_s": 0.4,
        "drift_score": 0.05,
        "historical": False,
    }
    assert doc["explanation"] == {
        "reason": "bearing temperature +18 °C above normal",
        "top": [{"feature": "temp.mean", "value": 71.5, "baseline": 53.5, "effect": 0.42}],
    }
    # The MES event is waiting, with the MES's answer so far and its Idempotency-Key.
    mes = delivery(doc, "mes")
    assert (mes["status"], mes["kind"], mes["channel"]) == ("pending", "mes-rest", "mes")
    assert (mes["idempotency_key"], mes["attempts"]) == (p.id, 1)
    assert mes["last_answer"] == PENDING_ANSWER
    assert mes["endpoint"] == "http://127.0.0.1:8081"
    assert iso(mes["next_attempt_at"]) > time.time() + 30
    uns = delivery(doc, "uns")
    assert (uns["status"], uns["channel"], uns["attempts"], uns["last_answer"]) == (
        "pending",
        "mqtt",
        0,
        None,
    )
    # The OPC UA server is live: configured in this revision, nothing recorded per prediction.
    hmi = delivery(doc, "hmi")
    assert (hmi["status"], hmi["channel"], hmi["durable"]) == ("not_recorded", "opcua", False)
    assert "no record" in hmi["note"] and doc["outputs_known"] is True
    # The operator's answer, and the audit ledger's own entries about this prediction.
    (answer,) = doc["operator_actions"]["feedback"]
    assert (answer["action"], answer["by"], answer["comment"]) == (
        "confirm",
        "anna",
        "checked on site",
    )
    assert iso(answer["at"]) == pytest.approx(T0 + 30)
    ledger = AuditRepository(backend.store, GATEWAY).page(
        AuditFilter(subject=f"prediction:{p.id}"), 100
    )
    assert [(a["seq"], a["action"], a["hash"]) for a in doc["operator_actions"]["audit"]] == [
        (e.seq, e.action, e.hash) for e in ledger
    ]
    assert "operator.confirmed" in [a["action"] for a in doc["operator_actions"]["audit"]]


def test_dead_letter_accepted_and_unknown_revision(backend: Backend) -> None:
    facts = record(backend.store, "ab" * 32)
    text = export(backend.store, context(facts.revision), "json", Selection(since=T0))
    docs = {d["id"]: d for d in json.loads(text)["decisions"]}
    assert list(docs) == [facts.dead.id, facts.pending.id, facts.accepted.id]  # oldest first
    dead = delivery(docs[facts.dead.id], "mes")
    assert (dead["status"], dead["attempts"], dead["last_answer"]) == (
        "dead_letter",
        1,
        DEAD_ANSWER,
    )
    assert dead["idempotency_key"] == facts.dead.id and dead["failed_at"] is not None
    # Accepted: the row is gone; the export says what that can mean, and guesses nothing.
    gone = delivery(docs[facts.accepted.id], "mes")
    assert (gone["status"], gone["idempotency_key"]) == ("no_outbox_row", facts.accepted.id)
    assert "accepted" in gone["note"] and "never queued" in gone["note"]
    assert gone["last_answer"] is None
    assert docs[facts.dead.id]["operator_actions"] == {"feedback": [], "audit": []}

    # Exported with another revision's mapping: only the outbox's facts, outputs not known.
    other = json.loads(export(backend.store, context("cd" * 32), "json", Selection(since=T0)))
    docs = {d["id"]: d for d in other["decisions"]}
    assert {d["output"] for d in docs[facts.accepted.id]["deliveries"]} == {"uns"}
    assert docs[facts.accepted.id]["outputs_known"] is False
    mes = delivery(docs[facts.dead.id], "mes")
    assert (mes["status"], mes["kind"], mes["channel"]) == ("dead_letter", None, None)

    # The range is inclusive at both ends.
    middle = json.loads(
        export(backend.store, context(None), "json", Selection(None, T0 + 2, T0 + 3))
    )
    assert [d["id"] for d in middle["decisions"]] == [facts.pending.id, facts.accepted.id]


# -- OpenLineage run events ---------------------------------------------------------------

_CUSTOM = {
    "bridge_tagReading": TagReadingInputFacet,
    "bridge_model": ModelOutputFacet,
    "bridge_prediction": PredictionOutputFacet,
    "bridge_delivery": DeliveryOutputFacet,
    "bridge_decision": DecisionRunFacet,
    "bridge_operatorActions": OperatorActionsRunFacet,
}
_STANDARD = {
    "datasource": datasource_dataset.DatasourceDatasetFacet,
    "processing_engine": processing_engine_run.ProcessingEngineRunFacet,
    "jobType": job_type_job.JobTypeJobFacet,
}


def _facets(found: dict[str, Any]) -> dict[str, Any]:
    """The facets rebuilt with openlineage-python's attrs classes (their validators run); a
    custom facet is also checked against the JSON Schema its ``_schemaURL`` points into."""
    made: dict[str, Any] = {}
    for name, body in found.items():
        assert urlsplit(body["_producer"]).scheme and urlsplit(body["_schemaURL"]).scheme
        cls = _CUSTOM.get(name) or _STANDARD[name]
        if name in _CUSTOM:
            definition = body["_schemaURL"].rsplit("/", 1)[1]
            jsonschema_rs.validator_for(FACETS_SCHEMA["$defs"][definition]).validate(body)
        fields = {k: v for k, v in body.items() if not k.startswith("_")}
        made[name] = cls(**fields, producer=body["_producer"])
        assert made[name]._schemaURL == body["_schemaURL"]
    return made


def rebuild(event: dict[str, Any]) -> RunEvent:
    """A run event read back into openlineage-python's classes."""
    return RunEvent(
        eventType=RunState(event["eventType"]),
        eventTime=event["eventTime"],
        producer=event["producer"],
        run=Run(runId=event["run"]["runId"], facets=_facets(event["run"]["facets"])),
        job=Job(
            namespace=event["job"]["namespace"],
            name=event["job"]["name"],
            facets=_facets(event["job"]["facets"]),
        ),
        inputs=[
            InputDataset(
                namespace=i["namespace"],
                name=i["name"],
                facets=_facets(i["facets"]),
                inputFacets=_facets(i["inputFacets"]),
            )
            for i in event["inputs"]
        ],
        outputs=[
            OutputDataset(
                namespace=o["namespace"],
                name=o["name"],
                facets=_facets(o["facets"]),
                outputFacets=_facets(o["outputFacets"]),
            )
            for o in event["outputs"]
        ],
    )


def check_event(event: dict[str, Any]) -> RunEvent:
    """What the OpenLineage spec requires of a run event, and that the JSON is exactly what
    openlineage's own classes and serializer make of it (a lossless round trip)."""
    for key in ("eventTime", "producer", "schemaURL", "run", "job"):
        assert key in event, key
    assert event["schemaURL"].startswith("https://openlineage.io/spec/")
    uuid.UUID(event["run"]["runId"])
    made = rebuild(event)
    assert Serde.to_dict(made) == event
    return made


def test_openlineage_events_carry_the_same_facts(backend: Backend) -> None:
    facts = record(backend.store, "ab" * 32)
    ctx = context(facts.revision)
    lines = export(backend.store, ctx, "openlineage", Selection(since=T0)).splitlines()
    events = [json.loads(line) for line in lines]
    docs = json.loads(export(backend.store, ctx, "json", Selection(since=T0)))["decisions"]
    assert len(events) == len(docs) == 3
    for event, doc in zip(events, docs, strict=True):
        check_event(event)
        assert event["eventType"] == "COMPLETE"
        assert event["run"]["runId"] == doc["id"]
        assert iso(event["eventTime"]) == pytest.approx(iso(doc["time"]))
        assert event["job"] == {
            "namespace": "bridge://gw-lx",
            "name": "health",
            "facets": event["job"]["facets"],
        }
        assert event["job"]["facets"]["jobType"]["processingType"] == "STREAMING"
        reading = [
            (i["namespace"], i["name"], i["inputFacets"]["bridge_tagReading"])
            for i in event["inputs"]
        ]
        assert [(ns, name, r["quality"], r.get("value")) for ns, name, r in reading] == [
            (i["namespace"], i["tag"], i["quality"], i["value"]) for i in doc["inputs"]
        ]
        assert event["inputs"][0]["facets"]["datasource"] == {
            "_producer": event["producer"],
            "_schemaURL": event["inputs"][0]["facets"]["datasource"]["_schemaURL"],
            "name": "plant",
            "uri": "opc.tcp://127.0.0.1:4840",
        }
        assert iso(reading[0][2]["sourceTime"]) == pytest.approx(
            iso(doc["inputs"][0]["source_time"])
        )
        (output,) = event["outputs"]
        assert (output["namespace"], output["name"]) == (
            "bridge://gw-lx",
            f"predictions/{doc['asset']}/health",
        )
        facets = output["outputFacets"]
        assert facets["bridge_model"] | {"_producer": "", "_schemaURL": ""} == {
            "_producer": "",
            "_schemaURL": "",
            "name": "health",
            "version": "2.1.0",
            "sha256": MODEL_SHA,
            "mappingRevision": facts.revision,
        }
        assert facets["bridge_prediction"]["explanation"] == doc["explanation"]
        assert facets["bridge_prediction"]["value"] == "bearing_fault"
        sent = {d["output"]: d for d in facets["bridge_delivery"]["deliveries"]}
        want = {d["output"]: d for d in doc["deliveries"]}
        assert set(sent) == set(want) == {"hmi", "mes", "uns"}
        for name, d in want.items():
            assert sent[name]["status"] == d["status"]
            assert sent[name].get("idempotencyKey") == d["idempotency_key"]
            assert sent[name].get("lastAnswer") == d["last_answer"]
        actions = event["run"]["facets"]["bridge_operatorActions"]
        assert [a["action"] for a in actions["feedback"]] == [
            a["action"] for a in doc["operator_actions"]["feedback"]
        ]
        assert [a["hash"] for a in actions["audit"]] == [
            a["hash"] for a in doc["operator_actions"]["audit"]
        ]
        decision = event["run"]["facets"]["bridge_decision"]
        assert (decision["asset"], decision["seq"], decision["mappingRevision"]) == (
            doc["asset"],
            1,
            facts.revision,
        )
    by_run = {e["run"]["runId"]: e for e in events}
    mes = {
        d["output"]: d
        for d in by_run[facts.dead.id]["outputs"][0]["outputFacets"]["bridge_delivery"][
            "deliveries"
        ]
    }["mes"]
    assert (mes["status"], mes["lastAnswer"], mes["idempotencyKey"]) == (
        "dead_letter",
        DEAD_ANSWER,
        facts.dead.id,
    )
    confirmed = by_run[facts.pending.id]["run"]["facets"]["bridge_operatorActions"]
    assert [(a["action"], a["by"]) for a in confirmed["feedback"]] == [("confirm", "anna")]


# -- a long range, page by page -----------------------------------------------------------


class WatchedRepository(DecisionRepository):
    """Tells each page it reads (how many decisions, what it asked for)."""

    def __init__(self, store: Store, trail: list[tuple[str, int]]) -> None:
        super().__init__(store)
        self.trail = trail

    def page(
        self, since: float | None, until: float | None, limit: int, after: PageKey | None = None
    ) -> DecisionPage:
        found = super().page(since, until, limit, after)
        assert limit == 500
        self.trail.append(("read", len(found.items)))
        return found


def test_five_thousand_decisions_are_exported_a_page_at_a_time(
    backend: Backend, tmp_path: Path
) -> None:
    writer = PredictionRepository(backend.store, "ab" * 32, GATEWAY)
    for start in range(0, 5000, 1000):
        writer.add_many([pred(f"p{i % 7}", i, T0 + i * 0.5) for i in range(start, start + 1000)])
    trail: list[tuple[str, int]] = []
    repo = WatchedRepository(backend.store, trail)
    selection = Selection(since=T0, until=T0 + 5000)
    target = tmp_path / "range.json"
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa_event.listen(backend.store.engine, "before_cursor_execute", seen)
    try:
        with target.open("w", encoding="utf-8") as out:
            count = export_to(
                decision_pages(repo, selection, 500),
                context(None),
                out,
                "json",
                selection,
                on_page=lambda n: trail.append(("wrote", n)),
            )
    finally:
        sa_event.remove(backend.store.engine, "before_cursor_execute", seen)
    assert count == 5000
    # Ten pages of 500, each written before the next was read: never more than one in memory.
    assert trail == [("read", 500), ("wrote", 500)] * 10
    # A page is five queries whatever its size (predictions, outbox rows, dead letters, ledger
    # entries, labels), not one per prediction.
    assert len(statements) <= 10 * 6, statements[:20]
    docs = json.loads(target.read_text())["decisions"]
    assert [d["seq"] for d in docs] == list(range(5000))
    assert len({d["id"] for d in docs}) == 5000


# -- the command ----------------------------------------------------------------------------


MAPPING = """
version: 1
gateway:
  id: gw-lx
  store: "{store}"
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}}
  plc: {{kind: modbus, host: 127.0.0.1, port: 5020}}
assets:
{assets}
outputs:
  hmi:
    kind: opcua-server
    endpoint: opc.tcp://127.0.0.1:4850
    certificate: pki/own/cert.der
    private_key: pki/own/key.pem
  mes:
    kind: mes-rest
    url: http://ops:secret@127.0.0.1:8081/api/v1/predictions?token=abc
  uns:
    kind: uns
    host: broker.plant
    tls: {{ca_file: "{ca}", client_certificate: "{cert}", client_key: "{key}"}}
    enterprise: acme
    site: dallas
    area: packaging
    line: line-4
"""


def write_mapping(folder: Path, store_url: str) -> Path:
    tls = make_ca(folder / "pki")
    assets = "\n".join(
        f"  {a}:\n    tags:\n"
        f'      temp: {{source: plant, address: "nsu=urn:t;s={a}.T"}}\n'
        f"      pressure: {{source: plc, address: {{table: holding, address: 0, type: uint16}}}}"
        for a in ("a0", "a1", "a2")
    )
    path = folder / "mapping.yaml"
    path.write_text(
        MAPPING.format(
            store=store_url, assets=assets, ca=tls.ca, cert=tls.client_cert, key=tls.client_key
        ),
        encoding="utf-8",
    )
    return path


def bridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_exports_by_id_and_by_range(backend: Backend, tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, backend.url)
    revision = load_mapping(mapping).revision
    facts = record(backend.store, revision)

    # By id, with the mapping: the sources' addresses and that revision's outputs are known.
    by_id = tmp_path / "one.json"
    done = bridge("lineage", "export", "--prediction", facts.pending.id, "--mapping",
                  str(mapping), "-o", str(by_id), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"1 decision(s) exported to {by_id}"
    (doc,) = json.loads(by_id.read_text())["decisions"]
    assert doc["mapping_revision"] == revision and doc["model"]["sha256"] == MODEL_SHA
    assert doc["inputs"][0]["namespace"] == "opc.tcp://127.0.0.1:4840"
    assert doc["inputs"][1]["namespace"] == "modbus://127.0.0.1:5020"
    mes = delivery(doc, "mes")
    assert (mes["idempotency_key"], mes["last_answer"]) == (facts.pending.id, PENDING_ANSWER)
    # The MES URL's user, password and token stay in the mapping.
    assert mes["endpoint"] == "http://127.0.0.1:8081" and "secret" not in by_id.read_text()
    assert delivery(doc, "uns")["endpoint"] == "mqtt://broker.plant:8883"
    assert delivery(doc, "hmi")["status"] == "not_recorded"
    assert doc["operator_actions"]["feedback"][0]["action"] == "confirm"

    # By range, from the store alone, as OpenLineage: the gateway is the store's only one.
    events_file = tmp_path / "events.jsonl"
    done = bridge("lineage", "export", "--since", "2024-05-01T12:00:00Z", "--until",
                  str(T0 + 2), "--store", backend.url, "--format", "openlineage",
                  "-o", str(events_file), "--page-size", "1", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [e["run"]["runId"] for e in events] == [facts.dead.id, facts.pending.id]
    for event in events:
        check_event(event)
        assert event["job"]["namespace"] == "bridge://gw-lx"
        # Without the mapping the tags' sources are not known, and it says so.
        assert {i["namespace"] for i in event["inputs"]} == {"bridge://gw-lx/tags"}
        assert event["outputs"][0]["outputFacets"]["bridge_delivery"]["outputsKnown"] is False

    # Refusals: nothing selected, both selected, an unknown id (no file is left behind).
    neither = bridge("lineage", "export", "--store", backend.url, "-o", "x.json", cwd=tmp_path)
    assert neither.returncode == 2 and "exactly one of --prediction" in neither.stderr
    both = bridge("lineage", "export", "--prediction", facts.dead.id, "--since", "1h",
                  "--store", backend.url, "-o", "x.json", cwd=tmp_path)  # fmt: skip
    assert both.returncode == 2
    unknown = str(uuid.uuid4())
    missing = bridge("lineage", "export", "--prediction", unknown, "--store", backend.url,
                     "-o", "x.json", cwd=tmp_path)  # fmt: skip
    assert missing.returncode == 4 and f"no stored prediction {unknown}" in missing.stderr
    assert not (tmp_path / "x.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    # A store holding predictions of two gateways needs to be told which namespace to use.
    PredictionRepository(backend.store, revision, "gw-other").add_many([pred("a9", 1, T0 + 9)])
    two = bridge("lineage", "export", "--since", str(T0), "--store", backend.url, "-o",
                 "x.json", cwd=tmp_path)  # fmt: skip
    assert two.returncode == 2 and "gw-lx, gw-other" in two.stderr and "--gateway" in two.stderr
    named = bridge("lineage", "export", "--since", str(T0), "--store", backend.url,
                   "--gateway", "gw-lx", "-o", "x.json", cwd=tmp_path)  # fmt: skip
    assert named.returncode == 0, named.stderr
    assert json.loads((tmp_path / "x.json").read_text())["count"] == 4

    # The custom facets' schema, which each facet's _schemaURL points into.
    schema = bridge("lineage", "facets-schema", cwd=tmp_path)
    assert schema.returncode == 0 and json.loads(schema.stdout) == FACETS_SCHEMA


# -- the API ------------------------------------------------------------------------------


class View:
    gateway_id = GATEWAY

    def tag_states(self) -> Sequence[TagState]:
        return [
            TagState(f"{a}.{n}", a, n, src, None, "", Quality.GOOD, None, None, None, "")
            for a in ("a0", "a1", "a2")
            for n, src in (("temp", "plant"), ("pressure", "plc"))
        ]

    def latest_predictions(self) -> Sequence[Prediction]:
        return []

    def models(self) -> Sequence[ModelInfo]:
        return []

    def health(self) -> Sequence[ComponentHealth]:
        return [ComponentHealth("store", "ok")]

    def started_at(self) -> float:
        return time.time()


async def test_the_api_serves_lineage_pages(backend: Backend) -> None:
    facts = record(backend.store, "ab" * 32)
    _, key = ApiKeyRepository(backend.store).create("catalogue", Scope.READ)
    settings = ApiSettings(host=LOOPBACK, port=free_port(), max_history_days=1e5)
    app = create_app(ApiServices.from_store(View(), backend.store, settings))
    server = ApiServer(app, settings.host, settings.port)
    await server.start()
    try:
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=30) as client:
            one = await client.get("/api/v1/lineage", params={"prediction_id": facts.pending.id})
            assert one.status_code == 200, one.text
            (doc,) = one.json()
            assert doc["id"] == facts.pending.id and doc["mapping_revision"] == "ab" * 32
            # The running gateway's tags name their sources; its mapping is not the API's.
            assert doc["inputs"][0]["source"] == "plant"
            assert doc["inputs"][0]["namespace"] == "bridge://gw-lx/sources/plant"
            assert doc["outputs_known"] is False
            mes = delivery(doc, "mes")
            assert (mes["status"], mes["last_answer"]) == ("pending", PENDING_ANSWER)
            assert doc["operator_actions"]["feedback"][0]["by"] == "anna"
            assert "X-Next-Cursor" not in one.headers

            # A range, two at a time: the cursor leads to the rest.
            first = await client.get(
                "/api/v1/lineage", params={"since": T0, "limit": 2, "format": "openlineage"}
            )
            assert first.status_code == 200, first.text
            cursor = first.headers["X-Next-Cursor"]
            assert first.headers["Link"].endswith('rel="next"')
            rest = await client.get(
                "/api/v1/lineage",
                params={"since": T0, "limit": 2, "format": "openlineage", "cursor": cursor},
            )
            assert rest.status_code == 200 and "X-Next-Cursor" not in rest.headers
            events = first.json() + rest.json()
            assert [e["run"]["runId"] for e in events] == [
                facts.dead.id,
                facts.pending.id,
                facts.accepted.id,
            ]
            for event in events:
                check_event(event)
            dead = events[0]["outputs"][0]["outputFacets"]["bridge_delivery"]["deliveries"]
            assert [(d["output"], d["status"], d.get("lastAnswer")) for d in dead] == [
                ("mes", "dead_letter", DEAD_ANSWER),
                ("uns", "pending", None),
            ]

            unknown = await client.get(
                "/api/v1/lineage", params={"prediction_id": str(uuid.uuid4())}
            )
            assert unknown.status_code == 404
            bad = await client.get("/api/v1/lineage", params={"prediction_id": "nope"})
            assert bad.status_code == 422
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as stranger:
            assert (await stranger.get("/api/v1/lineage")).status_code == 401
    finally:
        await server.stop()
