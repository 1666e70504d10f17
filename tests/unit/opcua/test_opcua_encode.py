"""Prediction -> DataValues for the prediction server. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

from asyncua import ua

from bridge.connectors.opcua.encode import FIELDS, encode_prediction, initial_values, node_string
from bridge.types import Prediction, PredictionSlot, Quality

S = ua.StatusCodes
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LABELLED = PredictionSlot("P1", "bearing", "1.0", "f" * 64, labels=("ok", "fault"))
NUMERIC = PredictionSlot("P1", "rul", "2.0", "e" * 64)


def pred(value: str | float | None, quality: Quality = Quality.GOOD, **kw: object) -> Prediction:
    base: dict[str, object] = dict(
        id="x",
        seq=1,
        asset="P1",
        model="bearing",
        version="1.0",
        sha256="f" * 64,
        value=value,
        score=0.9,
        quality=quality,
        timestamp=1714564800.0,
        input_age_s=0.2,
    )
    base.update(kw)
    return Prediction(**base)  # type: ignore[arg-type]


def test_node_strings_are_stable() -> None:
    assert node_string("P1", "bearing") == "Predictions.P1.bearing"
    assert node_string("P1", "bearing", "Value") == "Predictions.P1.bearing.Value"


def test_initial_state_waits_for_data() -> None:
    values = initial_values(NUMERIC, NOW)
    assert set(values) == set(FIELDS)
    assert values["Value"].StatusCode.value == S.BadWaitingForInitialData
    assert values["ModelVersion"].Value.Value == "2.0"
    assert values["Quality"].Value.Value == "Bad"


def test_quality_maps_to_status_codes() -> None:
    expected = {
        Quality.GOOD: S.Good,
        Quality.UNCERTAIN: S.UncertainLastUsableValue,
        Quality.BAD: S.BadNoCommunication,
    }
    for quality, code in expected.items():
        values = encode_prediction(LABELLED, pred("fault", quality), NOW)
        assert values["Value"].StatusCode.value == code
        assert values["Quality"].Value.Value == quality.label


def test_values_and_timestamps() -> None:
    values = encode_prediction(LABELLED, pred(1.0), NOW)
    assert values["Value"].Value.Value == "fault"  # class index -> label
    assert values["Value"].Value.VariantType == ua.VariantType.String
    assert values["Value"].SourceTimestamp.timestamp() == 1714564800.0
    assert values["Value"].ServerTimestamp == NOW
    assert values["Timestamp"].Value.Value.timestamp() == 1714564800.0
    numeric = encode_prediction(NUMERIC, pred(41, model="rul"), NOW)
    assert numeric["Value"].Value.Value == 41.0
    assert numeric["Value"].Value.VariantType == ua.VariantType.Double


def test_missing_and_mismatched_values() -> None:
    text_on_numeric = encode_prediction(NUMERIC, pred("fault", model="rul"), NOW)
    assert text_on_numeric["Value"].StatusCode.value == S.BadTypeMismatch
    no_score = encode_prediction(NUMERIC, pred(1.0, score=None, input_age_s=None), NOW)
    assert no_score["Score"].StatusCode.value == S.BadNoData
    assert no_score["InputAge"].StatusCode.value == S.BadNoData
    none_good = encode_prediction(NUMERIC, pred(None), NOW)
    assert none_good["Value"].StatusCode.value == S.BadNoData
