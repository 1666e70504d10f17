"""Prediction <-> row values, without a database."""

from __future__ import annotations

import math

import pytest

from bridge.store.codec import (
    inputs_from_json,
    inputs_to_json,
    prediction_from_row,
    prediction_to_values,
)
from bridge.store.tables import PredictionRow
from bridge.types import InputSnapshot, Prediction, Quality

INPUTS = (
    InputSnapshot("p1.vibration", 4.25, Quality.GOOD, 1714564800.125),
    InputSnapshot("p1.running", True, Quality.UNCERTAIN, None),
    InputSnapshot("p1.mode", "auto", Quality.BAD, 1714564799.0),
    InputSnapshot("p1.count", 7, Quality.GOOD, None),
    InputSnapshot("p1.missing", None, Quality.BAD, None),
)


def make(value: str | float | None, quality: Quality = Quality.GOOD) -> Prediction:
    return Prediction(
        id="6f1c2d4e-0000-5000-8000-000000000001",
        seq=41,
        asset="p1",
        model="pump-health",
        version="1.0.0",
        sha256="cd" * 32,
        value=value,
        score=0.5,
        quality=quality,
        timestamp=1714564800.123456,
        input_age_s=1.5,
        inputs=INPUTS,
        reason="stale input" if quality is not Quality.GOOD else "",
    )


@pytest.mark.parametrize(
    ("value", "quality"),
    [("worn", Quality.GOOD), (12.75, Quality.UNCERTAIN), (None, Quality.BAD)],
)
def test_round_trip_through_row_values(value: str | float | None, quality: Quality) -> None:
    p = make(value, quality)
    row = PredictionRow(**prediction_to_values(p))
    assert prediction_from_row(row) == p


def test_text_and_number_go_to_separate_columns() -> None:
    text = prediction_to_values(make("worn"))
    number = prediction_to_values(make(3.0))
    assert (text["value_text"], text["value_num"]) == ("worn", None)
    assert (number["value_text"], number["value_num"]) == (None, 3.0)
    assert text["quality"] == "Good"


def test_inputs_keep_value_types() -> None:
    back = inputs_from_json(inputs_to_json(INPUTS))
    assert back == INPUTS
    assert [type(i.value) for i in back] == [float, bool, str, int, type(None)]


def test_unknown_quality_label_reads_as_bad() -> None:
    text = '[{"tag":"a.b","value":1,"quality":"Weird","source_time":null}]'
    assert inputs_from_json(text)[0].quality is Quality.BAD


def test_nan_input_survives() -> None:
    back = inputs_from_json(inputs_to_json((InputSnapshot("a.b", math.nan, Quality.BAD, None),)))
    value = back[0].value
    assert isinstance(value, float) and math.isnan(value)
