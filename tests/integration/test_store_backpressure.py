"""Backpressure instead of silent loss: a real model runner publishing into a real SQLite store
that another connection locks for a while (slow: writes wait in SQLite's busy handler; down:
writes fail with "database is locked" until the lock goes).

Every prediction the runner produced is either committed once the store is back, or counted as
dropped and alerted (an alert row per asset that lost predictions)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pump_mapping import pump_mapping
from support import wait_until

from bridge.config import load_mapping
from bridge.inference import LoadedModel
from bridge.runtime.fanout import PredictionFanout
from bridge.runtime.lossalerts import LOSS_LABEL, LossAlerts
from bridge.runtime.runner import ModelRunner
from bridge.runtime.tagtable import TagTable
from bridge.store.alerts import AlertFilter, AlertRepository
from bridge.store.db import Store, open_store
from bridge.store.sink import StoreSink
from bridge.types import ComponentHealth, Prediction, Quality

MODEL = Path(__file__).resolve().parents[2] / "mappings" / "models" / "pump_health.onnx"
ASSETS = ("pump-a", "pump-b", "pump-c")


class Recorder:
    """A live sink (like the HMI server) that keeps everything the runner published."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[Prediction] = []

    async def start(self) -> None:
        return None

    async def write(self, batch: Sequence[Prediction]) -> None:
        self.seen.extend(batch)

    async def close(self) -> None:
        return None

    def health(self) -> ComponentHealth:
        return ComponentHealth(self.name, "ok")


