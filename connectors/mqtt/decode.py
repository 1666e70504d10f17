"""Turns one MQTT message into tag samples: JSON with a JSON pointer per tag, a plain number,
or a Sparkplug B metric by name.

A payload that cannot be read at all raises ``PayloadError`` (the source marks every tag of
the topic Bad); a value missing from a readable payload makes only its own tag Bad.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.connectors.mqtt.config import MqttAddress
from bridge.types import Quality, TagSample, TagValue

if TYPE_CHECKING:
    # The codec (and protobuf) load only for Sparkplug payloads.
    from bridge.connectors.mqtt.sparkplug.codec import AliasTable, ParsedPayload

__all__ = [
    "Binding",
    "PayloadError",
    "decode",
    "parse_sparkplug",
    "resolve_pointer",
    "sparkplug_aliases",
    "sparkplug_samples",
    "sparkplug_topics",
]

# Epoch numbers above this are milliseconds (year 2286 in seconds).
_MS_THRESHOLD = 1e10
_QUALITY_WORDS = {"good": Quality.GOOD, "uncertain": Quality.UNCERTAIN, "bad": Quality.BAD}
_MISSING = object()


class PayloadError(ValueError):
    """The payload as a whole is unreadable (not JSON, not a number, not Sparkplug B)."""


@dataclass(frozen=True, slots=True)
class Binding:
    """One tag fed by a topic."""

    tag: str
    address: MqttAddress


def resolve_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901: ``""`` is the whole document; returns ``_MISSING`` when a step is absent."""
    if not pointer:
        return document
    node = document
    for raw in pointer[1:].split("/"):
        step = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            if step not in node:
                return _MISSING
            node = node[step]
        elif isinstance(node, list):
            if not step.isdigit() or int(step) >= len(node):
                return _MISSING
            node = node[int(step)]
        else:
            return _MISSING
    return node


def _value(raw: Any) -> tuple[TagValue, str]:
    """A JSON value as a tag value, or ("", why not)."""
    if isinstance(raw, bool | int | str):
        return raw, ""
    if isinstance(raw, float):
        return (raw, "") if math.isfinite(raw) else (None, f"not a finite number ({raw})")
    if raw is None:
        return None, "null"
    return None, "an object or array, not a value (point at a field inside it)"


def _epoch(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float) and math.isfinite(raw) and raw > 0:
        return raw / 1000.0 if raw > _MS_THRESHOLD else float(raw)
    if isinstance(raw, str):
        try:
            stamp = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        return stamp.timestamp()
    return None


def _quality(raw: Any) -> Quality | None:
    if isinstance(raw, bool):
        return Quality.GOOD if raw else Quality.BAD
    if isinstance(raw, str):
        return _QUALITY_WORDS.get(raw.strip().lower())
    if isinstance(raw, int):
        # OPC UA StatusCode: the top two bits are the severity (00 Good, 01 Uncertain, 10 Bad).
        severity = (raw >> 30) & 0x3
        return (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD)[severity]
    return None


def _bad(tag: str, received: float, reason: str) -> TagSample:
    return TagSample(tag, None, Quality.BAD, received, reason=reason)


def _from_json(document: Any, binding: Binding, received: float) -> TagSample:
    address = binding.address
    raw = resolve_pointer(document, address.pointer)
    if raw is _MISSING:
        return _bad(binding.tag, received, f"no {address.pointer} in the payload")
    value, why = _value(raw)
    if why:
        return _bad(binding.tag, received, f"{address.pointer or 'the payload'} is {why}")
    source_time: float | None = None
    if address.time_pointer:
        stamp = resolve_pointer(document, address.time_pointer)
        source_time = None if stamp is _MISSING else _epoch(stamp)
        if source_time is None:
            return _bad(
                binding.tag,
                received,
                f"{address.time_pointer} is missing or not a time (epoch s/ms or ISO 8601)",
            )
    quality = Quality.GOOD
    reason = ""
    if address.quality_pointer:
        mark = resolve_pointer(document, address.quality_pointer)
        found = None if mark is _MISSING else _quality(mark)
        if found is None:
            return _bad(
                binding.tag,
                received,
                f"{address.quality_pointer} is missing or not a quality "
                "(Good/Uncertain/Bad, true/false or a status code)",
            )
        quality = found
        if quality is not Quality.GOOD:
            reason = f"the device reports {quality.label} ({mark})"
    return TagSample(binding.tag, value, quality, received, source_time=source_time, reason=reason)


