"""The alert rule without a hold (no mapping settings: raise_after = clear_after = 1): a change
to a non-first label raises exactly one alert. The hold is in test_alert_debounce.py."""

from __future__ import annotations

import uuid

from bridge.alertrule import AlertRule, LabelTrack
from bridge.outbox.rules import EventSelector
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
    assert [(a.prediction.asset, a.label, a.previous, a.prediction.timestamp) for a in alerts] == [
        ("p1", "bearing_fault", "healthy", 1002.0)
    ]
    assert alerts[0].prediction.id == p("p1", 2, "bearing_fault").id


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
    assert [(a.prediction.asset, a.label) for a in r.evaluate(batch)] == [
        ("p1", "bearing_fault"),
        ("p2", "cavitation"),
    ]


# -- one rule, two users: the stored alerts and a destination's `alerts` events ------------------


def events(selector: EventSelector, batches: list[list[Prediction]]) -> list[tuple[str, str]]:
    out = []
    for batch in batches:
        out += [(t.prediction.id, t.previous or "") for t in selector.select(batch)]
        selector.commit()
    return out


def test_alert_events_of_a_destination_are_the_alerts_the_gateway_raises() -> None:
    values: list[str | float | None] = [
        "healthy", "bearing_fault", None, "bearing_fault", "cavitation", "healthy",
        "healthy", "cavitation", None, "healthy", "bearing_fault", "bearing_fault",
    ]  # fmt: skip
    batch = [p(a, i, v) for i, v in enumerate(values) for a in ("p1", "p2")]
    batch += [p("p1", i, float(i), model="flow") for i in range(3)]  # a regressor
    slots = [
        PredictionSlot("p1", "health", "1", "0" * 64, LABELS),
        PredictionSlot("p2", "health", "1", "0" * 64, LABELS),
        PredictionSlot("p1", "flow", "1", "0" * 64, ()),
    ]
    raised = [(a.prediction.id, a.previous) for a in rule().evaluate(batch)]
    assert len(raised) == 8  # 4 per asset: the rule did fire
    # Whether the batch comes in one transaction or one prediction at a time.
    assert events(EventSelector(["alerts"], slots), [batch]) == raised
    assert events(EventSelector(["alerts"], slots), [[x] for x in batch]) == raised


def test_alert_events_are_staged_until_commit_and_seeded_after_a_restart() -> None:
    slots = [PredictionSlot("p1", "health", "1", "0" * 64, LABELS)]
    selector = EventSelector(["alerts"], slots)
    batch = [p("p1", 0, "healthy"), p("p1", 1, "bearing_fault")]
    first = [(t.prediction.seq, t.previous) for t in selector.select(batch)]  # not committed
    again = [(t.prediction.seq, t.previous) for t in selector.select(batch)]
    selector.commit()
    assert first == again == [(1, "healthy")]
    assert selector.select([p("p1", 2, "bearing_fault")]) == []  # committed: the same fault
    # A restart starts from the last stored prediction: the fault is not alerted again, a
    # different one is, as the change from the stored fault.
    restarted = EventSelector(["alerts"], slots)
    restarted.seed([p("p1", 2, "bearing_fault")])
    assert restarted.select([p("p1", 3, "bearing_fault")]) == []
    restarted.commit()
    triggers = restarted.select([p("p1", 4, "cavitation")])
    assert [(t.prediction.seq, t.event, t.previous) for t in triggers] == [
        (4, "alert", "bearing_fault")
    ]


def test_a_staged_track_leaves_the_committed_one_alone() -> None:
    track = LabelTrack("healthy", raise_after=2, clear_after=2)
    staged = track.copy()
    assert staged.step("bearing_fault") is None
    assert staged.step("bearing_fault") == "healthy"
    assert (track.state, track.fault_run) == ("healthy", 0)  # a failed commit changed nothing
    assert track.step("bearing_fault") is None  # and starts again from there


def test_with_the_mappings_hold_a_destination_alerts_as_the_gateway_stores() -> None:
    """The models' ``alerts:`` hold reaches a destination's ``alerts`` rule too: a label
    flapping at the boundary is one alert in the store and one event to the MES, not one
    event per flip."""
    from bridge.alertrule import AlertHold

    holds = {"health": AlertHold(raise_after=3, clear_after=2)}
    slots = [PredictionSlot("p1", "health", "1", "0" * 64, LABELS)]
    values = [
        "healthy", "bearing_fault", "healthy", "bearing_fault", "bearing_fault",
        "bearing_fault", "healthy", "bearing_fault", "healthy", "healthy", "cavitation",
        "cavitation", "cavitation",
    ]  # fmt: skip
    batch = [p("p1", i, v) for i, v in enumerate(values)]
    raised = [(a.prediction.id, a.previous) for a in AlertRule(slots, holds).evaluate(batch)]
    # Two held faults, each from the normal state (two healthy runs in a row cleared the first).
    assert [x[1] for x in raised] == ["healthy", "healthy"]
    assert events(EventSelector(["alerts"], slots, holds), [[x] for x in batch]) == raised
    # Without the hold the destination would have sent an event at every flip.
    assert len(events(EventSelector(["alerts"], slots), [[x] for x in batch])) > len(raised)


def test_a_reload_keeps_the_state_of_kept_slots_and_starts_new_ones_at_normal() -> None:
    r = rule()
    assert [a.label for a in r.evaluate([p("p1", 0, "bearing_fault")])] == ["bearing_fault"]
    # The mapping now serves p1 and p3 (p2 removed): p1 is still in its fault, so the same
    # label is no new alert; p3 is tracked from its normal label on; p2 is no longer tracked.
    r.follow(
        [
            PredictionSlot("p1", "health", "1", "0" * 64, LABELS),
            PredictionSlot("p3", "health", "1", "0" * 64, LABELS),
        ],
        None,
    )
    assert r.evaluate([p("p1", 1, "bearing_fault")]) == []
    assert [a.label for a in r.evaluate([p("p3", 0, "cavitation")])] == ["cavitation"]
    assert r.evaluate([p("p2", 0, "cavitation")]) == []


def test_an_event_selector_follows_a_reload_like_the_alert_rule() -> None:
    slots = [PredictionSlot("p1", "health", "1", "0" * 64, LABELS)]
    selector = EventSelector(["label_change", "alerts"], slots)
    selector.follow([*slots, PredictionSlot("p3", "health", "1", "0" * 64, LABELS)], None)
    # p3 is new: before any prediction it counts as normal, so a fault is a change and an alert.
    [trigger] = selector.select([p("p3", 0, "cavitation")])
    assert (trigger.event, trigger.previous) == ("label_change", "healthy")
