"""A tag's ``heartbeat_s``: ``TagTable.readings`` repeats an unchanged tag every ``heartbeat_s``
(``heartbeat=True``, same value, the source time of that value), a change restarts the count,
and a tag whose source stopped answering is never repeated as Good. Stepped clocks, a real
mapping file through the loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load_mapping
from bridge.errors import ConfigError
from bridge.runtime.reload import retable
from bridge.runtime.tagtable import TagTable
from bridge.types import Quality, TagReading, TagSample

MAPPING = """
version: 1
gateway: {id: unit, store: "sqlite:///unused.db"}
sources:
  plc: {kind: modbus, host: 127.0.0.1, port: 5020}
  scada: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
assets:
  pump:
    tags:
      level: {source: plc, address: {table: holding, address: 0, type: float32}, unit: m,
              deadband: 0.5, max_age_s: 25, heartbeat_s: 10}
      mode: {source: plc, address: {table: holding, address: 2, type: uint16}, max_age_s: 30,
             heartbeat_s: 10}
      speed: {source: plc, address: {table: holding, address: 3, type: uint16}, max_age_s: 30}
      setpoint: {source: scada, address: "nsu=urn:t;s=SP", max_age_s: 5, heartbeat_s: 10}
"""


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_750_000_000.0

    def step(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table(tmp_path: Path, clock: Clock) -> TagTable:
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING)
    return TagTable(
        load_mapping(path, {}), wall_clock=lambda: clock.wall, monotonic_clock=lambda: clock.mono
    )


class Reader:
    """An output polling ``readings`` as the UNS does: each poll from the previous one on."""

    def __init__(self, table: TagTable, clock: Clock) -> None:
        self.table, self.clock, self.since = table, clock, 0.0

    def poll(self) -> dict[str, TagReading]:
        started = self.clock.mono
        got = self.table.readings(self.since)
        self.since = started
        assert len({r.tag for r in got}) == len(got), "a tag twice in one poll"
        return {r.tag: r for r in got}


def sample(tag: str, value: float | str, at: float, quality: Quality = Quality.GOOD) -> TagSample:
    return TagSample(tag, value, quality, received_time=at, source_time=at)


def test_an_unchanged_value_is_repeated_every_heartbeat_with_its_source_time(
    table: TagTable, clock: Clock
) -> None:
    reader = Reader(table, clock)
    table.apply([sample("pump.level", 2.0, 111.0), sample("pump.speed", 1480.0, 111.0)])
    clock.step(0.5)  # polls fall between samples, as on a real clock
    first = reader.poll()
    assert set(first) == {"pump.level", "pump.speed"}
    assert not first["pump.level"].heartbeat

    beats: list[tuple[float, TagReading]] = []
    for _ in range(24):  # 24 s (within max_age_s) in polls of 1 s: heartbeats at 10 and 20 s
        clock.step(1.0)
        got = reader.poll()
        assert "pump.speed" not in got  # no heartbeat_s: an unchanged tag stays silent
        if "pump.level" in got:
            beats.append((clock.mono - 1000.0, got["pump.level"]))
    assert [at for at, _ in beats] == [10.5, 20.5]
    for _, beat in beats:
        assert beat.heartbeat and beat.value == 2.0 and beat.quality is Quality.GOOD
        assert beat.source_time == 111.0  # the value's own time, never a new one
        assert beat.unit == "m" and (beat.asset, beat.name) == ("pump", "level")


def test_a_change_restarts_the_count(table: TagTable, clock: Clock) -> None:
    reader = Reader(table, clock)
    table.apply([sample("pump.level", 2.0, 1.0)])
    clock.step(0.5)
    reader.poll()
    clock.step(6.0)
    table.apply([sample("pump.level", 3.0, 2.0)])  # past the 0.5 deadband: a change (at 6.5 s)
    clock.step(0.5)
    changed = reader.poll()["pump.level"]
    assert not changed.heartbeat and changed.value == 3.0
    clock.step(4.0)  # 11 s after the first value, 4.5 s after the change: no heartbeat
    assert reader.poll() == {}
    clock.step(6.0)  # 10.5 s after the change
    beat = reader.poll()["pump.level"]
    assert beat.heartbeat and beat.value == 3.0 and beat.source_time == 2.0


def test_samples_in_the_deadband_are_unchanged_and_keep_the_tag_good(
    table: TagTable, clock: Clock
) -> None:
    reader = Reader(table, clock)
    table.apply([sample("pump.level", 2.0, 1.0)])
    clock.step(0.5)
    reader.poll()
    beats = []
    for n in range(1, 46):  # 45 s, longer than max_age_s (25): the source still answers
        clock.step(1.0)
        table.apply([sample("pump.level", 2.0 + (0.2 if n % 2 else 0.0), 1.0 + n)])
        got = reader.poll()
        if "pump.level" in got:
            beats.append(got["pump.level"])
    assert len(beats) == 4  # at 10, 20, 30, 40 s
    assert all(b.heartbeat and b.quality is Quality.GOOD for b in beats)
    assert all(b.value == 2.0 and b.source_time == 1.0 for b in beats)
    assert beats[-1].received_time == 1_750_000_040.5  # heard then (within the deadband)


def test_a_value_equal_to_the_last_one_is_unchanged(table: TagTable, clock: Clock) -> None:
    """``mode`` has no deadband: a polled register that holds still sends the same value."""
    reader = Reader(table, clock)
    table.apply([sample("pump.mode", "auto", 1.0)])
    clock.step(0.5)
    reader.poll()
    beats = []
    for n in range(1, 21):
        clock.step(1.0)
        table.apply([sample("pump.mode", "auto", 1.0 + n)])
        got = reader.poll()
        if got.get("pump.mode") is not None and got["pump.mode"].heartbeat:
            beats.append((clock.mono - 1000.0, got["pump.mode"]))
    assert [at for at, _ in beats] == [10.5, 20.5]
    assert all(b.value == "auto" and b.source_time == 1.0 for _, b in beats)


def test_a_source_that_stops_answering_turns_bad_and_its_heartbeats_say_so(
    table: TagTable, clock: Clock
) -> None:
    reader = Reader(table, clock)
    table.apply([sample("pump.level", 2.0, 1.0), sample("pump.speed", 1480.0, 1.0)])
    clock.step(0.5)
    reader.poll()
    seen: dict[float, TagReading] = {}
    for _ in range(50):  # nothing heard from now on
        clock.step(1.0)
        got = reader.poll()
        assert "pump.speed" not in got  # without heartbeat_s only models judge its age
        if "pump.level" in got:
            seen[clock.mono - 1000.0] = got["pump.level"]
    assert sorted(seen) == [10.5, 20.5, 25.5, 30.5, 40.5, 50.5]
    assert seen[10.5].quality is seen[20.5].quality is Quality.GOOD
    turned = seen[25.5]  # max_age_s (25) passed: published at once, not at the next heartbeat
    assert not turned.heartbeat and turned.quality is Quality.BAD
    assert turned.reason == "stale: nothing heard from the source for 25.5 s"
    for at in (30.5, 40.5, 50.5):
        beat = seen[at]
        assert beat.heartbeat and beat.quality is Quality.BAD and "stale" in beat.reason
        assert beat.value == 2.0 and beat.source_time == 1.0  # the last value, its own time
        assert beat.received_time == 1_750_000_000.0  # when it was last heard

    clock.step(1.0)
    table.apply([sample("pump.level", 2.1, 99.0)])  # back: in the deadband, but heard
    clock.step(8.0)
    assert reader.poll() == {}
    clock.step(1.0)  # the next heartbeat (60 s) is Good again
    back = reader.poll()["pump.level"]
    assert back.heartbeat and back.quality is Quality.GOOD and back.reason == ""


def test_a_lost_source_is_repeated_as_bad(table: TagTable, clock: Clock) -> None:
    reader = Reader(table, clock)
    table.apply([sample("pump.level", 2.0, 1.0)])
    clock.step(0.5)
    reader.poll()
    clock.step(4.0)
    table.mark_bad(["pump.level"], "source plc down: connection refused")
    clock.step(0.5)
    lost = reader.poll()["pump.level"]
    assert not lost.heartbeat and lost.quality is Quality.BAD
    clock.step(10.0)  # 10.5 s after it went Bad
    beat = reader.poll()["pump.level"]
    assert beat.heartbeat and beat.quality is Quality.BAD
    assert beat.reason == "source plc down: connection refused"
    assert beat.value == 2.0 and beat.source_time == 1.0

    clock.step(1.0)
    table.apply([sample("pump.level", 2.0, 50.0)])  # the source is back: a change at once
    clock.step(0.5)
    back = reader.poll()["pump.level"]
    assert not back.heartbeat and back.quality is Quality.GOOD and back.source_time == 50.0


def test_each_reader_gets_the_heartbeats_at_its_own_pace(table: TagTable, clock: Clock) -> None:
    fast, slow = Reader(table, clock), Reader(table, clock)
    table.apply([sample("pump.level", 2.0, 1.0)])
    clock.step(0.5)
    fast.poll()
    slow.poll()
    fast_beats = slow_beats = 0
    for n in range(1, 49):  # 24 s
        clock.step(0.5)
        fast_beats += "pump.level" in fast.poll()
        if n % 6 == 0:  # every 3 s
            slow_beats += "pump.level" in slow.poll()
    assert fast_beats == 2  # at 10 s and 20 s
    assert slow_beats == 2  # in its polls at 12.5 s and 21.5 s


def test_a_reload_keeps_the_pace_of_an_unchanged_tag(
    tmp_path: Path, table: TagTable, clock: Clock
) -> None:
    reader = Reader(table, clock)
    table.apply([sample("pump.level", 2.0, 1.0)])
    clock.step(0.5)
    reader.poll()
    clock.step(4.0)
    table.apply([sample("pump.level", 2.2, 5.0)])  # in the deadband: heard, unchanged
    reader.poll()
    path = tmp_path / "reloaded.yaml"
    path.write_text(
        MAPPING + "      flow: {source: plc, address: {table: holding, address: 4, type: uint16}}\n"
    )
    retable(table, load_mapping(path, {}), ())  # another tag added: level is unchanged
    got = []
    for _ in range(12):
        clock.step(1.0)
        if "pump.level" in (now := reader.poll()):
            got.append((clock.mono - 1000.0, now["pump.level"]))
    assert [at for at, _ in got] == [10.5]
    assert got[0][1].heartbeat and got[0][1].source_time == 1.0


def test_a_never_heard_tag_is_not_repeated(table: TagTable, clock: Clock) -> None:
    reader = Reader(table, clock)
    for _ in range(30):
        clock.step(1.0)
        assert reader.poll() == {}


@pytest.mark.parametrize("value", ["0", "-5"])
def test_heartbeat_s_must_be_positive(tmp_path: Path, value: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING.replace("heartbeat_s: 10}", f"heartbeat_s: {value}}}", 1))
    with pytest.raises(ConfigError) as info:
        load_mapping(path, {})
    (issue,) = info.value.issues
    assert issue.key == "assets.pump.tags.level.heartbeat_s"
    assert issue.line == 11 and issue.file.endswith("m.yaml")
    assert "greater than 0" in str(issue)


def test_a_source_reporting_by_exception_is_not_stale_while_it_is_up(
    table: TagTable, clock: Clock
) -> None:
    """OPC UA sends nothing while a value holds still: its silence beyond max_age_s is no sign
    of death (a lost session marks the tags Bad), so its heartbeats stay Good."""
    reader = Reader(table, clock)
    table.apply([sample("pump.setpoint", 42.0, 1.0)])
    beats = []
    for _ in range(35):
        clock.step(1.0)
        if "pump.setpoint" in (now := reader.poll()):
            beats.append(now["pump.setpoint"])
    assert len(beats) == 4  # the change, then a heartbeat every 10 s
    assert all(b.quality is Quality.GOOD and b.source_time == 1.0 for b in beats)
    assert all(b.heartbeat for b in beats[1:])
    table.mark_bad(["pump.setpoint"], "session 0 of scada down: connection lost")
    clock.step(1.0)
    (lost,) = reader.poll().values()
    assert lost.quality is Quality.BAD and "connection lost" in lost.reason