def _number(payload: bytes) -> float | int:
    text = payload.decode("utf-8", errors="strict").strip()
    try:
        return int(text)
    except ValueError:
        number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is not finite")
    return number


def parse_sparkplug(payload: bytes, aliases: AliasTable | None = None) -> ParsedPayload:
    """A Sparkplug B payload, alias-only DATA metrics named through ``aliases`` (from the
    birth); ``PayloadError`` if it is not one."""
    from bridge.connectors.mqtt.sparkplug.codec import SparkplugError, parse

    try:
        return parse(payload, aliases)
    except SparkplugError as exc:
        raise PayloadError(str(exc)) from exc


def sparkplug_aliases(birth: ParsedPayload) -> AliasTable:
    """alias -> (name, datatype) of a birth, for the DATA that follow it."""
    from bridge.connectors.mqtt.sparkplug.codec import aliases_of

    return aliases_of(birth)


def sparkplug_samples(
    parsed: ParsedPayload, bindings: Sequence[Binding], received: float
) -> list[TagSample]:
    """The samples of the bound metrics a payload carries (DATA carries only the metrics that
    changed: the others are not in it)."""
    by_name = parsed.by_name()
    samples: list[TagSample] = []
    for binding in bindings:
        metric = by_name.get(binding.address.metric or "")
        if metric is None:
            continue
        stamp_ms = metric.timestamp or parsed.timestamp
        source_time = stamp_ms / 1000.0 if stamp_ms else None
        value = metric.value
        reason = ""
        if metric.is_null:
            reason = "null"
        elif isinstance(value, float) and not math.isfinite(value):
            reason = f"not a finite number ({value})"
        elif not isinstance(value, bool | int | float | str):
            reason = f"a metric of Sparkplug datatype {metric.datatype} (not a scalar)"
        if reason:
            samples.append(
                TagSample(binding.tag, None, Quality.BAD, received, source_time, None, reason)
            )
        else:
            assert isinstance(value, bool | int | float | str)
            samples.append(TagSample(binding.tag, value, Quality.GOOD, received, source_time))
    return samples


def decode(
    payload: bytes,
    bindings: Sequence[Binding],
    received: float,
    aliases: AliasTable | None = None,
) -> list[TagSample]:
    """The samples of every tag bound to the message's topic (all of one format); ``aliases``
    name the metrics of a Sparkplug DATA message."""
    kind = bindings[0].address.format
    if kind == "sparkplug":
        return sparkplug_samples(parse_sparkplug(payload, aliases), bindings, received)
    if kind == "number":
        try:
            number = _number(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PayloadError(f"not a number ({payload[:40]!r})") from exc
        return [TagSample(b.tag, number, Quality.GOOD, received) for b in bindings]
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"not JSON ({exc}; starts {payload[:40]!r})") from exc
    return [_from_json(document, binding, received) for binding in bindings]


def sparkplug_topics(data_topic: str) -> tuple[str, tuple[str, ...]]:
    """The birth topic and the death topics of a Sparkplug DATA topic: a device's values
    are named by its DBIRTH and end with its DDEATH or its edge node's NDEATH."""
    parts = data_topic.split("/")
    node = "/".join(parts[:2])
    if parts[2] == "NDATA":
        return f"{node}/NBIRTH/{parts[3]}", (f"{node}/NDEATH/{parts[3]}",)
    device = f"{parts[3]}/{parts[4]}"
    return f"{node}/DBIRTH/{device}", (f"{node}/DDEATH/{device}", f"{node}/NDEATH/{parts[3]}")
