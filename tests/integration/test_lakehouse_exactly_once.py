"""Exactly once into Delta: kill -9 of a gateway process while it commits, then a restart; a
segment committed just before a crash; the outbox sending accepted predictions again; the
relay feeding the destination. Real processes, SQLite outbox, Delta tables in tmp_path."""

from __future__ import annotations

import asyncio
import json
import random
import signal
from pathlib import Path

import pytest
from lakehouse_support import (
    Feed,
    LakeGateway,
    envelopes,
    lake_settings,
    prediction,
    read_table,
    reading,
)
from outbox_harness import GATEWAY, stop_child
from sqlalchemy import create_engine, text
from support import spawn_ready, wait_until

from bridge.connectors.lakehouse.delta import DeltaTables
from bridge.connectors.lakehouse.destination import PARTITIONS, LakehouseDestination
from bridge.connectors.lakehouse.rows import (
    decode_prediction,
    encode_prediction,
    predictions_table,
)
from bridge.connectors.lakehouse.spool import TableSpool, read_segment
from bridge.destination import DestinationContext
from bridge.store.db import open_store
from bridge.types import Trigger

pytestmark = pytest.mark.timeout(120)

CHILD = Path(__file__).resolve().parents[1] / "lakehouse_child.py"


def _stored(db: Path) -> tuple[set[str], int]:
    """Ids of the predictions the store committed, and the outbox rows left."""
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            ids = {str(r[0]) for r in conn.execute(text("SELECT prediction_id FROM predictions"))}
            pending = int(conn.execute(text("SELECT count(*) FROM outbox")).scalar_one())
        return ids, pending
    finally:
        engine.dispose()


def _staged(root: Path) -> int:
    """Segments still in the spool (committed ones kept for their ids are in ``done/``)."""
    spool = root / "spool" / "lake"
    return sum(1 for t in ("predictions", "telemetry") for _ in (spool / t).glob("*.arrows"))


@pytest.mark.serial
async def test_kill_9_during_commits_then_restart_writes_every_prediction_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "gw.db"
    url = f"sqlite:///{db}"
    rng = random.Random(22)
    procs: list[asyncio.subprocess.Process] = []
    try:
        # Five gateways in a row, each killed after a random short time: commits run every
        # 50 ms, so the kills land before, inside and after Delta commits and spool appends.
        for round_ in range(5):
            child = await spawn_ready(CHILD, str(tmp_path), url, "produce", str(round_ * 100_000))
            procs.append(child)
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            assert await stop_child(child, signal.SIGKILL) == -signal.SIGKILL
        stored, _ = await asyncio.to_thread(_stored, db)
        assert len(stored) > 100

        drain = await spawn_ready(CHILD, str(tmp_path), url, "drain", "0")
        procs.append(drain)

        async def settled() -> bool:
            _, pending = await asyncio.to_thread(_stored, db)
            return pending == 0 and _staged(tmp_path) == 0

        await wait_until(settled, 60, what="outbox and spool empty")
        assert await stop_child(drain, signal.SIGTERM) == 0

        rows = read_table(tmp_path, "predictions")
        ids = rows["id"].to_list()
        assert len(ids) == len(set(ids)), "a prediction was written twice"
        assert set(ids) == stored  # every stored prediction, nothing else
        # Telemetry may lose the last second's buffer at a kill, never repeat a row.
        telemetry = read_table(tmp_path, "telemetry")
        assert telemetry.height > 0
        assert telemetry.select(["asset", "tag", "time"]).is_duplicated().sum() == 0
    finally:
        for p in procs:
            await stop_child(p, signal.SIGKILL)


