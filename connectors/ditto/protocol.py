"""Ditto Protocol messages of a twin: the thing of an asset and the commands of one event. Pure.

A message is a Ditto Protocol envelope (https://eclipse.dev/ditto/protocol-specification.html):
``topic`` ``<namespace>/<thingName>/things/twin/commands/<action>``, ``path`` (a JSON pointer
into the thing), ``value`` and ``headers`` (``correlation-id``, ``content-type``). The MQTT
transport publishes them as they are; the HTTP transport turns each into the request of
Ditto's HTTP API that has the same meaning (``modify`` -> PUT, ``merge`` -> PATCH).

Which command each feature takes, and why:

- ``prediction``, ``model`` and ``drift``: ``modify`` (replace). Their properties describe one
  prediction (model, drift alert) as a whole: a property the previous one had and this one
  lacks (an explanation, a previous label) must not survive into the new state, which a merge
  would leave in place.
- ``telemetry``: ``merge`` (RFC 7396). Each event carries only the tags this destination
  chose; tags other sources write into the same feature stay.
- the thing itself: ``modify`` at ``/`` (create or replace) once per thing and gateway start,
  so attributes follow the mapping (an attribute removed from it disappears).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.types import AssetInfo, Prediction, PredictionSlot, TagReading, TagValue, Trigger

from .config import DittoSettings

__all__ = [
    "JSON",
    "MERGE_PATCH",
    "Action",
    "EventBody",
    "command",
    "event_body",
    "iso_utc",
    "parse_body",
    "thing_json",
    "thing_topic",
    "with_correlation",
]

Action = Literal["modify", "merge"]
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
TELEMETRY = "telemetry"
DRIFT = "drift"


def iso_utc(ts: float | None) -> str | None:
    """Epoch seconds -> ``2024-05-01T12:00:00.123Z``."""
    if ts is None or not math.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _json_value(value: TagValue) -> TagValue:
    return _finite(value) if isinstance(value, float) else value


def thing_topic(namespace: str, name: str, action: Action) -> str:
    return f"{namespace}/{name}/things/twin/commands/{action}"


def command(
    namespace: str, name: str, action: Action, path: str, value: Any, correlation_id: str
) -> dict[str, Any]:
    """One twin command. ``response-required: false``: the gateway learns the outcome from
    the transport (PUBACK, HTTP status); Ditto need not send a response to nobody."""
    return {
        "topic": thing_topic(namespace, name, action),
        "headers": {
            "correlation-id": correlation_id,
            "content-type": MERGE_PATCH if action == "merge" else JSON,
            "response-required": False,
        },
        "path": path,
        "value": value,
    }


def with_correlation(message: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The message with ``correlation-id`` = the event's Idempotency-Key."""
    return {**message, "headers": {**message["headers"], "correlation-id": key}}


def _units(asset: str, slots: Iterable[PredictionSlot]) -> dict[str, str]:
    units: dict[str, str] = {}
    for slot in slots:
        if slot.asset == asset:
            units.update((tag, unit) for tag, unit in slot.input_units if unit)
    return units


def thing_json(
    settings: DittoSettings,
    asset: str,
    gateway_id: str,
    slots: Sequence[PredictionSlot],
    models: Iterable[str] = (),
    info: AssetInfo | None = None,
) -> dict[str, Any]:
    """The thing of ``asset`` as created: id, policy, attributes (static context) and the
    features the events write, empty until they do. ``template`` and ``description`` are the
    mapping's (``info``) unless ``things.<asset>`` gives them."""
    thing = settings.things.get(asset)
    attributes: dict[str, Any] = {**settings.levels_of(asset), "asset": asset}
    attributes["gateway"] = gateway_id
    template = info.template if info is not None else ""
    description = info.description if info is not None else ""
    if thing is not None:
        template = thing.template if thing.template is not None else template
        description = thing.description or description
    if template:
        attributes["template"] = template
    if description:
        attributes["description"] = description
    units = _units(asset, slots)
    if units:
        attributes["tags"] = {tag: {"unit": unit} for tag, unit in sorted(units.items())}
    if thing is not None:
        attributes.update(thing.attributes)
    features: dict[str, Any] = {}
    for model in sorted(set(models) | {s.model for s in slots if s.asset == asset}):
        for template in (settings.prediction_feature, settings.model_feature):
            features[template.format(model=model)] = {"properties": {}}
    if settings.telemetry is not None:
        features[TELEMETRY] = {"properties": {}}
    body: dict[str, Any] = {"thingId": settings.thing_id(asset)}
    policy = settings.policy_of(asset)
    if policy is not None:
        body["policyId"] = policy
    body["attributes"] = attributes
    body["features"] = features
    return body


