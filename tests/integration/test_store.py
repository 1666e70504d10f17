"""Store repositories and StoreSink on a real SQLite file, and on PostgreSQL if a driver exists."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from stores import BACKENDS, stored_predictions, temp_store

from bridge.errors import StoreError
from bridge.store import PredictionRepository, Store, StoreSink, open_store
from bridge.types import InputSnapshot, Prediction, Quality

T0 = 1714564800.0


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "data/bridge.db") as s:
        yield s


def pred(
    asset: str, model: str, seq: int, ts: float, value: str | float | None = 1.0
) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"gw/{asset}/{model}/{seq}")),
        seq=seq,
        asset=asset,
        model=model,
        version="1.0.0",
        sha256="ef" * 32,
        value=value,
        score=0.25 * (seq % 4),
        quality=Quality.GOOD if seq % 3 else Quality.UNCERTAIN,
        timestamp=ts,
        input_age_s=0.1 * seq,
        inputs=(InputSnapshot(f"{asset}.temp", 20.0 + seq, Quality.GOOD, ts - 0.5),),
    )


def test_add_many_round_trip_newest_first(store: Store) -> None:
    repo = PredictionRepository(store)
    batch = [pred("p1", "health", i, T0 + i, value="ok" if i % 2 else 2.5 * i) for i in range(5)]
    repo.add_many(batch)
    assert stored_predictions(store) == list(reversed(batch))


def test_history_filters_and_limit(store: Store) -> None:
    PredictionRepository(store).add_many(
        [pred(a, "health", i, T0 + i) for i in range(10) for a in ("p1", "p2")]
    )

    assert {p.asset for p in stored_predictions(store, asset="p2")} == {"p2"}
    assert len(stored_predictions(store, asset="p2")) == 10
    window = stored_predictions(store, asset="p1", since=T0 + 3, until=T0 + 6)
    assert [p.seq for p in window] == [6, 5, 4, 3]  # inclusive, newest first
    assert [p.seq for p in stored_predictions(store, asset="p1", since=T0 + 8)] == [9, 8]
    assert [p.seq for p in stored_predictions(store, asset="p1", until=T0 + 1)] == [1, 0]
    assert len(stored_predictions(store, limit=7)) == 7
    assert stored_predictions(store, asset="nope") == []


def test_add_many_skips_already_stored_predictions(store: Store) -> None:
    repo = PredictionRepository(store)
    first = [pred("p1", "health", i, T0 + i) for i in range(3)]
    repo.add_many(first)
    repo.add_many([*first, pred("p1", "health", 3, T0 + 3)])
    assert [p.seq for p in stored_predictions(store)] == [3, 2, 1, 0]


def test_sqlite_runs_in_wal_mode_with_busy_timeout(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "dir" / "bridge.db"
    s = open_store(f"sqlite:///{db}")
    try:
        with s.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
        assert db.exists()
    finally:
        s.dispose()


def test_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        open_store("not a url")


async def test_store_sink_writes_batches_and_drains_on_close(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'sink.db'}")
    before = asyncio.all_tasks()
    sink = StoreSink(s, batch_size=50)
    try:
        await sink.start()
        batch = [pred(f"p{i % 3}", "health", i, T0 + i) for i in range(230)]
        for i in range(0, len(batch), 10):
            await sink.write(batch[i : i + 10])
        await sink.close()
        stored = stored_predictions(s)
        assert len(stored) == 230
        assert {p.id for p in stored} == {p.id for p in batch}
        health = sink.health()
        assert health.state == "stopped"
        assert health.counters["written"] == 230
        assert health.counters["batches"] >= 230 // 50
        assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()
        with pytest.raises(StoreError):
            await sink.write(batch[:1])
        assert sink.health().counters["dropped"] == 1  # refused, and counted as lost
    finally:
        await sink.close()
        s.dispose()


async def test_store_sink_full_queue_drops_oldest(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'sink.db'}")
    sink = StoreSink(s, queue_size=4, max_wait_s=0)  # no backpressure wait: drop at once
    try:
        batch = [pred("p1", "health", i, T0 + i) for i in range(7)]
        await sink.write(batch)  # not started: all wait in the queue
        assert sink.health().counters["dropped"] == 3
        await sink.start()
        await sink.close()
        assert [p.seq for p in stored_predictions(s)] == [6, 5, 4, 3]
    finally:
        await sink.close()
        s.dispose()
