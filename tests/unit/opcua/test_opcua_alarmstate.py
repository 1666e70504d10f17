"""The alarm's Part 9 states without a server (``bridge.connectors.opcua._alarmstate``): what
each prediction, store record and operator call does to one asset+model's alarm."""

from __future__ import annotations

from typing import Any

from bridge.connectors.opcua._alarmstate import AlarmState, Snapshot
from bridge.types import AlarmPolicy, AlarmRecord, Explanation, Prediction, PredictionSlot, Quality

LABELS = ("healthy", "bearing_fault", "cavitation")


def state(hold: int = 1) -> AlarmState:
    return AlarmState(
        PredictionSlot("P1", "pump", "2.0", "a" * 64, LABELS, alarm=AlarmPolicy(800, hold, hold))
    )


def pred(seq: int, label: str, quality: Quality = Quality.GOOD) -> Prediction:
    return Prediction(
        id=f"p{seq}",
        seq=seq,
        asset="P1",
        model="pump",
        version="2.0",
        sha256="a" * 64,
        value=label,
        score=0.9,
        quality=quality,
        timestamp=1000.0 + seq,
        input_age_s=None,
        explanation=Explanation("vibration high", ()),
    )


def record(pid: str, label: str, **kw: Any) -> AlarmRecord:
    return AlarmRecord(7, pid, "P1", "pump", label, "healthy", 1001.0, **kw)


def states(snap: Snapshot | None) -> tuple[object, ...]:
    assert snap is not None
    return (snap.kind, snap.active, snap.acked, snap.confirmed, snap.retain)


def test_raise_acknowledge_clear_confirm_follow_part9() -> None:
    s = state()
    assert s.step(pred(0, "healthy")) is None
    raised = s.step(pred(1, "bearing_fault"))
    assert states(raised) == ("raised", True, False, True, True)
    assert raised is not None
    assert raised.event_id == b"p1:raised" and raised.severity == 800
    assert raised.message == (
        "P1/pump: bearing_fault (was healthy); vibration high; model 2.0; prediction p1"
    )
    assert s.step(pred(2, "bearing_fault")) is None  # the same fault: nothing new
    assert s.step(pred(3, "healthy", Quality.BAD)) is None  # a Bad prediction clears nothing
    assert s.refuse_confirm(b"p1:raised") == "not_acked"
    assert s.refuse_acknowledge(b"p0:raised") == "event_unknown"
    assert s.refuse_acknowledge(b"p1:raised") is None
    (acked,) = s.stored(record("p1", "bearing_fault", acked_at=1003.0, acked_by="ops"))
    assert states(acked) == ("acknowledged", True, True, False, True)
    assert (acked.user, acked.time) == ("ops", 1003.0)
    assert s.refuse_acknowledge(acked.event_id) == "already_acked"
    inactive = s.step(pred(4, "healthy"))
    assert states(inactive) == ("inactive", False, True, False, True)  # unconfirmed: retained
    confirmed = s.stored(
        record("p1", "bearing_fault", acked_at=1003.0, confirmed_at=1005.0, confirmed_by="lead")
    )
    assert [states(c) for c in confirmed] == [("confirmed", False, True, True, False)]
    assert s.refuse_confirm(confirmed[0].event_id) == "already_confirmed"


def test_another_fault_while_active_is_a_new_alert() -> None:
    s = state()
    s.step(pred(1, "bearing_fault"))
    s.stored(record("p1", "bearing_fault", acked_at=1002.0, acked_by="ops"))
    other = s.step(pred(2, "cavitation"))
    assert states(other) == ("raised", True, False, True, True)
    assert other is not None and other.alert.prediction_id == "p2"
    # What the store says of the older alert changes nothing any more.
    assert s.stored(record("p1", "bearing_fault", acked_at=1002.0, confirmed_at=1003.0)) == []


def test_the_hold_raises_on_the_third_fault_in_a_row() -> None:
    s = state(hold=3)
    raised = [s.step(pred(i, label)) for i, label in enumerate(["bearing_fault", "healthy"] * 2)]
    assert raised == [None] * 4
    raised = [s.step(pred(10 + i, "bearing_fault")) for i in range(3)]
    assert raised[:2] == [None, None] and raised[2] is not None
    assert raised[2].alert.prediction_id == "p12"


def test_seed_from_the_store() -> None:
    still = state()
    snap = still.seed(record("p1", "bearing_fault"), "bearing_fault")
    assert states(snap) == ("raised", True, False, True, True)
    assert still.step(pred(5, "bearing_fault")) is None  # the rule goes on from the label

    recovered = state()
    snap = recovered.seed(record("p1", "bearing_fault", acked_at=1002.0), "healthy")
    assert states(snap) == ("acknowledged", False, True, False, True)

    done = state()
    closed = record("p1", "bearing_fault", acked_at=1002.0, confirmed_at=1003.0)
    assert done.seed(closed, "healthy") is None
    assert state().seed(None, "bearing_fault") is None
    assert state().seed(record("p1", "predictions_dropped"), None) is None  # not a label alert


def test_an_alert_stored_by_the_alert_writer_alone_is_taken_over() -> None:
    s = state()
    snaps = s.adopt(record("w9", "cavitation", acked_at=1002.0, acked_by="rest"))
    assert [states(x) for x in snaps] == [
        ("raised", True, False, True, True),
        ("acknowledged", True, True, False, True),
    ]
    assert s.step(pred(20, "cavitation")) is None  # the track took the alert's label
    older = AlarmRecord(6, "w8", "P1", "pump", "bearing_fault", "healthy", 900.0)
    assert s.adopt(older) == []  # the alarm moved on
    assert states(s.step(pred(21, "healthy"))) == ("inactive", False, True, False, True)


def test_a_removed_slot_sends_retain_false_once() -> None:
    s = state()
    s.step(pred(1, "bearing_fault"))
    assert states(s.removed(2000.0)) == ("removed", False, True, True, False)
    assert s.removed(2001.0) is None