async def test_a_segment_committed_just_before_a_crash_is_not_written_again(
    tmp_path: Path,
) -> None:
    settings = lake_settings(tmp_path)
    written = [prediction("p1", s) for s in range(10)]
    # The spool as a gateway left it: one sealed segment...
    spool_dir = tmp_path / "spool" / "lake"
    spool_dir.mkdir(parents=True)
    (spool_dir / "spool.json").write_text(json.dumps({"id": "crashed"}))
    spool = TableSpool(spool_dir, "predictions")
    bodies = [encode_prediction(Trigger(p), GATEWAY) for p in written]
    spool.append(predictions_table([decode_prediction(b) or {} for b in bodies]))
    spool.seal()
    (segment,) = spool.sealed()
    # ... whose commit went through just before the crash, before the segment was removed.
    tables = DeltaTables(settings.uri, {}, PARTITIONS)
    data = read_segment(segment.path)
    assert data is not None
    tables.append("predictions", data, f"bridge/{GATEWAY}/lake/crashed", segment.seq, 1 << 20)

    restarted = LakehouseDestination("lake", settings, DestinationContext(GATEWAY))
    await restarted.start()
    await wait_until(lambda: _staged(tmp_path) == 0, 10, what="the segment leaves the spool")
    await restarted.close()
    assert restarted.health().counters["predictions_commits"] == 0
    ids = read_table(tmp_path, "predictions")["id"].to_list()
    assert sorted(ids) == sorted(p.id for p in written)
    # A new segment of the restarted spool is a new number, committed.
    again = LakehouseDestination("lake", settings, DestinationContext(GATEWAY))
    await again.start()
    await again.deliver(envelopes(again, [prediction("p1", 10)]))
    await wait_until(lambda: _staged(tmp_path) == 0, 10, what="the new segment committed")
    await again.close()
    assert read_table(tmp_path, "predictions").height == 11


async def test_predictions_sent_again_after_a_restart_are_one_row(tmp_path: Path) -> None:
    settings = lake_settings(tmp_path)
    batch = [prediction(f"p{a}", s) for a in range(4) for s in range(5)]
    first = LakehouseDestination("lake", settings, DestinationContext(GATEWAY))
    await first.start()
    assert await first.deliver(envelopes(first, batch)) == [None] * 20
    await wait_until(lambda: _staged(tmp_path) == 0, 10, what="committed")
    await first.close()
    # The outbox did not record the acceptance (the gateway stopped first): it sends them
    # again, to a new process, after their segment was committed and again before.
    second = LakehouseDestination("lake", settings, DestinationContext(GATEWAY))
    await second.start()
    assert await second.deliver(envelopes(second, batch[:10])) == [None] * 10
    assert await second.deliver(envelopes(second, batch)) == [None] * 20
    assert second.health().counters["repeats"] == 30
    await second.close()
    ids = read_table(tmp_path, "predictions")["id"].to_list()
    assert sorted(ids) == sorted(p.id for p in batch)


async def test_predictions_through_the_outbox_reach_the_table_once(tmp_path: Path) -> None:
    store = await asyncio.to_thread(open_store, f"sqlite:///{tmp_path / 'gw.db'}")
    feed = Feed()
    g = LakeGateway(store, lake_settings(tmp_path), samples=feed)
    try:
        await g.start()
        written = [prediction(f"p{a}", s) for s in range(20) for a in range(10)]
        for s in range(20):
            await g.write(written[s * 10 : (s + 1) * 10])
            feed.publish([reading(f"p{a}", "x", float(s), 1714564800.0 + s) for a in range(10)])
        await wait_until(
            lambda: g.lake.health().counters["accepted"] == 200, 20, what="200 accepted"
        )
        await wait_until(lambda: g.backlog() == 0, 20, what="outbox delivered")
        await wait_until(lambda: _staged(tmp_path) == 0, 20, what="spool committed")
    finally:
        await g.close()
        store.dispose()
    rows = read_table(tmp_path, "predictions")
    assert sorted(rows["id"].to_list()) == sorted(p.id for p in written)
    # Per asset, the sequence as the store wrote it.
    for asset, group in rows.sort("time").group_by("asset"):
        assert group["seq"].to_list() == list(range(20)), asset
    assert read_table(tmp_path, "telemetry").height == 200


async def test_a_batch_delivered_twice_in_a_row_is_one_row(tmp_path: Path) -> None:
    """One delivery repeated at once (a relay whose record commit failed) is one row."""
    d = LakehouseDestination("lake", lake_settings(tmp_path), DestinationContext(GATEWAY))
    await d.start()
    batch = envelopes(d, [prediction("p1", s) for s in range(3)])
    assert await d.deliver(batch) == [None] * 3
    assert await d.deliver(batch) == [None] * 3
    await wait_until(lambda: _staged(tmp_path) == 0, 10, what="committed")
    await d.close()
    assert read_table(tmp_path, "predictions").height == 3
