"""Pure encoding of predictions into OPC UA DataValues for the prediction server.

Status codes written to ``Value`` (and ``Score``/``InputAge``), chosen so an HMI shows the
right colour without knowing bridge:

- ``Good``: the model ran on Good inputs.
- ``UncertainLastUsableValue``: the prediction is Uncertain (some inputs stale or uncertain).
- ``BadNoCommunication``: the prediction is Bad (inputs missing/bad or the model failed).
- ``BadWaitingForInitialData``: no prediction was made since the server started.
- ``BadTypeMismatch``: the value does not fit the variable (e.g. text for a numeric slot).
- ``BadNoData``: an optional field (score, input age) is absent in this prediction.
- ``BadConfigurationError``: written to every variable of an asset+model a mapping reload
  removed, just before its nodes are deleted (a subscribed HMI shows it Bad, not frozen).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, cast

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from bridge.types import Prediction, PredictionSlot, Quality

__all__ = [
    "FIELDS",
    "STATUS_FOR_QUALITY",
    "encode_prediction",
    "initial_values",
    "make_status",
    "node_string",
    "status_for",
    "value_type",
]

# Variable name -> variant type, apart from Value whose type depends on the slot.
FIELDS: dict[str, ua.VariantType] = {
    "Value": ua.VariantType.Double,
    "Score": ua.VariantType.Double,
    "ModelName": ua.VariantType.String,
    "ModelVersion": ua.VariantType.String,
    "ModelSha256": ua.VariantType.String,
    "Quality": ua.VariantType.String,
    "Timestamp": ua.VariantType.DateTime,
    "InputAge": ua.VariantType.Double,
    # One line for operators with the top contributing inputs (when the model explains).
    "Explanation": ua.VariantType.String,
    # The asset's drift score: largest PSI of the model inputs against the training data.
    "DriftScore": ua.VariantType.Double,
    # The id of the prediction shown: what the feedback methods take, so an operator's answer
    # lands on the prediction they judged even if a newer one arrived meanwhile.
    "PredictionId": ua.VariantType.String,
}

STATUS_FOR_QUALITY: dict[Quality, int] = {
    Quality.GOOD: StatusCodes.Good,
    Quality.UNCERTAIN: StatusCodes.UncertainLastUsableValue,
    Quality.BAD: StatusCodes.BadNoCommunication,
}


def node_string(asset: str, model: str, field: str | None = None) -> str:
    """String identifier of a prediction node, e.g. ``Predictions.P1.bearing.Value``."""
    base = f"Predictions.{asset}.{model}"
    return f"{base}.{field}" if field else base


_STATUSES: dict[int, ua.StatusCode] = {}


def make_status(code: int) -> ua.StatusCode:
    """One shared StatusCode per code: ~20,000 are needed per second at 2,000 predictions/s and
    nothing mutates them (asyncua only reads ``.value``)."""
    status = _STATUSES.get(code)
    if status is None:
        # asyncua annotates StatusCode with its own int subclass; a plain int is what it expects.
        status = _STATUSES[code] = ua.StatusCode(cast(Any, code))
    return status


def value_type(slot: PredictionSlot) -> ua.VariantType:
    return ua.VariantType.String if slot.labels else ua.VariantType.Double


def status_for(quality: Quality) -> ua.StatusCode:
    return make_status(STATUS_FOR_QUALITY[quality])


# asyncua's Variant and DataValue validate and guess types in __post_init__ (~3 µs per value,
# most of a 2,000-prediction batch's encoding: 16,000 values/s). Here the types are known, so the
# two are filled field by field (~0.6 µs), when their fields are the ones this was written for
# (asyncua 2.1); otherwise the constructors are used. test_opcua_encode_fill checks both agree.
_VARIANT_FIELDS = ("Value", "VariantType", "Dimensions", "is_array")
_DATAVALUE_FIELDS = (
    "Encoding",
    "Value",
    "StatusCode",
    "SourceTimestamp",
    "ServerTimestamp",
    "SourcePicoseconds",
    "ServerPicoseconds",
)
_FILL = (
    tuple(f.name for f in fields(ua.Variant)) == _VARIANT_FIELDS
    and tuple(f.name for f in fields(ua.DataValue)) == _DATAVALUE_FIELDS
)
_NULL = ua.Variant()
_NO_MASK: Any = 0  # DataValue.Encoding: computed when the value is serialized
_new = object.__new__


def _dv(
    value: Any, vtype: ua.VariantType, status: int, source: datetime | None, server: datetime
) -> ua.DataValue:
    stamp: Any = source
    now: Any = server
    if not _FILL:
        variant = _NULL if value is None else ua.Variant(value, vtype)
        return ua.DataValue(
            variant, StatusCode=make_status(status), SourceTimestamp=stamp, ServerTimestamp=now
        )
    if value is None:
        variant = _NULL  # shared: nothing mutates a stored Variant
    else:
        variant = _new(ua.Variant)
        variant.Value = value
        variant.VariantType = vtype
        variant.Dimensions = None
        variant.is_array = False
    dv = _new(ua.DataValue)
    dv.Encoding = _NO_MASK
    dv.Value = variant
    dv.StatusCode = make_status(status)
    dv.SourceTimestamp = stamp
    dv.ServerTimestamp = now
    dv.SourcePicoseconds = None
    dv.ServerPicoseconds = None
    return dv


def initial_values(slot: PredictionSlot, now: datetime) -> dict[str, ua.DataValue]:
    """What a slot shows before its first prediction."""
    waiting = StatusCodes.BadWaitingForInitialData
    good = StatusCodes.Good
    return {
        "Value": _dv(None, value_type(slot), waiting, None, now),
        "Score": _dv(None, ua.VariantType.Double, waiting, None, now),
        "ModelName": _dv(slot.model, ua.VariantType.String, good, now, now),
        "ModelVersion": _dv(slot.version, ua.VariantType.String, good, now, now),
        "ModelSha256": _dv(slot.sha256, ua.VariantType.String, good, now, now),
        "Quality": _dv(Quality.BAD.label, ua.VariantType.String, good, now, now),
        "Timestamp": _dv(None, ua.VariantType.DateTime, waiting, None, now),
        "InputAge": _dv(None, ua.VariantType.Double, waiting, None, now),
        "Explanation": _dv(None, ua.VariantType.String, waiting, None, now),
        "DriftScore": _dv(None, ua.VariantType.Double, waiting, None, now),
        "PredictionId": _dv(None, ua.VariantType.String, waiting, None, now),
    }


def _slot_value(slot: PredictionSlot, value: str | float | None) -> tuple[Any, int | None]:
    """(value for the variable, status override) for the slot's Value type."""
    if value is None:
        return None, None
    if slot.labels:
        if isinstance(value, str):
            return value, None
        # A class index from a classifier that reports numbers: show its label.
        if float(value).is_integer() and 0 <= int(value) < len(slot.labels):
            return slot.labels[int(value)], None
        return str(value), None
    if isinstance(value, str):
        return None, StatusCodes.BadTypeMismatch
    return float(value), None