def _prediction_properties(event: Trigger) -> dict[str, Any]:
    p: Prediction = event.prediction
    props: dict[str, Any] = {}
    if isinstance(p.value, str):
        props["label"] = p.value
    else:
        props["value"] = _finite(p.value)
    props["score"] = _finite(p.score)
    if p.explanation is not None and p.explanation.reason:
        props["reason"] = p.explanation.reason
    props["quality"] = p.quality.label
    if p.reason:
        props["quality_reason"] = p.reason
    props["time"] = iso_utc(p.timestamp)
    props["event"] = event.event
    if event.previous is not None:
        props["previous"] = event.previous
    if event.crossing is not None:
        props["threshold"] = {
            "field": event.field,
            "limit": _finite(event.limit),
            "crossing": event.crossing,
        }
    props["prediction_id"] = p.id
    return props


def _telemetry(readings: Iterable[TagReading]) -> dict[str, Any]:
    # A tag without a value has "value": null, which a merge patch reads as "remove": the
    # property then holds the quality and time that say why there is none.
    return {
        r.name: {
            "value": _json_value(r.value),
            "unit": r.unit,
            "quality": r.quality.label,
            "time": iso_utc(r.source_time if r.source_time is not None else r.received_time),
        }
        for r in sorted(readings, key=lambda r: r.name)
    }


def _drift(event: Trigger) -> dict[str, Any]:
    drift = dict(event.drift or {})
    if "raised_at" in drift and isinstance(drift["raised_at"], int | float):
        drift["raised_at"] = iso_utc(float(drift["raised_at"]))
    drift["event_id"] = event.prediction.id
    drift["model"] = event.prediction.model
    return drift


def event_body(settings: DittoSettings, event: Trigger, readings: Iterable[TagReading] = ()) -> str:
    """The outbox body of one event: the asset and the twin commands it makes, in order.

    A backfilled (historical) prediction makes none: a twin holds the current state, and a
    value for a past time is not that."""
    p = event.prediction
    namespace, name = settings.namespace, settings.thing_name(p.asset)
    key = p.id

    def cmd(action: Action, path: str, value: Any) -> dict[str, Any]:
        return command(namespace, name, action, path, value, key)

    commands: list[dict[str, Any]] = []
    if event.event == "drift":
        # The whole feature: it exists only once a drift alert came (the thing is made without).
        commands.append(cmd("modify", f"/features/{DRIFT}", {"properties": _drift(event)}))
    elif not p.historical:
        telemetry = _telemetry(readings) if settings.telemetry is not None else {}
        if telemetry:
            commands.append(cmd("merge", f"/features/{TELEMETRY}/properties", telemetry))
        model = settings.model_feature.format(model=p.model)
        commands.append(
            cmd(
                "modify",
                f"/features/{model}/properties",
                {"name": p.model, "version": p.version, "sha256": p.sha256},
            )
        )
        feature = settings.prediction_feature.format(model=p.model)
        props = _prediction_properties(event)
        commands.append(cmd("modify", f"/features/{feature}/properties", props))
    body = {"asset": p.asset, "model": p.model, "commands": commands}
    return json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


class EventBody:
    """An outbox body read back: the asset, its model and the commands."""

    __slots__ = ("asset", "commands", "model")

    def __init__(self, asset: str, model: str, commands: list[dict[str, Any]]) -> None:
        self.asset = asset
        self.model = model
        self.commands = commands


def parse_body(body: str) -> EventBody:
    data = json.loads(body)
    return EventBody(str(data["asset"]), str(data.get("model", "")), list(data["commands"]))
