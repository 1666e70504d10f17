"""``TagTable.readings``: what an output publishing tag values (the UNS) sees — the tags whose
value, quality or reason changed since a moment, normalized, with their unit; a deadband
suppressed sample is no change, a lost source is one."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load_mapping
from bridge.runtime.tagtable import TagTable
from bridge.types import Quality, TagSample

MAPPING = """
version: 1
gateway: {id: unit, store: "sqlite:///unused.db"}
sources:
  plant: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
assets:
  pump:
    tags:
      temp: {source: plant, address: "nsu=urn:t;s=T", unit: degF, convert_to: degC,
             deadband: 0.5}
      run: {source: plant, address: "nsu=urn:t;s=R"}
"""


class Clock:
    def __init__(self) -> None:
        self.mono = 100.0

    def tick(self) -> float:
        self.mono += 1.0
        return self.mono


def table(tmp_path: Path, clock: Clock) -> TagTable:
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING)
    return TagTable(
        load_mapping(path, {}),
        wall_clock=lambda: 1_750_000_000.0,
        monotonic_clock=lambda: clock.mono,
    )


def test_readings_are_the_changes_since_a_moment(tmp_path: Path) -> None:
    clock = Clock()
    tags = table(tmp_path, clock)
    assert tags.readings(0.0) == []  # nothing heard yet: nothing to publish

    clock.tick()
    tags.apply([TagSample("pump.temp", 212.0, Quality.GOOD, 1.0, source_time=5.0)])
    (reading,) = tags.readings(0.0)
    assert (reading.tag, reading.asset, reading.name) == ("pump.temp", "pump", "temp")
    assert reading.value == pytest.approx(100.0) and reading.unit == "degC"  # degF -> degC
    assert reading.quality is Quality.GOOD and reading.source_time == 5.0

    since = clock.tick() + 0.5
    clock.tick()
    tags.apply([TagSample("pump.temp", 212.5, Quality.GOOD, 2.0)])  # 0.28 degC: in the deadband
    assert tags.readings(since) == []
    tags.apply([TagSample("pump.run", True, Quality.GOOD, 2.0)])
    assert [r.tag for r in tags.readings(since)] == ["pump.run"]

    since = clock.tick() + 0.5
    clock.tick()
    tags.mark_bad(["pump.temp", "pump.run"], "source plant down: refused")
    lost = tags.readings(since)
    assert {r.tag for r in lost} == {"pump.temp", "pump.run"}
    assert all(r.quality is Quality.BAD and "refused" in r.reason for r in lost)
