"""The object store away for 60 s: the rows wait in the spool (health says so), nothing is
refused, and once it is back the segments are committed in order, each exactly once.

Tests run as root, so a chmod would not stop the writes: the tables' parent directory is
replaced by a regular file for the outage (every path below it fails with ENOTDIR), then
put back."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable
from lakehouse_support import Feed, envelopes, lake_settings, prediction, reading
from support import wait_until

from bridge.connectors.lakehouse.destination import LakehouseDestination
from bridge.destination import DestinationContext

pytestmark = pytest.mark.timeout(180)

OUTAGE_S = 60.0


def _segments_in_commit_order(table: Path) -> list[int]:
    history = DeltaTable(str(table)).history()
    writes = [h for h in sorted(history, key=lambda h: h["version"]) if "bridge.segment" in h]
    return [int(h["bridge.segment"]) for h in writes]


async def test_an_unwritable_lake_for_60_s_keeps_the_backlog_then_flushes_it_in_order(
    tmp_path: Path,
) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    settings = lake_settings(tmp_path, uri=str(mount / "lake"))
    feed = Feed()
    lake = LakehouseDestination("lake", settings, DestinationContext("gw", samples=feed))
    await lake.start()
    sent = []
    seq = 0

    async def produce(seconds: float) -> None:
        nonlocal seq
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            batch = [prediction(f"p{a}", seq) for a in range(3)]
            assert await lake.deliver(envelopes(lake, batch)) == [None] * 3
            feed.publish([reading(f"p{a}", "x", float(seq), time.time()) for a in range(3)])
            sent.extend(batch)
            seq += 1
            await asyncio.sleep(0.1)

    away = tmp_path / "mount.away"
    try:
        await produce(1.0)
        await wait_until(lambda: (mount / "lake" / "predictions").is_dir(), 10, what="table")
        os.rename(mount, away)
        mount.write_text("not a directory: the object store is away")
        await produce(OUTAGE_S)
        health = lake.health()
        assert health.state == "degraded", health
        assert "predictions" in health.detail and "telemetry" in health.detail
        # Segments sealed by age all along, none committed: all kept.
        assert health.counters["predictions_backlog_segments"] > 10
        assert health.counters["telemetry_backlog_rows"] > 0
        committed_during = health.counters["predictions_committed_rows"]
    finally:
        if away.exists():
            mount.unlink()
            os.rename(away, mount)
    await produce(1.0)

    def flushed() -> bool:
        h = lake.health()
        return h.state == "ok" and h.counters["predictions_backlog_rows"] == 0

    await wait_until(flushed, 30, what="backlog committed after the outage")
    await lake.close()
    counters = lake.health().counters
    assert counters["predictions_committed_rows"] - committed_during > 3 * 10 * OUTAGE_S * 0.5
    ids = [str(i) for i in DeltaTable(str(mount / "lake" / "predictions")).to_pyarrow_table()["id"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {p.id for p in sent}
    for table in ("predictions", "telemetry"):
        segments = _segments_in_commit_order(mount / "lake" / table)
        assert segments == sorted(segments), f"{table} committed out of order: {segments}"
        assert len(segments) == len(set(segments))