@dataclass
class Rig:
    db: Path
    store: Store
    sink: StoreSink
    alerts: LossAlerts
    runner: ModelRunner
    recorder: Recorder
    task: asyncio.Task[None] | None = None
    log: list[str] = field(default_factory=list)

    def committed(self) -> list[str]:
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            return [row[0] for row in conn.execute("SELECT prediction_id FROM predictions")]

    async def stop(self) -> None:
        """As the gateway stops: the runner first (maybe while it waits for room), then the
        store writer (drains), then the alerts."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.sink.close()
        await self.alerts.close()


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, max_wait_s: float) -> AsyncIterator[Rig]:
    path = tmp_path / "mapping.yaml"
    db = tmp_path / "bp.db"
    timing = {"period_s": 0.01, "window_s": 10}
    path.write_text(
        pump_mapping(store=db, model=MODEL, assets=ASSETS, gateway_id="bp", timing=timing)
    )
    mapping = load_mapping(path)
    store = open_store(f"sqlite:///{db}")
    alerts = LossAlerts(AlertRepository(store), max_backoff_s=0.2)
    sink = StoreSink(
        store,
        queue_size=30,
        batch_size=10,
        max_backoff_s=0.2,
        max_wait_s=max_wait_s,
        on_drop=alerts.raise_for,
    )
    recorder = Recorder()
    # The store is the last sink: live sinks get each prediction before the runner waits.
    fanout = PredictionFanout([recorder, sink])
    m = mapping.models["pump-health"]
    loaded = LoadedModel.load(MODEL)
    runner = ModelRunner(
        m, loaded, loaded.labels, TagTable(mapping).get, fanout.publish, "bp", "boot"
    )
    r = Rig(db, store, sink, alerts, runner, recorder)
    await alerts.start()
    await sink.start()
    try:
        r.task = asyncio.create_task(runner.run())
        yield r
    finally:
        await r.stop()
        store.dispose()


async def hold_write_lock(db: Path, seconds: float) -> None:
    """Another process's writer: an exclusive transaction on the same file for ``seconds``."""
    conn = sqlite3.connect(db, timeout=10, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(conn.execute, "BEGIN EXCLUSIVE")
        await asyncio.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_a_slow_store_holds_back_the_runner_and_loses_nothing(tmp_path: Path) -> None:
    async with rig(tmp_path, max_wait_s=30.0) as r:
        await wait_until(lambda: r.sink.health().counters["written"] >= 30, timeout=10)
        # Shorter than SQLite's busy timeout (5 s): the writer's commit just takes that long.
        await hold_write_lock(r.db, 2.0)
        await wait_until(lambda: r.sink.health().counters["written"] >= 120, timeout=10)
        waited_ms = r.runner.health().counters["backpressure_ms"]
        sink_health = r.sink.health()
    produced = [p.id for p in r.recorder.seen]
    committed = r.committed()
    assert r.sink.health().counters["dropped"] == 0
    assert len(committed) == len(set(committed))
    assert set(committed) == set(produced)
    assert len(produced) == len(set(produced))
    # The runner waited for room most of the 2 s and made far fewer than 600 predictions.
    assert waited_ms >= 1500, waited_ms
    assert sink_health.counters["waited_ms"] >= 1500
    assert AlertRepository(r.store).page(AlertFilter(label=LOSS_LABEL), 10) == []


async def test_a_store_that_is_down_drops_only_what_it_counts_and_alerts(tmp_path: Path) -> None:
    async with rig(tmp_path, max_wait_s=0.3) as r:
        await wait_until(lambda: r.sink.health().counters["written"] >= 30, timeout=10)
        # Longer than the busy timeout: commits fail ("database is locked") until it ends.
        lock = asyncio.create_task(hold_write_lock(r.db, 6.0))
        await wait_until(lambda: r.sink.health().counters["dropped"] > 0, timeout=5)
        during = r.sink.health()
        assert during.state == "degraded", during
        await lock
        written = r.sink.health().counters["written"]
        await wait_until(lambda: r.sink.health().counters["written"] >= written + 60, timeout=10)
        await wait_until(lambda: r.alerts.health().counters["stored"] >= 3, timeout=10)
        assert r.runner.health().counters["backpressure_ms"] >= 300
    health = r.sink.health()
    produced = [p.id for p in r.recorder.seen]
    committed = r.committed()
    dropped = health.counters["dropped"]
    assert health.counters["errors"] >= 1  # the writer saw the store down
    assert dropped > 0
    assert len(committed) == len(set(committed))
    assert set(committed) <= set(produced)
    # Nothing vanished: what is not in the store was counted as dropped.
    assert len(committed) + dropped == len(produced)
    alerts = AlertRepository(r.store).page(AlertFilter(label=LOSS_LABEL), 10)
    # One alert per asset for this episode, naming a prediction that did not make it.
    assert sorted(a.asset for a in alerts) == sorted(ASSETS)
    assert {a.prediction_id for a in alerts} <= set(produced) - set(committed)


async def test_a_sink_that_may_not_wait_drops_the_oldest_and_reports_them(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'nowait.db'}")
    lost: list[Prediction] = []
    sink = StoreSink(store, queue_size=4, max_wait_s=0, on_drop=lambda ps, _why: lost.extend(ps))
    try:
        batch = [
            Prediction(f"id-{i}", i, "a", "m", "1", "ab" * 32, 1.0, None, Quality.GOOD, i, 0.0)
            for i in range(7)
        ]
        await sink.write(batch)  # not started: nothing makes room
        assert sink.health().counters["dropped"] == 3
        assert [p.seq for p in lost] == [0, 1, 2]
    finally:
        await sink.close()
        store.dispose()
    # Closing with rows unwritten reports them too: all seven are accounted for.
    assert [p.seq for p in lost] == list(range(7))


async def test_a_commit_still_running_when_the_writer_stops_is_counted_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "settle.db"
    store = open_store(f"sqlite:///{db}")
    lost: list[Prediction] = []
    sink = StoreSink(store, drain_timeout_s=0.2, on_drop=lambda ps, _why: lost.extend(ps))
    lock = asyncio.create_task(hold_write_lock(db, 1.5))
    try:
        await asyncio.sleep(0.2)  # the lock is held
        await sink.start()
        batch = [
            Prediction(f"id-{i}", i, "a", "m", "1", "ab" * 32, 1.0, None, Quality.GOOD, i, 0.0)
            for i in range(5)
        ]
        await sink.write(batch)
        # Stops while the commit waits in SQLite's busy handler; the lock ends meanwhile and the
        # commit goes through: the rows are stored, so they are not counted as lost.
        await sink.close()
        await lock
    finally:
        lock.cancel()
        store.dispose()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        stored = conn.execute("SELECT count(*) FROM predictions").fetchone()[0]
    assert stored == 5
    assert sink.health().counters["written"] == 5
    assert sink.health().counters["dropped"] == 0
    assert lost == []
