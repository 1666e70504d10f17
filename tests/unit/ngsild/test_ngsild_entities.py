"""The entities the NGSI-LD destination encodes: ids, types, Properties and Relationships as
ETSI GS CIM 009 writes them, valid against the upsert request schema and expanding with our
@context and the core context to the IRIs we define (tests/ngsild_checks.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pytest
from ngsild_checks import CORE, OUR_CONTEXT_URL, OURS, check_request, expand, schema_errors
from pydantic import ValidationError

from bridge.connectors.ngsild import NgsiLdDestination, NgsiLdSettings
from bridge.connectors.ngsild.entity import iso_time
from bridge.connectors.ngsild.names import (
    RESERVED,
    entity_urn,
    is_name,
    model_property,
    tag_property,
    type_of_template,
)
from bridge.destination import DestinationContext
from bridge.types import AssetInfo, Prediction, PredictionSlot, Quality, TagReading, Trigger

T0 = 1714564800.25  # 2024-05-01T12:00:00.250Z
LEVELS = {"enterprise": "acme", "site": "dallas", "area": "packaging", "line": "line-4"}


def settings(**extra: Any) -> NgsiLdSettings:
    return NgsiLdSettings.model_validate({"url": "http://127.0.0.1:1026", **LEVELS, **extra})


def reading(asset: str, name: str, value: Any, unit: str | None = None, **kw: Any) -> TagReading:
    fields: dict[str, Any] = {
        "quality": Quality.GOOD,
        "source_time": T0 - 1.0,
        "received_time": T0 - 0.5,
    }
    fields.update(kw)
    return TagReading(f"{asset}.{name}", asset, name, value, unit, **fields)


def prediction(asset: str = "pump-01", model: str = "pump-health", **kw: Any) -> Prediction:
    fields: dict[str, Any] = {
        "id": f"{asset}-1",
        "seq": 1,
        "asset": asset,
        "model": model,
        "version": "1.0.0",
        "sha256": "ab" * 32,
        "value": "healthy",
        "score": 0.93,
        "quality": Quality.GOOD,
        "timestamp": T0,
        "input_age_s": 0.1,
    }
    fields.update(kw)
    return Prediction(**fields)


def destination(
    readings: Sequence[TagReading] = (),
    slots: Sequence[PredictionSlot] = (),
    templates: dict[str, str] | None = None,
    **extra: Any,
) -> NgsiLdDestination:
    context = DestinationContext(
        "gw",
        tuple(slots),
        tags=lambda since: list(readings),
        assets=tuple(AssetInfo(a, t, f"{a} of {t}") for a, t in (templates or {}).items()),
    )
    dest = NgsiLdDestination("twin", settings(**extra), context)
    dest._tags.refresh(0.0)  # what start() does on the event loop
    return dest


def encoded(dest: NgsiLdDestination, p: Prediction) -> dict[str, Any]:
    body = dest.encode(Trigger(p))
    assert body.startswith('{"id":"')  # deliver reads the id without parsing
    entity: dict[str, Any] = json.loads(body)
    return entity


# -- names -------------------------------------------------------------------------------


def test_ngsi_ld_names_follow_clause_4_6_2() -> None:
    assert is_name("Pump") and is_name("pump_2") and is_name("Pumpe_Ä1")
    assert not any(is_name(x) for x in ("", "2pump", "pump-2", "pump station", "_x", "a:b"))
    assert type_of_template("pump") == "Pump"
    assert type_of_template("pump-station_2") == "PumpStation2"
    assert model_property("pump-health") == "pumpHealthPrediction"
    assert model_property("Health") == "healthPrediction"
    assert tag_property("vibration") == "vibration"
    assert tag_property("status") == "tag_status" and tag_property("location") == "tag_location"


def test_ids_are_urns_with_percent_encoded_parts() -> None:
    assert entity_urn("Pump", "pump-01") == "urn:ngsi-ld:Pump:pump-01"
    line = entity_urn("Line", "acme", "Dallas Süd", "a:b", "line 4")
    assert line == "urn:ngsi-ld:Line:acme:Dallas%20S%C3%BCd:a%3Ab:line%204"
    assert not schema_errors([{"id": line, "type": "Line", "@context": OUR_CONTEXT_URL}])
    pump = entity_urn("Pumpe_Ä", "p-1")
    assert pump == "urn:ngsi-ld:Pumpe_%C3%84:p-1"
    assert not schema_errors([{"id": pump, "type": "Pumpe_Ä", "@context": OUR_CONTEXT_URL}])
    # Unencoded, the same id would be no URI.
    assert schema_errors([{"id": "urn:ngsi-ld:Pumpe_Ä:p-1", "type": "P", "@context": "http://x"}])


def test_the_core_context_terms_are_reserved_for_tags() -> None:
    # Every term of the core context the tests know is a name a tag cannot take as it is.
    from ngsild_checks import _DOCUMENTS

    from bridge.connectors.ngsild.config import CORE_CONTEXT

    terms = {k for k in _DOCUMENTS[CORE_CONTEXT]["@context"] if not k.startswith("@")}
    terms -= {"ngsi-ld", "Property", "Relationship", "DateTime"}  # types and the prefix
    assert terms <= RESERVED, terms - RESERVED


# -- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "where", "words"),
    [
        ({"default_type": "pump station"}, ("default_type",), "not an NGSI-LD entity type"),
        ({"asset_types": {"pump-03": "3Pump"}}, ("asset_types",), "pump-03: '3Pump' is not"),
        ({"template_types": {"pump": "Pump-X"}}, ("template_types",), "pump: 'Pump-X'"),
        ({"tenant": "plant one"}, ("tenant",), "cannot be a tenant"),
        ({"tags": ["Vibration"]}, ("tags",), "not a tag name"),
        ({"url": "orion:1026"}, ("url",), "absolute http"),
        ({"context_url": "context.json"}, ("context_url",), "absolute http"),
        ({"tls": {"ca_file": None}}, (), "https"),
        ({"line": "a/b"}, ("line",), "cannot be a topic level"),
    ],
)
def test_settings_refuse_what_cannot_be_made_valid(
    extra: dict[str, Any], where: tuple[str, ...], words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(**extra)
    (error,) = caught.value.errors()
    assert error["loc"][: len(where)] == where
    assert words in error["msg"]


def test_settings_defaults() -> None:
    s = settings(url="https://broker.plant:1026/")
    assert (
        s.upsert_url
        == "https://broker.plant:1026/ngsi-ld/v1/entityOperations/upsert?options=update"
    )
    assert (s.batch_size, s.context_url, s.tags, s.events) == (50, None, None, ["every"])


# -- entities ----------------------------------------------------------------------------


def test_an_asset_entity_carries_its_prediction_tags_and_line() -> None:
    readings = [
        reading("pump-01", "vibration", 2.5, "mm/s"),
        reading("pump-01", "bearing_temperature", 61.0, "degC", quality=Quality.UNCERTAIN),
        reading("pump-01", "running", True),
        reading("pump-01", "status", "run", source_time=None),
        reading("pump-01", "flow", math.nan, "m3/h"),  # no value to send
        reading("pump-01", "pressure", None, "bar", quality=Quality.BAD),
        reading("pump-02", "vibration", 9.9, "mm/s"),  # another asset's
    ]
    dest = destination(readings, templates={"pump-01": "pump"})
    entity = encoded(dest, prediction(drift_score=0.12))
    assert entity["id"] == "urn:ngsi-ld:Pump:pump-01" and entity["type"] == "Pump"
    assert entity["isPartOf"] == {
        "type": "Relationship",
        "object": "urn:ngsi-ld:Line:acme:dallas:packaging:line-4",
    }
    assert entity["pumpHealthPrediction"] == {
        "type": "Property",
        "value": "healthy",
        "observedAt": "2024-05-01T12:00:00.250Z",
        "modelVersion": {"type": "Property", "value": "1.0.0"},
        "quality": {"type": "Property", "value": "Good"},
        "score": {"type": "Property", "value": 0.93},
        "driftScore": {"type": "Property", "value": 0.12},
    }
    assert entity["vibration"] == {
        "type": "Property",
        "value": 2.5,
        "observedAt": iso_time(T0 - 1.0),
        "unitCode": "C16",
        "quality": {"type": "Property", "value": "Good"},
    }
    assert entity["bearing_temperature"]["unitCode"] == "CEL"
    assert entity["bearing_temperature"]["quality"]["value"] == "Uncertain"
    assert entity["running"]["value"] is True and "unitCode" not in entity["running"]
    # Without a source time, when the gateway received it; a reserved name is prefixed.
    assert entity["tag_status"]["observedAt"] == iso_time(T0 - 0.5)
    assert set(entity) == {
        "id", "type", "isPartOf", "pumpHealthPrediction", "vibration", "bearing_temperature",
        "running", "tag_status", "@context",
    }  # fmt: skip
    check_request([entity])


def test_a_regressor_value_has_its_unit_code_and_a_valueless_prediction_is_not_sent() -> None:
    slots = [PredictionSlot("oven", "heat", "1", "a" * 64, unit="degC")]
    dest = destination(slots=slots)
    entity = encoded(dest, prediction("oven", "heat", value=181.5, score=None))
    prop = entity["heatPrediction"]
    assert (prop["value"], prop["unitCode"]) == (181.5, "CEL")
    assert "score" not in prop
    for value in (None, math.inf):
        bad = encoded(dest, prediction("oven", "heat", value=value, quality=Quality.BAD))
        assert "heatPrediction" not in bad and bad["id"] == "urn:ngsi-ld:Asset:oven"
        check_request([bad])
    historical = encoded(dest, prediction("oven", "heat", value=1.0, historical=True))
    assert historical["heatPrediction"]["historical"] == {"type": "Property", "value": True}


def test_entity_types_from_templates_and_overrides() -> None:
    templates = {"pump-01": "pump", "pump-02": "pump", "st-1": "pump-station", "m": "mixer"}
    dest = destination(
        templates=templates,
        template_types={"mixer": "Agitator"},
        asset_types={"pump-02": "BoosterPump"},
        default_type="Machine",
    )
    types = {a: encoded(dest, prediction(a))["type"] for a in (*templates, "loose")}
    assert types == {
        "pump-01": "Pump",
        "pump-02": "BoosterPump",
        "st-1": "PumpStation",
        "m": "Agitator",
        "loose": "Machine",
    }
    assert encoded(dest, prediction("st-1"))["id"] == "urn:ngsi-ld:PumpStation:st-1"


async def test_a_reload_that_changes_a_template_changes_the_type() -> None:
    dest = destination(
        templates={"pump-01": "pump", "pump-02": "pump"}, asset_types={"pump-02": "BoosterPump"}
    )
    assert encoded(dest, prediction("pump-01"))["id"] == "urn:ngsi-ld:Pump:pump-01"
    moved = (AssetInfo("pump-01", "dosing-pump"), AssetInfo("pump-02", "mixer"))
    await dest.follow_context(DestinationContext("gw", assets=moved))
    assert encoded(dest, prediction("pump-01"))["id"] == "urn:ngsi-ld:DosingPump:pump-01"
    assert encoded(dest, prediction("pump-02"))["type"] == "BoosterPump"  # still the override
    # A context that names no assets (a tool's) leaves the templates as they are.
    await dest.follow_context(DestinationContext("gw"))
    assert encoded(dest, prediction("pump-01"))["type"] == "DosingPump"


def test_an_asset_without_a_template_gets_the_default_type() -> None:
    context = DestinationContext(
        "gw", assets=(AssetInfo("pump-01", "pump"), AssetInfo("loose", "", "a loose asset"))
    )
    dest = NgsiLdDestination("twin", settings(default_type="Machine"), context)
    assert encoded(dest, prediction("loose"))["type"] == "Machine"
    assert encoded(dest, prediction("pump-01"))["type"] == "Pump"


def test_only_the_chosen_tags_are_properties() -> None:
    readings = [reading("p", "vibration", 1.0, "mm/s"), reading("p", "speed", 1450, "rpm")]
    entity = encoded(destination(readings, tags=["speed", "absent"]), prediction("p"))
    assert entity["speed"]["unitCode"] == "RPM" and "vibration" not in entity
    only_predictions = encoded(destination(readings, tags=[]), prediction("p"))
    assert "speed" not in only_predictions and "pumpHealthPrediction" in only_predictions


def test_the_levels_are_entities_each_part_of_the_one_above() -> None:
    dest = destination(asset_levels={"pump-02": {"line": "line 5"}})
    levels = dest._shaper.level_entities("pump-02")
    assert [(e["id"], e["type"], e["levelName"]["value"], e.get("isPartOf")) for e in levels] == [
        ("urn:ngsi-ld:Enterprise:acme", "Enterprise", "acme", None),
        (
            "urn:ngsi-ld:Site:acme:dallas",
            "Site",
            "dallas",
            {"type": "Relationship", "object": "urn:ngsi-ld:Enterprise:acme"},
        ),
        (
            "urn:ngsi-ld:Area:acme:dallas:packaging",
            "Area",
            "packaging",
            {"type": "Relationship", "object": "urn:ngsi-ld:Site:acme:dallas"},
        ),
        (
            "urn:ngsi-ld:Line:acme:dallas:packaging:line%205",
            "Line",
            "line 5",
            {"type": "Relationship", "object": "urn:ngsi-ld:Area:acme:dallas:packaging"},
        ),
    ]
    check_request(levels)


@pytest.mark.parametrize("context_url", [None, OUR_CONTEXT_URL])
def test_entities_expand_to_the_iris_we_define(context_url: str | None) -> None:
    readings = [reading("pump-01", "vibration", 2.5, "mm/s")]
    dest = destination(readings, templates={"pump-01": "pump"}, context_url=context_url)
    entity = encoded(dest, prediction())
    if context_url is None:
        assert isinstance(entity["@context"][0], dict)  # our terms inline
    else:
        assert entity["@context"][0] == context_url
    assert (
        entity["@context"][1] == "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
    )
    node = expand(entity)
    assert node["@id"] == "urn:ngsi-ld:Pump:pump-01"
    assert node["@type"] == [OURS + "Pump"]
    (line,) = node[OURS + "isPartOf"]
    assert line["@type"] == [CORE + "Relationship"]
    assert line[CORE + "hasObject"] == [{"@id": "urn:ngsi-ld:Line:acme:dallas:packaging:line-4"}]
    (pred,) = node[OURS + "pumpHealthPrediction"]
    assert pred["@type"] == [CORE + "Property"]
    assert pred[CORE + "hasValue"] == [{"@value": "healthy"}]
    assert pred[CORE + "observedAt"] == [
        {"@type": CORE + "DateTime", "@value": "2024-05-01T12:00:00.250Z"}
    ]
    for term in ("modelVersion", "quality", "score"):
        (sub,) = pred[OURS + term]
        assert sub["@type"] == [CORE + "Property"]
    (vib,) = node[OURS + "vibration"]
    assert vib[CORE + "unitCode"] == [{"@value": "C16"}]
    levels = [expand(e) for e in dest._shaper.level_entities("pump-01")]
    assert [n["@type"] for n in levels] == [
        [OURS + "Enterprise"], [OURS + "Site"], [OURS + "Area"], [OURS + "Line"]
    ]  # fmt: skip
    assert all(OURS + "levelName" in n for n in levels)
