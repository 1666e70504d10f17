"""``TagTable.subscribe``: an output that keeps every value (the lakehouse's telemetry) gets
each applied sample once, normalized, in order; not the ones the deadband suppressed, not
backfilled history; its subscription survives a reload; a failing subscriber stops neither
normalization nor the others. A real mapping file through the loader."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.config import load_mapping
from bridge.runtime.reload import retable
from bridge.runtime.tagtable import TagTable
from bridge.types import Quality, TagReading, TagSample

MAPPING = """
version: 1
gateway: {id: unit, store: "sqlite:///unused.db"}
sources:
  plc: {kind: modbus, host: 127.0.0.1, port: 5020}
assets:
  pump:
    tags:
      level: {source: plc, address: {table: holding, address: 0, type: float32}, unit: m,
              scale: 0.1, deadband: 0.5}
      mode: {source: plc, address: {table: holding, address: 2, type: uint16}}
"""

WALL = 1_750_000_000.0


@pytest.fixture
def table(tmp_path: Path) -> TagTable:
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING)
    return TagTable(load_mapping(path, {}), wall_clock=lambda: WALL, monotonic_clock=lambda: 5.0)


def sample(tag: str, value: float, t: float, quality: Quality = Quality.GOOD) -> TagSample:
    return TagSample(tag, value, quality, received_time=t, source_time=t)


def test_every_applied_sample_reaches_the_subscriber_normalized_and_in_order(
    table: TagTable,
) -> None:
    got: list[TagReading] = []
    table.subscribe(got.extend)
    table.apply([sample("pump.level", 100, 1.0), sample("pump.mode", 2, 1.0)])
    # 102 * 0.1 = 10.2 moves 0.2 < deadband 0.5: suppressed, not handed over.
    table.apply([sample("pump.level", 102, 2.0), sample("pump.level", 120, 3.0)])
    table.apply([sample("pump.mode", 3, 4.0, Quality.BAD)])
    assert [(r.tag, r.value, r.source_time) for r in got] == [
        ("pump.level", 10.0, 1.0),
        ("pump.mode", 2, 1.0),
        ("pump.level", 12.0, 3.0),
        ("pump.mode", 3, 4.0),
    ]
    assert got[0].unit == "m" and got[0].asset == "pump" and got[0].name == "level"
    assert got[0].received_time == WALL
    assert [r.quality for r in got] == [Quality.GOOD] * 3 + [Quality.BAD]


def test_backfilled_history_and_unknown_tags_are_not_handed_over(table: TagTable) -> None:
    got: list[TagReading] = []
    table.subscribe(got.extend)
    past = TagSample("pump.mode", 1, Quality.GOOD, received_time=0.5, source_time=0.5)
    table.apply([TagSample(past.tag, past.value, past.quality, 0.5, 0.5, historical=True)])
    table.apply([sample("pump.nothing", 1, 1.0)])
    assert got == []
    assert table.backfilled == 1 and table.unknown == 1


def test_unsubscribe_and_a_failing_subscriber(table: TagTable) -> None:
    first: list[TagReading] = []
    second: list[TagReading] = []

    def broken(_: Sequence[TagReading]) -> None:
        raise RuntimeError("a bug in an output")

    stop_first = table.subscribe(first.extend)
    table.subscribe(broken)
    table.subscribe(second.extend)
    table.apply([sample("pump.mode", 1, 1.0)])
    stop_first()
    stop_first()  # twice is harmless
    table.apply([sample("pump.mode", 2, 2.0)])
    assert [r.value for r in first] == [1]
    assert [r.value for r in second] == [1, 2]
    assert table.get("pump.mode").value == 2  # normalization went on past the broken one


def test_the_subscription_survives_a_reload(table: TagTable, tmp_path: Path) -> None:
    got: list[TagReading] = []
    table.subscribe(got.extend)
    path = tmp_path / "m2.yaml"
    path.write_text(MAPPING.replace("address: 2, type: uint16}", "address: 4, type: uint16}"))
    retable(table, load_mapping(path, {}), keep_triggers=())
    table.apply([sample("pump.mode", 7, 1.0)])
    assert [(r.tag, r.value) for r in got] == [("pump.mode", 7)]
