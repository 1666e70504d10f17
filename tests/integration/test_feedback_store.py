"""Labels, feedback metrics, lineage and drift alerts in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from stores import BACKENDS, temp_store

from bridge.outbox.feed import Budget, OutboxFeed
from bridge.store import Store
from bridge.store.alerts import AlertFilter, AlertRepository, NewAlert
from bridge.store.drift import DriftAlertRepository, DriftOutboxEvent
from bridge.store.labels import LabelRepository
from bridge.store.lineage import LineageRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.repository import PredictionRepository
from bridge.types import Feedback, InputSnapshot, Prediction, Quality

T0 = 1714564800.0
REVISION = "ab" * 32


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "bridge.db") as s:
        yield s


def pred(seq: int, value: str | None = "healthy", quality: Quality = Quality.GOOD) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"gw/p1/health/{seq}")),
        seq=seq,
        asset="p1",
        model="health",
        version="1.0.0",
        sha256="ef" * 32,
        value=value,
        score=0.9,
        quality=quality,
        timestamp=T0 + seq,
        input_age_s=0.1,
        inputs=(InputSnapshot("p1.temp", 20.0 + seq, Quality.GOOD, T0 + seq - 0.5),),
    )


def feedback(p: Prediction, action: str, by: str = "anna") -> Feedback:
    return Feedback(p.id, p.asset, p.model, action, by, "rest", p.timestamp, p.value)  # type: ignore[arg-type]


def test_lineage_and_labels_round_trip(store: Store) -> None:
    batch = [pred(i) for i in range(1, 5)]
    PredictionRepository(store, REVISION).add_many(batch)
    labels = LabelRepository(store)
    labels.add(feedback(batch[0], "reject", "ops"), at=T0 + 4)
    labels.add(feedback(batch[0], "acknowledge"), at=T0 + 9)
    found = LineageRepository(store).get(batch[0].id)
    assert found is not None
    assert found.mapping_revision == REVISION
    assert found.prediction.sha256 == "ef" * 32
    assert found.prediction.inputs == batch[0].inputs
    assert [(r.action, r.by, r.at) for r in found.labels] == [
        ("reject", "ops", T0 + 4),
        ("acknowledge", "anna", T0 + 9),
    ]
    assert LineageRepository(store).get(str(uuid.uuid4())) is None


def test_feedback_metrics_hand_computed(store: Store) -> None:
    # 6 predictions: 4 Good with a value, 1 Bad, 1 Good without value (not decisions).
    batch = [pred(i) for i in range(1, 5)]
    batch += [pred(5, None, Quality.BAD), pred(6, None, Quality.GOOD)]
    PredictionRepository(store, REVISION).add_many(batch)
    labels = LabelRepository(store)
    labels.add(feedback(batch[0], "acknowledge"), at=T0 + 1 + 10)  # 10 s after prediction 1
    labels.add(feedback(batch[0], "reject"), at=T0 + 1 + 50)  # not its first answer
    labels.add(feedback(batch[1], "confirm"), at=T0 + 2 + 30)  # 30 s
    # Feedback stamped before its prediction counts as immediate, never negative.
    labels.add(feedback(batch[2], "acknowledge"), at=T0)
    m = labels.metrics()
    assert m.predictions == 4
    assert m.with_feedback == 3
    assert (m.acknowledged, m.confirmed, m.rejected) == (2, 1, 1)
    assert m.mean_time_to_acknowledge_s == pytest.approx((10 + 30 + 0) / 3)
    assert m.autonomous_decision_coverage == pytest.approx(3 / 4)
    # A period holding only predictions 3 and 4.
    m = labels.metrics(since=T0 + 3, until=T0 + 4)
    assert (m.predictions, m.with_feedback, m.rejected) == (2, 1, 0)
    assert m.autonomous_decision_coverage == pytest.approx(1.0)
    assert labels.metrics(since=T0 + 100).autonomous_decision_coverage is None


def test_drift_alert_and_its_events_are_stored_once(store: Store) -> None:
    repo = DriftAlertRepository(store)
    alert = NewAlert(str(uuid.uuid4()), "p1", "health", "drift", "", 3.2, T0)
    body = json.dumps({"event": "drift", "asset": "p1"})
    feeds = [
        OutboxFeed("mes", lambda p: None, Budget(100)),
        OutboxFeed("webhook-health", lambda p: None, Budget(100)),
    ]
    events = [DriftOutboxEvent(f, body) for f in feeds]
    assert repo.raise_alert(alert, body, events)
    assert [(f.added, f.pending) for f in feeds] == [(1, 1), (1, 1)]
    assert not repo.raise_alert(alert, body, events)  # a retried write adds nothing
    assert [(f.added, f.pending) for f in feeds] == [(1, 1), (1, 1)]
    [stored] = AlertRepository(store).page(AlertFilter(label="drift"), 10)
    assert (stored.asset, stored.score, json.loads(stored.detail or "")) == (
        "p1",
        3.2,
        {"event": "drift", "asset": "p1"},
    )
    outbox = OutboxRepository(store)
    for destination in ("mes", "webhook-health"):
        assert outbox.stats(destination).backlog == 1
