"""The Ditto destination's messages, without a network: every message is a valid Ditto Protocol
envelope (tests/ditto/*.json), and applied to a twin store in order they leave the thing the
mapping and the events describe: modify replaces a feature's properties, merge keeps what other
sources wrote."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from dittotwin import DittoError, TwinStore, envelope_errors, merge_patch, schema_errors
from pydantic import ValidationError

from bridge.connectors.ditto.config import DittoSettings
from bridge.connectors.ditto.http import request_of
from bridge.connectors.ditto.protocol import command, event_body, parse_body, thing_json
from bridge.types import (
    AssetInfo,
    Contribution,
    Explanation,
    Prediction,
    PredictionSlot,
    Quality,
    TagReading,
    Trigger,
)

GATEWAY = "gw-ditto"
T0 = 1714564800.0
SLOTS = (
    PredictionSlot(
        "pump-01",
        "pump-health",
        "1.2.0",
        "ab" * 32,
        labels=("healthy", "cavitation"),
        input_units=(("bearing_temperature", "degC"), ("flow", "m3/h")),
    ),
)


def settings(**extra: Any) -> DittoSettings:
    fields: dict[str, Any] = {
        "namespace": "com.acme.dallas",
        "policy_id": "com.acme.dallas:bridge",
        "enterprise": "acme",
        "site": "dallas",
        "area": "packaging",
        "line": "line-4",
        "asset_levels": {"pump-02": {"line": "line-5"}},
        "http": {"url": "http://ditto.local:8080"},
        "things": {"pump-01": {"template": "pump", "description": "Feed pump 1"}},
        "telemetry": {"tags": ["bearing_temperature", "flow"]},
    }
    fields.update(extra)
    return DittoSettings.model_validate(fields)


def prediction(
    seq: int,
    label: str = "healthy",
    *,
    asset: str = "pump-01",
    explanation: Explanation | None = None,
    historical: bool = False,
    value: str | float | None = None,
) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/pump-health/{seq}")),
        seq=seq,
        asset=asset,
        model="pump-health",
        version="1.2.0",
        sha256="ab" * 32,
        value=label if value is None else value,
        score=0.93,
        quality=Quality.GOOD,
        timestamp=T0 + seq,
        input_age_s=0.1,
        explanation=explanation,
        historical=historical,
    )


def reading(name: str, value: float | None, quality: Quality = Quality.GOOD) -> TagReading:
    unit = {"bearing_temperature": "degC", "flow": "m3/h"}.get(name)
    return TagReading(f"pump-01.{name}", "pump-01", name, value, unit, quality, T0, T0 + 0.5)


def messages(s: DittoSettings, event: Trigger, readings: tuple[TagReading, ...] = ()) -> list[Any]:
    return parse_body(event_body(s, event, readings)).commands


def create(s: DittoSettings, asset: str = "pump-01") -> dict[str, Any]:
    thing = thing_json(s, asset, GATEWAY, SLOTS, ("pump-health",))
    return command(s.namespace, s.thing_name(asset), "modify", "/", thing, "create-1")


EXPLAINED = Explanation(
    "bearing temperature +18 degC above normal",
    (Contribution("bearing_temperature.mean", 81.0, 63.0, 0.4),),
)


def test_every_message_is_a_valid_ditto_protocol_envelope() -> None:
    s = settings()
    events = [
        Trigger(prediction(1)),
        Trigger(prediction(2, "cavitation", explanation=EXPLAINED), "alert", previous="healthy"),
        Trigger(prediction(3, value=3.5), "threshold", crossing="enter", limit=3.0, field="value"),
        Trigger(prediction(4), "drift", drift={"score": 0.4, "threshold": 0.2, "raised_at": T0}),
    ]
    readings = (reading("bearing_temperature", 81.5), reading("flow", None, Quality.BAD))
    found = [create(s)]
    for event in events:
        found += messages(s, event, readings)
    assert len(found) == 1 + 3 + 3 + 3 + 1
    for message in found:
        assert envelope_errors(message) == [], message
        assert message["headers"]["correlation-id"]
    assert schema_errors("thing", found[0]["value"]) == []
    topics = {m["topic"] for m in found}
    assert topics == {
        "com.acme.dallas/pump-01/things/twin/commands/modify",
        "com.acme.dallas/pump-01/things/twin/commands/merge",
    }
    # Each event's commands carry its Idempotency-Key (the prediction id) as correlation-id.
    for event in events:
        ids = {m["headers"]["correlation-id"] for m in messages(s, event, readings)}
        assert ids == {event.prediction.id}


def test_the_schemas_refuse_what_ditto_refuses() -> None:
    # The checks above mean something only if the schemas catch broken envelopes.
    good = messages(settings(), Trigger(prediction(1)))[-1]
    assert envelope_errors(good) == []
    broken: list[dict[str, Any]] = [
        {k: v for k, v in good.items() if k != "path"},
        {**good, "headers": {"content-type": "application/json"}},  # no correlation-id
        {**good, "topic": "com.acme/pump-01/things/twin/commands"},  # no action
        {**good, "topic": "com.acme/pump/01/things/twin/commands/modify"},  # slash in name
        {**good, "topic": "9acme/pump-01/things/twin/commands/modify"},  # bad namespace
        {**good, "topic": "com.acme/pump-01/things/cloud/commands/modify"},  # no such channel
        {**good, "path": "features/prediction"},  # not a pointer
        {**good, "topic": good["topic"].replace("modify", "merge")},  # merge as application/json
    ]
    for message in broken:
        assert envelope_errors(message), message
    assert schema_errors("thing", {"thingId": "no-namespace-separator"})
    assert schema_errors("thing", {"thingId": "a:b", "features": {"x": {"props": {}}}})


def test_the_thing_carries_the_assets_static_context() -> None:
    s = settings(
        things={
            "pump-01": {
                "template": "pump",
                "description": "Feed pump 1",
                "attributes": {"serial": "P-1234"},
            }
        }
    )
    store = TwinStore()
    assert store.apply(create(s)) == 201
    thing = store.thing("com.acme.dallas:pump-01")
    assert thing["policyId"] == "com.acme.dallas:bridge"
    assert thing["attributes"] == {
        "enterprise": "acme",
        "site": "dallas",
        "area": "packaging",
        "line": "line-4",
        "asset": "pump-01",
        "gateway": GATEWAY,
        "template": "pump",
        "description": "Feed pump 1",
        "tags": {"bearing_temperature": {"unit": "degC"}, "flow": {"unit": "m3/h"}},
        "serial": "P-1234",
    }
    assert set(thing["features"]) == {"prediction", "model", "telemetry"}
    # Another asset: its own ISA-95 override, no context given, no units known.
    other = thing_json(s, "pump-02", GATEWAY, SLOTS, ("pump-health",))
    assert other["attributes"]["line"] == "line-5"
    assert "template" not in other["attributes"] and "tags" not in other["attributes"]


def test_template_and_description_come_from_the_mapping_unless_things_says() -> None:
    info = AssetInfo("pump-01", "pump", "Feed pump 1")
    bare = settings(things={})
    attributes = thing_json(bare, "pump-01", GATEWAY, SLOTS, (), info)["attributes"]
    assert (attributes["template"], attributes["description"]) == ("pump", "Feed pump 1")
    assert schema_errors("thing", thing_json(bare, "pump-01", GATEWAY, SLOTS, (), info)) == []
    # `things:` overrides either; a key it leaves out is the mapping's.
    over = settings(things={"pump-01": {"description": "Feed pump 1 (spare)"}})
    attributes = thing_json(over, "pump-01", GATEWAY, SLOTS, (), info)["attributes"]
    assert (attributes["template"], attributes["description"]) == ("pump", "Feed pump 1 (spare)")
    over = settings(things={"pump-01": {"template": "booster"}})
    attributes = thing_json(over, "pump-01", GATEWAY, SLOTS, (), info)["attributes"]
    assert (attributes["template"], attributes["description"]) == ("booster", "Feed pump 1")
    # An asset without a template or description has neither attribute.
    plain = thing_json(bare, "pump-02", GATEWAY, SLOTS, (), AssetInfo("pump-02"))["attributes"]
    assert "template" not in plain and "description" not in plain


def test_modify_replaces_a_prediction_and_merge_keeps_other_sources_telemetry() -> None:
    s = settings()
    store = TwinStore()
    store.apply(create(s))
    thing_id = "com.acme.dallas:pump-01"
    alert = Trigger(prediction(1, "cavitation", explanation=EXPLAINED), "alert", previous="healthy")
    for message in messages(s, alert, (reading("bearing_temperature", 81.5),)):
        store.apply(message)
    # Another source (a maintenance app) writes into the same telemetry feature.
    store.apply(
        {
            "topic": "com.acme.dallas/pump-01/things/twin/commands/merge",
            "headers": {"correlation-id": "other", "content-type": "application/merge-patch+json"},
            "path": "/features/telemetry/properties",
            "value": {"vibration": {"value": 2.1, "unit": "mm/s"}},
        }
    )
    later = Trigger(prediction(2, "healthy"))
    for message in messages(
        s, later, (reading("bearing_temperature", 64.0), reading("flow", 12.0))
    ):
        store.apply(message)
    features = store.thing(thing_id)["features"]
    # modify: the new prediction as a whole; the alert's reason and previous label are gone.
    assert features["prediction"]["properties"] == {
        "label": "healthy",
        "score": 0.93,
        "quality": "Good",
        "time": "2024-05-01T12:00:02.000Z",
        "event": "prediction",
        "prediction_id": later.prediction.id,
    }
    assert features["model"]["properties"] == {
        "name": "pump-health",
        "version": "1.2.0",
        "sha256": "ab" * 32,
    }
    # merge: this gateway's tags updated, the other source's vibration kept.
    telemetry = features["telemetry"]["properties"]
    assert telemetry["bearing_temperature"] == {
        "value": 64.0,
        "unit": "degC",
        "quality": "Good",
        "time": "2024-05-01T12:00:00.000Z",
    }
    assert telemetry["flow"]["value"] == 12.0
    assert telemetry["vibration"] == {"value": 2.1, "unit": "mm/s"}
    # The alert's state was there before it was replaced.
    alert_message = messages(s, alert)[-1]
    assert alert_message["value"]["reason"] == EXPLAINED.reason
    assert alert_message["value"]["previous"] == "healthy"


def test_a_tag_without_a_value_keeps_its_quality_in_the_twin() -> None:
    s = settings()
    store = TwinStore()
    store.apply(create(s))
    for r in (reading("flow", 12.0), reading("flow", None, Quality.BAD)):
        for message in messages(s, Trigger(prediction(1)), (r,)):
            store.apply(message)
    flow = store.thing("com.acme.dallas:pump-01")["features"]["telemetry"]["properties"]["flow"]
    # A merge patch's null removes the value: what is left says why there is none.
    assert "value" not in flow and flow["quality"] == "Bad"


def test_a_historical_prediction_changes_no_twin_and_drift_has_its_own_feature() -> None:
    s = settings()
    assert messages(s, Trigger(prediction(1, historical=True))) == []
    store = TwinStore()
    store.apply(create(s))
    drift = Trigger(
        prediction(5), "drift", drift={"score": 0.41, "threshold": 0.25, "raised_at": T0}
    )
    for message in messages(s, drift):
        store.apply(message)
    props = store.thing("com.acme.dallas:pump-01")["features"]["drift"]["properties"]
    assert props["score"] == 0.41 and props["raised_at"] == "2024-05-01T12:00:00.000Z"
    assert props["event_id"] == drift.prediction.id
    assert store.thing("com.acme.dallas:pump-01")["features"]["prediction"]["properties"] == {}


def test_a_features_properties_need_the_feature_as_in_ditto() -> None:
    store = TwinStore()
    first = messages(settings(), Trigger(prediction(1)))[-1]
    with pytest.raises(DittoError) as missing_thing:
        store.apply(first)
    assert missing_thing.value.body["status"] == 404
    store.things["com.acme.dallas:pump-01"] = {"thingId": "com.acme.dallas:pump-01"}
    with pytest.raises(DittoError) as missing_feature:
        store.apply(first)
    assert missing_feature.value.body["error"] == "things:feature.notfound"


def test_feature_ids_per_model() -> None:
    s = settings(prediction_feature="prediction-{model}", model_feature="model-{model}")
    paths = [m["path"] for m in messages(s, Trigger(prediction(1)))]
    assert paths == [
        "/features/model-pump-health/properties",
        "/features/prediction-pump-health/properties",
    ]
    store = TwinStore()
    store.apply(create(s))
    for message in messages(s, Trigger(prediction(1))):
        store.apply(message)
    assert store.thing("com.acme.dallas:pump-01")["features"]["prediction-pump-health"]


def test_rfc7396_merge_patch_examples() -> None:
    # The twin store's merge is the RFC's: its appendix A test cases.
    cases = [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ]
    for target, patch, expected in cases:
        assert merge_patch(target, patch) == expected, (target, patch)


def test_each_command_becomes_the_http_request_of_the_same_meaning() -> None:
    s = settings()
    telemetry, model, pred = messages(s, Trigger(prediction(1)), (reading("flow", 1.0),))
    assert request_of(create(s))[:3] == (
        "PUT",
        "/api/2/things/com.acme.dallas:pump-01",
        "application/json",
    )
    assert request_of(telemetry)[:3] == (
        "PATCH",
        "/api/2/things/com.acme.dallas:pump-01/features/telemetry/properties",
        "application/merge-patch+json",
    )
    method, path, _, body = request_of(pred)
    assert (method, path) == (
        "PUT",
        "/api/2/things/com.acme.dallas:pump-01/features/prediction/properties",
    )
    assert json.loads(body) == pred["value"]
    assert request_of(model)[1].endswith("/features/model/properties")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"mqtt": {"host": "b", "plaintext": True}}, "exactly one transport"),
        ({"http": None}, "exactly one transport"),
        ({"namespace": "9acme"}, "Java package notation"),
        ({"namespace": "acme/x"}, "Java package notation"),
        ({"things": {"pump-01": {"name": "a/b"}}}, "cannot be a Ditto thing name"),
        ({"http": {"url": "ditto.local"}}, "absolute http"),
        (
            {"http": {"url": "http://d", "bearer_token": "t", "username": "u", "password": "p"}},
            "not both",
        ),
        ({"http": {"url": "http://d", "username": "u"}}, "both `username` and `password`"),
        ({"prediction_feature": "p-{asset}"}, "unknown placeholder"),
        ({"model_feature": "telemetry"}, "must differ"),
        (
            {"http": None, "mqtt": {"host": "b", "plaintext": True, "topic": "d/{thingId}"}},
            "unknown placeholder",
        ),
        ({"http": None, "mqtt": {"host": "b", "plaintext": True, "topic": "d/#"}}, "wildcard"),
    ],
)
def test_bad_settings_say_what_to_fix(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        settings(**change)
    assert fragment in str(err.value)


def test_mqtt_topic_placeholders() -> None:
    s = settings(
        http=None,
        mqtt={"host": "b", "plaintext": True, "topic": "{enterprise}/{line}/{namespace}/{thing}"},
        things={"pump-02": {"name": "P2"}},
    )
    from bridge.connectors.ditto.mqtt import MqttTransport

    transport = MqttTransport("twins", s, "outputs.twins.mqtt")
    assert transport.topic_of("pump-02") == "acme/line-5/com.acme.dallas/P2"
    assert s.thing_id("pump-02") == "com.acme.dallas:P2"


async def test_telemetry_takes_the_predictions_own_inputs_over_the_tag_table() -> None:
    from dataclasses import replace

    from bridge.connectors.ditto.destination import DittoDestination
    from bridge.destination import DestinationContext
    from bridge.types import InputSnapshot

    table = [reading("bearing_temperature", 70.0), reading("flow", 10.0)]
    context = DestinationContext(GATEWAY, SLOTS, tags=lambda since: table)
    destination = DittoDestination("twins", settings(), context)
    await destination.start()  # reads the tag table once at start
    try:
        # The prediction was made from a newer bearing temperature than the table showed.
        made = replace(
            prediction(1),
            inputs=(InputSnapshot("pump-01.bearing_temperature", 81.5, Quality.GOOD, T0 + 0.9),),
        )
        body = json.loads(destination.encode(Trigger(made)))
    finally:
        await destination.close()
    (telemetry,) = [c for c in body["commands"] if c["path"].endswith("telemetry/properties")]
    assert telemetry["value"] == {
        "bearing_temperature": {
            "value": 81.5,
            "unit": "degC",
            "quality": "Good",
            "time": "2024-05-01T12:00:00.900Z",
        },
        "flow": {
            "value": 10.0,
            "unit": "m3/h",
            "quality": "Good",
            "time": "2024-05-01T12:00:00.000Z",
        },
    }
