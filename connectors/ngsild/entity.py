"""The NGSI-LD entities this connector sends, as plain dicts (pure: no I/O, no clock).

One entity per asset, ``urn:ngsi-ld:<Type>:<asset>``, with

- ``isPartOf``: a Relationship to the asset's line;
- ``<model>Prediction``: a Property per model (``pump-health`` -> ``pumpHealthPrediction``):
  the label or value, ``observedAt`` the prediction's time, ``unitCode`` of a regressor's
  unit, and sub-properties ``modelVersion``, ``quality``, ``score``, ``driftScore``;
- one Property per published tag: its value, ``observedAt`` (the source's time, else when the
  gateway received it), ``unitCode`` and a ``quality`` sub-property.

The ISA-95 levels are entities too, each ``isPartOf`` the level above:
``urn:ngsi-ld:Enterprise:<e>``, ``urn:ngsi-ld:Site:<e>:<s>``, ``urn:ngsi-ld:Area:<e>:<s>:<a>``,
``urn:ngsi-ld:Line:<e>:<s>:<a>:<l>`` (a line's name is unique only inside its area), with the
level's name as ``levelName``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from bridge.isa95 import ISA95_LEVELS
from bridge.types import PredictionSlot, TagReading, TagValue, Trigger

from .config import NgsiLdSettings
from .names import entity_urn, model_property, tag_property, type_of_template
from .units import UnitCodes

__all__ = ["LEVEL_TYPES", "EntityShaper", "asset_of", "iso_time"]

LEVEL_TYPES = {"enterprise": "Enterprise", "site": "Site", "area": "Area", "line": "Line"}

Entity = dict[str, Any]


def iso_time(ts: float) -> str:
    """ISO 8601 in UTC with milliseconds, as NGSI-LD writes a DateTime (annex C.6)."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def asset_of(entity_id: str) -> str:
    """The asset of an asset entity's id (``urn:ngsi-ld:<Type>:<asset>``)."""
    return unquote(entity_id.split(":", 3)[3])


def _prop(value: Any) -> Entity:
    return {"type": "Property", "value": value}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _tag_value(value: TagValue) -> TagValue:
    """A value a Property can hold: None for none or a non-finite number (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class EntityShaper:
    """Builds the entities of one destination: its settings, the assets' templates and units."""

    def __init__(
        self,
        settings: NgsiLdSettings,
        context: list[Any],
        units: UnitCodes,
        templates: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self._context = context
        self._units = units
        self._templates = dict(templates or {})
        self._tags = None if settings.tags is None else frozenset(settings.tags)
        self._value_units: dict[tuple[str, str], str] = {}
        self._asset_ids: dict[str, str] = {}
        self._level_ids: dict[str, tuple[tuple[str, str, str], ...]] = {}

    def follow_slots(self, slots: Sequence[PredictionSlot]) -> None:
        self._value_units = {(s.asset, s.model): s.unit for s in slots if s.unit}

    def follow_context(self, context: list[Any]) -> None:
        """The ``@context`` of the entities encoded from now on."""
        self._context = context

    def follow_templates(self, templates: Mapping[str, str]) -> None:
        """The assets' templates after a mapping reload: their types (and ids) follow."""
        if dict(templates) != self._templates:
            self._templates = dict(templates)
            self._asset_ids.clear()

    # -- ids --------------------------------------------------------------------------------

    def entity_type(self, asset: str) -> str:
        s = self._settings
        found = s.asset_types.get(asset)
        if found is not None:
            return found
        template = self._templates.get(asset)
        if template is None:
            return s.default_type
        return s.template_types.get(template) or type_of_template(template)

    def asset_id(self, asset: str) -> str:
        found = self._asset_ids.get(asset)
        if found is None:
            found = self._asset_ids[asset] = entity_urn(self.entity_type(asset), asset)
        return found

    def level_ids(self, asset: str) -> tuple[tuple[str, str, str], ...]:
        """``(level, id, name)`` of the asset's levels, from the enterprise down."""
        found = self._level_ids.get(asset)
        if found is None:
            levels = self._settings.levels_of(asset)
            out: list[tuple[str, str, str]] = []
            path: list[str] = []
            for level in ISA95_LEVELS:
                path.append(levels[level])
                out.append((level, entity_urn(LEVEL_TYPES[level], *path), levels[level]))
            # Settings do not change while the destination lives: worked out once per asset.
            found = self._level_ids[asset] = tuple(out)
        return found

    # -- entities ---------------------------------------------------------------------------

    def asset_entity(self, event: Trigger, readings: Mapping[str, TagReading]) -> Entity:
        """The entity one event of an asset upserts; ``readings`` are the asset's tags by name."""
        p = event.prediction
        entity: Entity = {
            "id": self.asset_id(p.asset),
            "type": self.entity_type(p.asset),
            "isPartOf": {"type": "Relationship", "object": self.level_ids(p.asset)[-1][1]},
        }
        for name, reading in readings.items():
            if self._tags is not None and name not in self._tags:
                continue
            prop = self._tag_property(reading)
            if prop is not None:
                entity[tag_property(name)] = prop
        prediction = self._prediction_property(event)
        if prediction is not None:
            entity[model_property(p.model)] = prediction
        entity["@context"] = self._context
        return entity

    def level_entities(self, asset: str) -> list[Entity]:
        """The asset's enterprise, site, area and line, each ``isPartOf`` the one above."""
        out: list[Entity] = []
        parent: str | None = None
        for level, entity_id, name in self.level_ids(asset):
            entity: Entity = {"id": entity_id, "type": LEVEL_TYPES[level]}
            entity["levelName"] = _prop(name)
            if parent is not None:
                entity["isPartOf"] = {"type": "Relationship", "object": parent}
            entity["@context"] = self._context
            out.append(entity)
            parent = entity_id
        return out

    def _prediction_property(self, event: Trigger) -> Entity | None:
        p = event.prediction
        value = p.value
        if isinstance(value, float):
            value = _finite(value)
        if value is None:
            # A Property has a value or is not sent (no member admits null, GS CIM 009 clause
            # 5.2.1): a prediction made without trustworthy inputs leaves the last one in
            # place; the tags' quality says why.
            return None
        prop = _prop(value)
        prop["observedAt"] = iso_time(p.timestamp)
        if not isinstance(value, str):
            code = self._units.code(self._value_units.get((p.asset, p.model)))
            if code is not None:
                prop["unitCode"] = code
        prop["modelVersion"] = _prop(p.version)
        prop["quality"] = _prop(p.quality.label)
        score = _finite(p.score)
        if score is not None:
            prop["score"] = _prop(score)
        drift = _finite(p.drift_score)
        if drift is not None:
            prop["driftScore"] = _prop(drift)
        if p.historical:
            prop["historical"] = _prop(True)
        return prop

    def _tag_property(self, reading: TagReading) -> Entity | None:
        value = _tag_value(reading.value)
        if value is None:
            return None
        prop = _prop(value)
        when = reading.source_time if reading.source_time is not None else reading.received_time
        if when is not None:
            prop["observedAt"] = iso_time(when)
        if not isinstance(value, str | bool):
            code = self._units.code(reading.unit)
            if code is not None:
                prop["unitCode"] = code
        prop["quality"] = _prop(reading.quality.label)
        return prop
