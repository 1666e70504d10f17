"""The lineage document and its OpenLineage event without a store: numbers that JSON cannot
hold, peer addresses without credentials, and what is said when the outputs are not known."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import jsonschema_rs
import pytest

from bridge.lineage import LineageContext, OutputRef, build_decision
from bridge.lineage.context import endpoint_origin
from bridge.lineage.runevents import FACETS_SCHEMA, event_dict, run_event, to_json_line
from bridge.store.decisions import QueuedEvent, StoredDecision
from bridge.types import Contribution, Explanation, InputSnapshot, Prediction, Quality

PID = "0b7e2f5c-0d7e-5b6e-9c1a-3f2d4e5a6b7c"


def _refuse(token: str) -> float:
    raise AssertionError(f"not strict JSON: {token}")


def strict(text: str) -> object:
    """``json.loads`` that refuses NaN and the infinities (Python's own parser takes them)."""
    return json.loads(text, parse_constant=_refuse)


def stored(value: float, queued: tuple[QueuedEvent, ...] = ()) -> StoredDecision:
    p = Prediction(
        id=PID,
        seq=7,
        asset="a0",
        model="m",
        version="1",
        sha256="ab" * 32,
        value=value,
        score=math.nan,
        quality=Quality.UNCERTAIN,
        timestamp=1714564800.25,
        input_age_s=math.inf,
        inputs=(
            InputSnapshot("a0.t", math.nan, Quality.BAD, None),
            InputSnapshot("a0.u", -math.inf, Quality.GOOD, 1714564800.0),
        ),
        reason="stale input",
        explanation=Explanation("t high", (Contribution("t.mean", math.inf, 1.0, math.nan),)),
    )
    return StoredDecision(p, None, queued, (), (), ())


def test_numbers_json_cannot_hold_are_kept_readable_and_strict() -> None:
    doc = build_decision(stored(math.inf), LineageContext("gw"))
    assert [i.value for i in doc.inputs] == ["NaN", "-Infinity"]
    assert (doc.output.value, doc.output.score, doc.output.input_age_s) == ("Infinity", None, None)
    assert doc.explanation is not None and doc.explanation.top[0].value is None
    strict(doc.model_dump_json())
    line = to_json_line(run_event(doc))
    event = strict(line)
    assert isinstance(event, dict)
    reading = event["inputs"][0]["inputFacets"]["bridge_tagReading"]
    assert reading == {
        "_producer": reading["_producer"],
        "_schemaURL": reading["_schemaURL"],
        "quality": "Bad",
        "value": "NaN",
    }


def test_unknown_outputs_are_said_and_outbox_rows_still_listed() -> None:
    row = QueuedEvent("mes", PID, 1714564801.0, 0, 2, "timeout after 5 s", 1714564900.0, 1.0)
    doc = build_decision(stored(1.5, (row,)), LineageContext("gw", revision="ff" * 32))
    assert doc.outputs_known is False
    (mes,) = doc.deliveries
    assert (mes.output, mes.status, mes.retries, mes.last_answer) == (
        "mes",
        "pending",
        2,
        "timeout after 5 s",
    )
    assert mes.kind is None and mes.durable is True
    event = event_dict(run_event(doc))
    facet = event["outputs"][0]["outputFacets"]["bridge_delivery"]
    jsonschema_rs.validator_for(FACETS_SCHEMA["$defs"]["DeliveryOutputFacet"]).validate(facet)
    assert facet["outputsKnown"] is False and "not known" in facet["notes"][0]


def test_known_outputs_without_a_row_are_listed_with_what_that_means() -> None:
    ctx = LineageContext(
        "gw",
        revision="ee" * 32,
        outputs=(
            OutputRef("hmi", "opcua-server", False, None),
            OutputRef("mes", "mes-rest", True, "https://mes:8443"),
        ),
    )
    base = stored(1.5)
    doc = build_decision(StoredDecision(base.prediction, "ee" * 32, (), (), (), ()), ctx)
    hmi, mes = doc.deliveries
    assert (hmi.status, hmi.channel, hmi.idempotency_key) == ("not_recorded", "opcua", None)
    assert (mes.status, mes.channel, mes.idempotency_key) == ("no_outbox_row", "mes", PID)
    assert "does not tell which" in mes.note


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://ops:secret@mes.plant:8081/api/v1/x?token=abc", "http://mes.plant:8081"),
        ("HTTPS://mes.plant/hook/T0K3N", "https://mes.plant"),
        ("opc.tcp://[fe80::1]:4840", "opc.tcp://[fe80::1]:4840"),
        ("not a url", None),
        ("http://host:99999/", None),
    ],
)
def test_endpoints_keep_the_peer_and_drop_credentials(url: str, origin: str | None) -> None:
    assert endpoint_origin(url) == origin


def test_a_source_without_an_address_is_named_by_the_gateway() -> None:
    rtu = SimpleNamespace(host=None, serial=SimpleNamespace(port="/dev/ttyUSB0"))
    mapping = SimpleNamespace(
        revision="aa" * 32,
        gateway=SimpleNamespace(id="gw"),
        sources={
            "line": SimpleNamespace(kind="modbus", settings=rtu),
            "broker": SimpleNamespace(kind="mqtt", settings=SimpleNamespace(host="b", port=8883)),
        },
        tags={
            "a0.t": SimpleNamespace(id="a0.t", source="line"),
            "a0.v": SimpleNamespace(id="a0.v", source="broker"),
        },
        outputs={},
    )
    ctx = LineageContext.from_mapping(mapping)  # type: ignore[arg-type]
    assert ctx.tag_sources["a0.t"].namespace == "bridge://gw/sources/line"
    assert ctx.tag_sources["a0.v"].namespace == "mqtt://b:8883"
