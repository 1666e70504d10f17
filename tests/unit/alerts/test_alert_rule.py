"""The alert rule without a hold (no mapping settings: raise_after = clear_after = 1): a change
to a non-first label raises exactly one alert. The hold is in test_alert_debounce.py."""

from __future__ import annotations

import uuid

from bridge.runtime.alertrule import AlertRule
from bridge.types import Prediction, PredictionSlot, Quality

LABELS = ("healthy", "bearing_fault", "cavitation")


def p(asset: str, seq: int, value: str | float | None, model: str = "health") -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"gw/{asset}/{model}/{seq}")),
        seq=seq,
        asset=asset,
        model=model,
        version="1",
        sha256="0" * 64,
        value=value,
        score=None if value is None else 0.8,
        quality=Quality.GOOD if value is not None else Quality.BAD,
        timestamp=1000.0 + seq,
        input_age_s=0.1,
    )


def rule() -> AlertRule:
    return AlertRule(
        [
            PredictionSlot("p1", "health", "1", "0" * 64, LABELS),
            PredictionSlot("p2", "health", "1", "0" * 64, LABELS),
            PredictionSlot("p1", "flow", "1", "0" * 64, ()),  # a regressor: no labels
        ]
    )


def test_change_to_a_fault_label_raises_once() -> None:
    r = rule()
    seq = ["healthy", "healthy", "bearing_fault", "bearing_fault", None, "bearing_fault"]
    alerts = [a for i, v in enumerate(seq) for a in r.evaluate([p("p1", i, v)])]
    assert [(a.asset, a.label, a.previous, a.raised_at) for a in alerts] == [
        ("p1", "bearing_fault", "healthy", 1002.0)
    ]
    assert alerts[0].prediction_id == p("p1", 2, "bearing_fault").id


def test_fault_to_other_fault_and_back_to_normal() -> None:
    r = rule()
    values = ["bearing_fault", "cavitation", "healthy", "healthy", "cavitation"]
    alerts = r.evaluate([p("p1", i, v) for i, v in enumerate(values)])
    # Before the first prediction an asset counts as normal: a fault at start-up is reported.
    assert [(a.previous, a.label) for a in alerts] == [
        ("healthy", "bearing_fault"),
        ("bearing_fault", "cavitation"),
        ("healthy", "cavitation"),
    ]


def test_assets_are_independent_and_unknown_or_numeric_predictions_raise_nothing() -> None:
    r = rule()
    batch = [
        p("p1", 1, "bearing_fault"),
        p("p2", 1, "healthy"),
        p("p1", 2, 3.5, model="flow"),
        p("p9", 1, "bearing_fault"),  # not a slot of this gateway
        p("p2", 2, "cavitation"),
    ]
    assert [(a.asset, a.label) for a in r.evaluate(batch)] == [
        ("p1", "bearing_fault"),
        ("p2", "cavitation"),
    ]
