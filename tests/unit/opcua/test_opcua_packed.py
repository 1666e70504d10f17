"""The packed frame between a source worker and the gateway gives back exactly what went in."""

from __future__ import annotations

import math

from bridge.connectors.opcua._packed import pack, unpack
from bridge.types import Quality, TagSample

NAMES = ["a.x", "a.y", "b.x", "b.y", "c.s", "c.big", "c.none", "c.flag", "c.int", "c.nan"]
POSITION = {n: i for i, n in enumerate(NAMES)}


def test_every_value_kind_quality_time_and_reason_round_trips() -> None:
    batch = [
        TagSample("a.x", 1.5, Quality.GOOD, 100.0, 99.0, 99.5),
        TagSample("b.y", -0.0, Quality.UNCERTAIN, 100.0, None, 99.5, "clamped"),
        TagSample("c.s", "running", Quality.GOOD, 100.25, 98.0, None),
        TagSample("c.big", 2**60 + 1, Quality.GOOD, 100.0),  # beyond float64's exact ints
        TagSample("c.none", None, Quality.BAD, 100.0, reason="BadNodeIdUnknown"),
        TagSample("c.flag", True, Quality.GOOD, 100.0),
        TagSample("c.int", -7, Quality.GOOD, 100.0),
        TagSample("a.y", False, Quality.GOOD, 100.0),
    ]
    back = unpack(pack(batch, POSITION), NAMES)
    assert back == batch
    # types, not only values: True == 1 == 1.0 would hide a bool that came back a float
    assert [type(s.value) for s in back] == [type(s.value) for s in batch]


def test_nan_values_stay_nan_and_timestamps_stay_none() -> None:
    (back,) = unpack(pack([TagSample("c.nan", math.nan, Quality.GOOD, 1.0)], POSITION), NAMES)
    assert isinstance(back.value, float) and math.isnan(back.value)
    assert back.source_time is None and back.server_time is None


def test_positions_index_the_receivers_list_and_empty_batches_work() -> None:
    frame = pack([TagSample("b.x", 3.0, Quality.GOOD, 1.0)], POSITION)
    (back,) = unpack(memoryview(frame), ["w", "x", "b.x-in-worker-0", "z"] * 3)
    assert back.tag == "b.x-in-worker-0"  # position 2 of whatever list the receiver holds
    assert unpack(pack([], POSITION), NAMES) == []


def test_historical_flags_cross_the_pipe_per_sample() -> None:
    batch = [
        TagSample("a.x", 1.0, Quality.GOOD, 10.0, 5.0, historical=True),
        TagSample("a.x", 2.0, Quality.GOOD, 10.0, 6.0),
        TagSample("b.x", 3.0, Quality.GOOD, 10.0, 5.5, historical=True),
    ]
    back = unpack(pack(batch, POSITION), NAMES)
    assert back == batch
    assert [s.historical for s in back] == [True, False, True]
