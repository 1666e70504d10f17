"""Supervised workers: the store writer and the queued writers restart on any exception, with
backoff, count their restarts in health and commit later items into a real SQLite file."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from stores import stored_predictions
from support import wait_until

from bridge.runtime.alertsink import AlertSink
from bridge.store.alerts import AlertFilter, AlertRepository, NewAlert
from bridge.store.db import Store, open_store
from bridge.store.repository import PredictionRepository
from bridge.store.sink import StoreSink
from bridge.types import Prediction, PredictionSlot, Quality

T0 = 1714564800.0


def pred(asset: str, seq: int, value: str = "healthy") -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"restart/{asset}/{seq}")),
        seq=seq,
        asset=asset,
        model="health",
        version="1",
        sha256="ab" * 32,
        value=value,
        score=0.5,
        quality=Quality.GOOD,
        timestamp=T0 + seq,
        input_age_s=0.1,
    )


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = open_store(f"sqlite:///{tmp_path / 'restart.db'}")
    yield s
    s.dispose()


class Faulty:
    """Wraps a real repository method: the first ``times`` calls raise, the rest go through."""

    def __init__(self, real: Any, times: int, error: Exception) -> None:
        self.real, self.times, self.error, self.calls = real, times, error, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return self.real(*args)


async def test_store_writer_restarts_after_a_crash_and_commits_later_items(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = PredictionRepository.add_many
    faulty = Faulty(real, 2, RuntimeError("a bug in the writer"))

    def add_many(self: PredictionRepository, batch: Sequence[Prediction], *rest: Any) -> int:
        refused: int = faulty(self, batch, *rest)  # how many the fencing check refused
        return refused

    monkeypatch.setattr(PredictionRepository, "add_many", add_many)
    sink = StoreSink(store, batch_size=5, max_backoff_s=0.05)
    await sink.start()
    try:
        first = [pred("p1", i) for i in range(5)]
        await sink.write(first)
        await wait_until(lambda: sink.health().counters["written"] == 5, timeout=5)
        later = [pred("p1", i) for i in range(5, 12)]
        await sink.write(later)
        await wait_until(lambda: sink.health().counters["written"] == 12, timeout=5)
        health = sink.health()
        assert health.state == "ok", health
        assert health.counters["restarts"] == 2
        assert health.counters["dropped"] == 0
    finally:
        await sink.close()
    stored = stored_predictions(store)
    assert sorted(p.seq for p in stored) == list(range(12))


async def test_store_writer_that_keeps_failing_is_degraded_with_its_last_error(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def add_many(self: PredictionRepository, *args: Any) -> int:
        raise ValueError("cannot encode this row")

    monkeypatch.setattr(PredictionRepository, "add_many", add_many)
    dropped: list[tuple[int, str]] = []
    sink = StoreSink(
        store,
        batch_size=5,
        max_backoff_s=0.02,
        on_drop=lambda preds, why: dropped.append((len(preds), why)),
    )
    await sink.start()
    try:
        await sink.write([pred("p1", i) for i in range(5)])
        await wait_until(lambda: sink.health().counters["restarts"] >= 3, timeout=5)
        health = sink.health()
        assert health.state == "degraded"
        assert "ValueError: cannot encode this row" in health.detail
        # A batch that crashes the writer again and again is set aside, counted and alerted,
        # so it cannot block every later prediction.
        await wait_until(lambda: sink.health().counters["dropped"] == 5, timeout=5)
        assert dropped and dropped[0][0] == 5 and "ValueError" in dropped[0][1]
    finally:
        await sink.close()


async def test_queued_writer_restarts_after_a_crash_and_stores_later_alerts(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = AlertRepository.add_many
    faulty = Faulty(real, 1, RuntimeError("alert writer bug"))

    def add_many(self: AlertRepository, alerts: Sequence[NewAlert]) -> None:
        faulty(self, alerts)

    monkeypatch.setattr(AlertRepository, "add_many", add_many)
    slots = [PredictionSlot("p1", "health", "1", "ab" * 32, ("healthy", "bearing_fault"))]
    sink = AlertSink(AlertRepository(store), slots, max_backoff_s=0.05)
    await sink.start()
    try:
        await sink.write([pred("p1", 1, "bearing_fault")])
        await wait_until(lambda: sink.health().counters["stored"] == 1, timeout=5)
        await sink.write([pred("p1", 2, "healthy"), pred("p1", 3, "bearing_fault")])
        await wait_until(lambda: sink.health().counters["stored"] == 2, timeout=5)
        health = sink.health()
        assert health.state == "ok", health
        assert health.counters["restarts"] == 1
    finally:
        await sink.close()
    alerts = AlertRepository(store).page(AlertFilter(), 10)
    assert sorted(a.prediction_id for a in alerts) == sorted([pred("p1", 1).id, pred("p1", 3).id])
