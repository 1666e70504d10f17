"""Attributes that arrive after a newer instance of them was upserted (backfilled predictions,
a backlog sent late): they belong to the entity's history, not to its current state.

The relay sends an asset's events in order of storage, but a prediction made for an outage gap
(``historical``) is stored after the live ones made since. Upserted as it is, it would replace
the entity's current value until the next live one. ``LateAttributes`` remembers the
``observedAt`` the destination last upserted per (entity, attribute); an attribute of an event
observed before it is taken out of the upsert and sent to the broker's temporal API instead
(ETSI GS CIM 009 "Add Attributes to Temporal Evolution of an Entity",
``POST /ngsi-ld/v1/temporal/entities/{id}/attrs``), or left
out when the destination is told not to use it. Pure bookkeeping: no I/O.

What was upserted is known from this process's deliveries only: after a restart, the first
late attribute of an entity is upserted like any other (the broker's current value may then be
older than it, or newer and replaced until the next live prediction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["LateAttributes", "Split", "temporal_body"]

# Members of an encoded entity that are not attributes.
_NOT_ATTRIBUTES = frozenset(("id", "type", "@context"))


@dataclass(frozen=True, slots=True)
class Split:
    """An encoded event as it goes out: ``current`` (the upsert's entity), ``late`` (attribute
    name -> the instance for the temporal API; empty when none), the ``observedAt`` of each
    attribute ``current`` carries, and the entity's ``@context``."""

    current: str
    late: dict[str, Any]
    observed: dict[str, str]
    context: Any = None


def _observed_at(attribute: Any) -> str | None:
    if isinstance(attribute, dict):
        when = attribute.get("observedAt")
        if isinstance(when, str):
            return when
    return None


class LateAttributes:
    def __init__(self) -> None:
        # (entity id, attribute) -> observedAt last taken by the broker. ISO 8601 in UTC with
        # milliseconds (entity.iso_time): comparing the strings compares the times.
        self._taken: dict[tuple[str, str], str] = {}

    def split(self, entity_id: str, body: str) -> Split:
        entity: dict[str, Any] = json.loads(body)
        late: dict[str, Any] = {}
        observed: dict[str, str] = {}
        for name, attribute in entity.items():
            if name in _NOT_ATTRIBUTES:
                continue
            when = _observed_at(attribute)
            if when is None:
                continue
            taken = self._taken.get((entity_id, name))
            if taken is not None and when < taken:
                late[name] = attribute
            else:
                observed[name] = when
        if not late:
            return Split(body, late, observed)
        current = {k: v for k, v in entity.items() if k not in late}
        text = json.dumps(current, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        return Split(text, late, observed, entity.get("@context"))

    def taken(self, entity_id: str, split: Split) -> None:
        """The broker took ``split.current``: its attributes' times are the ones to beat."""
        for name, when in split.observed.items():
            key = (entity_id, name)
            if when >= self._taken.get(key, ""):
                self._taken[key] = when


def temporal_body(split: Split) -> bytes:
    """The body of ``POST .../temporal/entities/{id}/attrs``: each late attribute as a list of
    one instance (an attribute's temporal representation), with the entity's @context."""
    fragment: dict[str, Any] = {name: [instance] for name, instance in split.late.items()}
    fragment["@context"] = split.context
    return json.dumps(fragment, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()
