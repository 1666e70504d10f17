"""Event rules of a destination: which predictions become events, with staged state."""

from __future__ import annotations

from bridge.outbox.rules import EventRule, EventSelector, ThresholdRule, ThresholdSpec, Trigger
from bridge.types import Prediction, PredictionSlot, Quality

LABELS = ("healthy", "bearing_fault", "cavitation")
SLOTS = [PredictionSlot("p1", "m", "1", "ab" * 32, LABELS)]


def pred(
    seq: int,
    value: str | float | None,
    score: float | None = 0.5,
    quality: Quality = Quality.GOOD,
    asset: str = "p1",
) -> Prediction:
    return Prediction(
        id=f"{asset}-{seq}",
        seq=seq,
        asset=asset,
        model="m",
        version="1",
        sha256="ab" * 32,
        value=value,
        score=score,
        quality=quality,
        timestamp=1e9 + seq,
        input_age_s=None,
    )


def run(selector: EventSelector, *batches: list[Prediction]) -> list[Trigger]:
    out: list[Trigger] = []
    for batch in batches:
        out += selector.select(batch)
        selector.commit()
    return out


def summary(triggers: list[Trigger]) -> list[tuple[int, str, str | None, str | None]]:
    return [(t.prediction.seq, t.event, t.previous, t.crossing) for t in triggers]


def threshold(**spec: object) -> ThresholdRule:
    return ThresholdRule(threshold=ThresholdSpec.model_validate(spec))


def test_every_sends_each_prediction() -> None:
    batch = [pred(0, "healthy"), pred(1, "healthy", quality=Quality.BAD)]
    assert summary(run(EventSelector(["every"], SLOTS), batch)) == [
        (0, "prediction", None, None),
        (1, "prediction", None, None),
    ]


def test_label_change_and_alerts() -> None:
    values = ["healthy", "healthy", "bearing_fault", "bearing_fault", "healthy", "cavitation"]
    batch = [pred(i, v) for i, v in enumerate(values)]
    changes = run(EventSelector(["label_change"], SLOTS), batch)
    assert summary(changes) == [
        (2, "label_change", "healthy", None),
        (4, "label_change", "bearing_fault", None),
        (5, "label_change", "healthy", None),
    ]
    # Alerts: a change to a label other than the first (normal) one; going back is no alert.
    alerts = run(EventSelector(["alerts"], SLOTS), batch)
    assert summary(alerts) == [(2, "alert", "healthy", None), (5, "alert", "healthy", None)]


def test_a_fault_present_at_start_is_an_alert_and_bad_predictions_change_nothing() -> None:
    batch = [
        pred(0, "bearing_fault"),
        pred(1, None, quality=Quality.BAD),
        pred(2, "bearing_fault"),
    ]
    assert summary(run(EventSelector(["alerts", "label_change"], SLOTS), batch)) == [
        (0, "alert", "healthy", None)
    ]


def test_threshold_above_with_hysteresis_and_clear() -> None:
    rule = threshold(field="score", above=0.8, hysteresis=0.1, notify_clear=True)
    scores = [0.5, 0.85, 0.9, 0.75, 0.81, 0.69, 0.95]
    batch = [pred(i, "x", score=s) for i, s in enumerate(scores)]
    # 0.75 and 0.81 are inside the hysteresis band: no clear, no second crossing.
    assert summary(run(EventSelector([rule]), batch)) == [
        (1, "threshold", None, "enter"),
        (5, "threshold", None, "clear"),
        (6, "threshold", None, "enter"),
    ]
    triggers = run(EventSelector([rule]), batch[:2])
    assert (triggers[-1].limit, triggers[-1].field) == (0.8, "score")


def test_threshold_below_on_value_ignores_bad_and_non_numbers() -> None:
    rule = threshold(field="value", below=10.0, hysteresis=1.0)
    batch = [
        pred(0, 12.0),
        pred(1, 9.0, quality=Quality.BAD),
        pred(2, "text"),
        pred(3, 9.5),
        pred(4, 10.5),
        pred(5, 9.0),
        pred(6, 11.0),
        pred(7, 8.0),
    ]
    assert summary(run(EventSelector([rule]), batch)) == [
        (3, "threshold", None, "enter"),
        (7, "threshold", None, "enter"),
    ]


def test_state_is_per_asset() -> None:
    slots = [*SLOTS, PredictionSlot("p2", "m", "1", "ab" * 32, LABELS)]
    batch = [pred(0, "bearing_fault", asset="p1"), pred(0, "healthy", asset="p2")]
    batch += [pred(1, "bearing_fault", asset="p2")]
    triggers = run(EventSelector(["alerts"], slots), batch)
    assert [(t.prediction.asset, t.prediction.seq) for t in triggers] == [("p1", 0), ("p2", 1)]


def test_a_batch_evaluated_again_after_a_failed_commit_gives_the_same_events() -> None:
    selector = EventSelector(["label_change"], SLOTS)
    batch = [pred(0, "healthy"), pred(1, "cavitation")]
    first = selector.select(batch)  # the transaction fails: no commit
    again = selector.select(batch)
    selector.commit()
    assert summary(first) == summary(again) == [(1, "label_change", "healthy", None)]
    # Committed: the same label again is no change.
    assert selector.select([pred(2, "cavitation")]) == []


def test_seeded_state_continues_after_a_restart() -> None:
    selector = EventSelector(["label_change", threshold(field="score", above=0.8)], SLOTS)
    selector.seed([pred(9, "cavitation", score=0.9)])
    # Same label, still above the limit: nothing new to tell the MES.
    assert run(selector, [pred(10, "cavitation", score=0.95)]) == []
    assert summary(run(selector, [pred(11, "healthy", score=0.95)])) == [
        (11, "label_change", "cavitation", None)
    ]


def test_first_matching_rule_names_the_event_one_event_per_prediction() -> None:
    rules: list[EventRule] = [threshold(field="score", above=0.8), "label_change"]
    batch = [pred(0, "healthy", score=0.1), pred(1, "cavitation", score=0.9)]
    assert summary(run(EventSelector(rules, SLOTS), batch)) == [(1, "threshold", None, "enter")]
    rules = ["label_change", threshold(field="score", above=0.8)]
    assert summary(run(EventSelector(rules, SLOTS), batch)) == [
        (1, "label_change", "healthy", None)
    ]
