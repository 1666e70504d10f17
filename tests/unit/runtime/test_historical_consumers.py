"""A prediction made for the past (``historical``) keeps its flag on the way out and does not
move what describes the present: the latest predictions, event rules, the MES body and the
store row (pure parts; the wired gateway is tests/integration/test_backfill_predictions.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bridge.connectors.mes.payload import event_fields, prediction_to_json
from bridge.connectors.mes.template import FIELDS
from bridge.outbox.rules import EventSelector, ThresholdRule, ThresholdSpec, Trigger
from bridge.runtime.fanout import PredictionFanout
from bridge.store.codec import (
    PREDICTION_COLUMNS,
    prediction_from_row,
    prediction_row,
    prediction_to_values,
)
from bridge.store.tables import PredictionRow
from bridge.types import Prediction, PredictionSlot, Quality

LABELS = ("healthy", "bearing_fault")
SLOTS = [PredictionSlot("p1", "m", "1", "ab" * 32, LABELS)]


def pred(
    seq: int, value: str | float, *, historical: bool = False, score: float = 0.5
) -> Prediction:
    return Prediction(
        id=f"p1-{seq}",
        seq=seq,
        asset="p1",
        model="m",
        version="1",
        sha256="ab" * 32,
        value=value,
        score=score,
        quality=Quality.GOOD,
        timestamp=1e9 + seq,
        input_age_s=None,
        historical=historical,
    )


def run(selector: EventSelector, *batches: list[Prediction]) -> list[Trigger]:
    out: list[Trigger] = []
    for batch in batches:
        out += selector.select(batch)
        selector.commit()
    return out


def test_every_reports_the_past_and_stateful_rules_ignore_it() -> None:
    past = [pred(i, "bearing_fault", historical=True, score=0.99) for i in range(1, 4)]
    every = run(EventSelector(["every"], SLOTS), past)
    assert [(t.prediction.seq, t.event) for t in every] == [
        (1, "prediction"),
        (2, "prediction"),
        (3, "prediction"),
    ]
    rules = ThresholdRule(threshold=ThresholdSpec.model_validate({"field": "score", "above": 0.9}))
    selector = EventSelector(["label_change", "alerts", rules], SLOTS)
    # A fault in the past is no label change, alert or crossing of now ...
    assert run(selector, past) == []
    # ... and leaves the state where the live predictions put it: the live change after it is
    # judged against the live "healthy", and reported once.
    live = run(selector, [pred(4, "healthy")], [pred(5, "bearing_fault", score=0.95)])
    assert [(t.prediction.seq, t.event, t.previous) for t in live] == [
        (5, "label_change", "healthy")
    ]


async def test_the_latest_predictions_stay_live() -> None:
    fanout = PredictionFanout([])
    await fanout.publish([pred(1, "healthy")])
    await fanout.publish([pred(2, "bearing_fault", historical=True)])
    assert fanout.latest[("p1", "m")].seq == 1
    assert fanout.published == 2


def test_mes_body_carries_the_flag() -> None:
    assert prediction_to_json(pred(1, "healthy"), "gw")["historical"] is False
    assert prediction_to_json(pred(2, "healthy", historical=True), "gw")["historical"] is True
    # A payload template may use it.
    assert "historical" in FIELDS
    assert event_fields(Trigger(pred(3, "healthy", historical=True)), "gw")["historical"] is True


@pytest.mark.parametrize("historical", [False, True])
def test_store_row_round_trip(historical: bool) -> None:
    p = pred(7, 1.25, historical=historical)
    row = dict(zip(PREDICTION_COLUMNS, prediction_row(p, "rev"), strict=True))
    assert row["historical"] is historical
    values = prediction_to_values(p)
    assert prediction_from_row(PredictionRow(**values)) == p
    assert prediction_from_row(PredictionRow(**{**values, "historical": None})) == replace(
        p, historical=False
    )
