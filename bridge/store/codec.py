"""Prediction <-> row values. Pure, so the round trip is tested without a database."""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring_ascii as _ascii
from typing import Any

from bridge.types import Contribution, Explanation, InputSnapshot, Prediction, Quality, TagValue

from .tables import PredictionRow

__all__ = [
    "PREDICTION_COLUMNS",
    "explanation_from_json",
    "explanation_to_json",
    "inputs_from_json",
    "inputs_to_json",
    "prediction_from_row",
    "prediction_row",
    "prediction_to_values",
]

# One encoder for every row: ``json.dumps`` with any option builds a new JSONEncoder per call.
# Same settings as ``json.dumps(..., separators=(",", ":"))``, so the text is the same.
_JSON = json.JSONEncoder(separators=(",", ":"))
# ``Quality.label`` (capitalising the name) per input costs more than the lookup.
_LABELS = {q: q.label for q in Quality}


def _label(q: Quality) -> str:
    # Only a real Quality takes the table (an int equal to one would otherwise pass).
    return _LABELS[q] if type(q) is Quality else q.label


def _quality(label: str) -> Quality:
    try:
        return Quality[label.upper()]
    except KeyError:
        # A label this version does not know is not trustworthy data.
        return Quality.BAD


_INFINITY = math.inf


def _json_value(v: Any) -> str:
    """``json.dumps(v)`` for one scalar, by type: the common ones without the encoder's
    machinery (``json.dumps`` writes floats with ``float.__repr__``, NaN and infinities as
    ``NaN``/``Infinity``, strings ASCII-escaped); anything else through the encoder itself."""
    if v is None:
        return "null"
    kind = type(v)
    if kind is float:
        if v != v:
            return "NaN"
        if v == _INFINITY:
            return "Infinity"
        if v == -_INFINITY:
            return "-Infinity"
        return float.__repr__(v)
    if kind is str:
        return _ascii(v)
    if kind is bool:
        return "true" if v else "false"
    if kind is int:
        return int.__repr__(v)
    return _JSON.encode(v)


# Per quality, the text between the value and the source time.
_MIDDLES = {q: f',"quality":{_ascii(q.label)},"source_time":' for q in Quality}


def _middle(q: Quality) -> str:
    return f',"quality":{_json_value(_label(q))},"source_time":'


def inputs_to_json(inputs: tuple[InputSnapshot, ...]) -> str:
    """The same text as ``json.dumps([{"tag", "value", "quality", "source_time"}, ...],
    separators=(",", ":"))``, written directly: it is most of the store writer's own CPU per
    prediction (a property test holds the two equal). The common input, a finite float value
    with a finite float source time, is one f-string around two float reprs (the reprs are
    most of what is left); anything else goes through ``_json_value``."""
    parts: list[str] = []
    for i in inputs:
        tag, v, t, q = _json_value(i.tag), i.value, i.source_time, i.quality
        middle = _MIDDLES[q] if type(q) is Quality else _middle(q)
        # x - x == 0.0 is false for NaN and the infinities, which JSON spells its own way.
        if type(v) is float and type(t) is float and v - v == 0.0 and t - t == 0.0:
            parts.append(f'{{"tag":{tag},"value":{v!r}{middle}{t!r}}}')
        else:
            parts.append(f'{{"tag":{tag},"value":{_json_value(v)}{middle}{_json_value(t)}}}')
    return "[" + ",".join(parts) + "]"


def _tag_value(raw: Any) -> TagValue:
    if raw is None or isinstance(raw, bool | int | float | str):
        return raw
    return str(raw)


def inputs_from_json(text: str) -> tuple[InputSnapshot, ...]:
    items = json.loads(text) if text else []
    return tuple(
        InputSnapshot(
            tag=str(item["tag"]),
            value=_tag_value(item.get("value")),
            quality=_quality(str(item.get("quality", "Bad"))),
            source_time=None if item.get("source_time") is None else float(item["source_time"]),
        )
        for item in items
    )


def explanation_to_json(e: Explanation | None) -> str | None:
    if e is None:
        return None
    top = [
        {"feature": c.feature, "value": c.value, "baseline": c.baseline, "effect": c.effect}
        for c in e.top
    ]
    return _JSON.encode({"reason": e.reason, "top": top})


def explanation_from_json(text: str | None) -> Explanation | None:
    if not text:
        return None
    data = json.loads(text)
    top = tuple(
        Contribution(str(c["feature"]), float(c["value"]), float(c["baseline"]), float(c["effect"]))
        for c in data.get("top", [])
    )
    return Explanation(str(data.get("reason", "")), top)


def prediction_to_values(p: Prediction) -> dict[str, Any]:
    """Column values of one ``predictions`` row (without the surrogate ``id``)."""
    is_text = isinstance(p.value, str)
    return {
        "prediction_id": p.id,
        "seq": p.seq,
        "asset": p.asset,
        "model": p.model,
        "version": p.version,
        "sha256": p.sha256,
        "value_text": p.value if is_text else None,
        "value_num": None if is_text or p.value is None else float(p.value),
        "score": p.score,
        "quality": p.quality.label,
        "reason": p.reason,
        "timestamp": p.timestamp,
        "input_age_s": p.input_age_s,
        "inputs_json": inputs_to_json(p.inputs),
        "explanation_json": explanation_to_json(p.explanation),
        "drift_score": p.drift_score,
        "fence": p.fence,
        "historical": p.historical,
    }


# The columns of ``prediction_row``, in its order (the surrogate ``id`` is the database's).
PREDICTION_COLUMNS = (
    "prediction_id",
    "seq",
    "asset",
    "model",
    "version",
    "sha256",
    "value_text",
    "value_num",
    "score",
    "quality",
    "reason",
    "timestamp",
    "input_age_s",
    "inputs_json",
    "explanation_json",
    "drift_score",
    "mapping_revision",
    "fence",
    "historical",
)


def prediction_row(p: Prediction, mapping_revision: str | None) -> tuple[Any, ...]:
    """``prediction_to_values`` plus the mapping revision, as a tuple in ``PREDICTION_COLUMNS``
    order: the store writer's bulk insert takes tuples (no dict per row, no key look-ups)."""
    value = p.value
    is_text = isinstance(value, str)
    return (
        p.id,
        p.seq,
        p.asset,
        p.model,
        p.version,
        p.sha256,
        value if is_text else None,
        None if is_text or value is None else float(value),
        p.score,
        _label(p.quality),
        p.reason,
        p.timestamp,
        p.input_age_s,
        inputs_to_json(p.inputs),
        None if p.explanation is None else explanation_to_json(p.explanation),
        p.drift_score,
        mapping_revision,
        p.fence,
        p.historical,
    )


def prediction_from_row(row: PredictionRow) -> Prediction:
    value: str | float | None = row.value_text if row.value_text is not None else row.value_num
    return Prediction(
        id=row.prediction_id,
        seq=row.seq,
        asset=row.asset,
        model=row.model,
        version=row.version,
        sha256=row.sha256,
        value=value,
        score=row.score,
        quality=_quality(row.quality),
        timestamp=row.timestamp,
        input_age_s=row.input_age_s,
        inputs=inputs_from_json(row.inputs_json),
        reason=row.reason or "",
        explanation=explanation_from_json(row.explanation_json),
        drift_score=row.drift_score,
        fence=row.fence,
        historical=bool(row.historical),
    )
