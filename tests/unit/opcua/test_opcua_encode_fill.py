"""encode fills asyncua's Variant and DataValue field by field (no __post_init__): the result
must equal, and encode on the wire exactly like, what asyncua's constructors build."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

from bridge.connectors.opcua import encode
from bridge.connectors.opcua.encode import encode_prediction, make_status
from bridge.types import Explanation, Prediction, PredictionSlot, Quality

NOW: Any = datetime(2026, 12, 3, 12, 0, 0, 123456, tzinfo=UTC)
WHEN: Any = datetime(2026, 12, 3, 11, 59, 59, 5, tzinfo=UTC)
CASES = [
    (1.25, ua.VariantType.Double, StatusCodes.Good),
    ("fault", ua.VariantType.String, StatusCodes.UncertainLastUsableValue),
    (WHEN, ua.VariantType.DateTime, StatusCodes.Good),
    (None, ua.VariantType.Double, StatusCodes.BadNoData),
    (None, ua.VariantType.String, StatusCodes.BadWaitingForInitialData),
]


def constructed(value: Any, vtype: ua.VariantType, status: int) -> ua.DataValue:
    variant = ua.Variant() if value is None else ua.Variant(value, vtype)
    return ua.DataValue(
        variant,
        StatusCode=ua.StatusCode(cast(Any, status)),
        SourceTimestamp=WHEN,
        ServerTimestamp=NOW,
    )


def test_the_fast_path_is_in_use_with_this_asyncua() -> None:
    assert encode._FILL  # else the constructors run: correct, slower, and these tests moot


@pytest.mark.parametrize(("value", "vtype", "status"), CASES)
def test_filled_datavalue_equals_and_encodes_like_asyncuas(
    value: Any, vtype: ua.VariantType, status: int
) -> None:
    filled = encode._dv(value, vtype, status, WHEN, NOW)
    built = constructed(value, vtype, status)
    assert filled == built
    assert filled.Value == built.Value and filled.Value is not None
    assert filled.Value.is_array is False and filled.Value.Dimensions is None
    wire = struct_to_binary(filled)
    assert wire == struct_to_binary(built)
    back = struct_from_binary(ua.DataValue, Buffer(wire))
    assert back.Value == built.Value and back.StatusCode == built.StatusCode


def test_every_encoded_prediction_value_round_trips() -> None:
    slot = PredictionSlot("P1", "rul", "1.0", "e" * 64)
    prediction = Prediction(
        id="x",
        seq=1,
        asset="P1",
        model="rul",
        version="1.0",
        sha256="e" * 64,
        value=4.5,
        score=None,
        quality=Quality.GOOD,
        timestamp=1764763199.5,
        input_age_s=0.25,
        explanation=Explanation("speed low", ()),
        drift_score=0.5,
    )
    values = encode_prediction(slot, prediction, NOW)
    assert values["Score"].StatusCode == make_status(StatusCodes.BadNoData)
    for field, dv in values.items():
        back = struct_from_binary(ua.DataValue, Buffer(struct_to_binary(dv)))
        assert back.Value == dv.Value, field
        assert back.StatusCode == dv.StatusCode, field