def encode_prediction(
    slot: PredictionSlot, prediction: Prediction, now: datetime, model_fields: bool = True
) -> dict[str, ua.DataValue]:
    """DataValues for every variable of the slot; SourceTimestamp is the prediction time.
    ``model_fields=False`` leaves out ModelName, ModelVersion and ModelSha256 (the server skips
    them while they equal what the nodes show)."""
    when = datetime.fromtimestamp(prediction.timestamp, UTC)
    status = STATUS_FOR_QUALITY[prediction.quality]
    good = StatusCodes.Good
    value, override = _slot_value(slot, prediction.value)
    value_status = override if override is not None else status
    if value is None and value_status == good:
        value_status = StatusCodes.BadNoData
    score_status = status if prediction.score is not None else StatusCodes.BadNoData
    age = prediction.input_age_s
    out = {
        "Value": _dv(value, value_type(slot), value_status, when, now),
        "Score": _dv(prediction.score, ua.VariantType.Double, score_status, when, now),
        "Quality": _dv(prediction.quality.label, ua.VariantType.String, good, when, now),
        "Timestamp": _dv(when, ua.VariantType.DateTime, good, when, now),
        "InputAge": _dv(
            age,
            ua.VariantType.Double,
            good if age is not None else StatusCodes.BadNoData,
            when,
            now,
        ),
        "PredictionId": _dv(prediction.id, ua.VariantType.String, good, when, now),
    }
    if model_fields:
        out["ModelName"] = _dv(prediction.model, ua.VariantType.String, good, when, now)
        out["ModelVersion"] = _dv(prediction.version, ua.VariantType.String, good, when, now)
        out["ModelSha256"] = _dv(prediction.sha256, ua.VariantType.String, good, when, now)
    # Written only when the prediction carries them: a prediction the model did not explain
    # leaves the last explanation (and drift score) on the HMI.
    if prediction.explanation is not None:
        out["Explanation"] = _dv(
            prediction.explanation.reason, ua.VariantType.String, good, when, now
        )
    if prediction.drift_score is not None:
        out["DriftScore"] = _dv(prediction.drift_score, ua.VariantType.Double, good, when, now)
    return out
