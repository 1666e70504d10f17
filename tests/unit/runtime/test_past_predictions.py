"""Predictions for the past over a backfilled gap (a model's ``backfill: {predictions: true}``):
the real tag table, model runner and an ONNX model, on a clock the test moves.

The reference is the same samples arriving live: at every past time the features read from
the backfilled windows as of that time are those a live tick at that time computed, and so are
the predictions."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from insight_models import linear_regressor
from support import wait_until

from bridge.config import load_mapping
from bridge.config.resolved import Mapping
from bridge.features.vector import build_batch
from bridge.inference import LoadedModel
from bridge.runtime import runner as runner_module
from bridge.runtime.runner import ModelRunner
from bridge.runtime.tagtable import TagTable
from bridge.types import Prediction, Quality, TagSample

WALL0 = 1_750_000_000.0
MONO0 = 5_000.0
RATE_HZ = 10
OUTAGE = (20.0, 60.0)  # seconds after start: the link is down, the server keeps history
HISTORY_UNTIL = 50.0  # the server's history of x holds values up to here

MAPPING = """
version: 1
gateway: {{id: unit, store: "sqlite:///{store}"}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}}
assets:
  pump:
    tags:
      x: {{source: plant, address: "nsu=urn:t;s=X", max_age_s: 3}}
      y: {{source: plant, address: "nsu=urn:t;s=Y", max_age_s: 3}}
models:
  m:
    file: {model}
    version: "1"
    assets: [pump]
    period_s: 1
    window_s: 10
    min_window_s: 5
    outputs: {{value: value}}
{backfill}    features:
      - {{tag: x, stat: mean}}
      - {{tag: x, stat: std}}
      - {{tag: x, stat: min}}
      - {{tag: x, stat: max}}
      - {{tag: x, stat: slope}}
      - {{tag: x, stat: last}}
      - {{tag: y, stat: mean}}
"""


class Clock:
    def __init__(self) -> None:
        self.s = 0.0  # seconds since start

    def wall(self) -> float:
        return WALL0 + self.s

    def mono(self) -> float:
        return MONO0 + self.s


def _x(s: float) -> float:
    return 10.0 + 3.0 * math.sin(s / 4.0) + (s % 7.0) / 7.0


def _mapping(tmp_path: Path, *, predictions: bool) -> Mapping:
    # value = sum of the features: every feature counts in the comparison.
    model = linear_regressor(tmp_path / "m.onnx", [1.0] * 7, [0.0] * 7, [1.0] * 7)
    backfill = "    backfill: {predictions: true}\n" if predictions else ""
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING.format(store=tmp_path / "b.db", model=model, backfill=backfill))
    return load_mapping(path)


def _table(mapping: Mapping, clock: Clock) -> TagTable:
    return TagTable(mapping, wall_clock=clock.wall, monotonic_clock=clock.mono)


def _runner(mapping: Mapping, table: TagTable, clock: Clock, out: list[Prediction]) -> ModelRunner:
    async def publish(batch: Sequence[Prediction]) -> None:
        out.extend(batch)

    return ModelRunner(
        mapping.models["m"],
        LoadedModel.load(mapping.models["m"].path),
        (),
        table.get,
        publish,
        "unit",
        "boot",
        wall_clock=clock.wall,
        monotonic_clock=clock.mono,
        past=table.take_past,
    )


def _sample(tag: str, s: float, value: float, *, historical: bool = False) -> TagSample:
    received = WALL0 + (OUTAGE[1] if historical else s)
    return TagSample(f"pump.{tag}", value, Quality.GOOD, received, WALL0 + s, historical=historical)


def _steps(start: float, stop: float) -> list[float]:
    """Sample times at RATE_HZ in (start, stop]."""
    first = round(start * RATE_HZ) + 1
    return [k / RATE_HZ for k in range(first, round(stop * RATE_HZ) + 1)]


def _live(table: TagTable, clock: Clock, start: float, stop: float) -> None:
    for s in _steps(start, stop):
        clock.s = s
        table.apply([_sample("x", s, _x(s)), _sample("y", s, 5.0)])


def _outage_then_backfill(table: TagTable, clock: Clock) -> None:
    """Live until the outage, the tags Bad during it, then the reconnect's one batch: x's
    history of the gap (y's server keeps none), then the live values."""
    _live(table, clock, 0.0, OUTAGE[0])
    table.mark_bad(["pump.x", "pump.y"], "connection lost")
    clock.s = OUTAGE[1]
    history = [_sample("x", s, _x(s), historical=True) for s in _steps(OUTAGE[0], HISTORY_UNTIL)]
    table.apply([*history, _sample("x", OUTAGE[1], _x(OUTAGE[1])), _sample("y", OUTAGE[1], 5.0)])


def _full_backfill(table: TagTable, clock: Clock) -> None:
    """The outage, then both tags' history of (20, 50] s and the live values of 60 s."""
    _live(table, clock, 0.0, OUTAGE[0])
    table.mark_bad(["pump.x", "pump.y"], "connection lost")
    clock.s = OUTAGE[1]
    table.apply(
        [
            *(_sample("x", s, _x(s), historical=True) for s in _steps(20.0, 50.0)),
            *(_sample("y", s, 5.0, historical=True) for s in _steps(20.0, 50.0)),
            _sample("x", OUTAGE[1], _x(OUTAGE[1])),
            _sample("y", OUTAGE[1], 5.0),
        ]
    )


async def test_windows_as_of_a_past_time_are_those_a_live_tick_read_then(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, predictions=True)
    model = mapping.models["m"]
    # The reference: y's history too, so every input is fresh at every past time.
    clock_r = Clock()
    reference = _table(mapping, clock_r)
    live_x: dict[float, np.ndarray] = {}
    for s in _steps(0.0, HISTORY_UNTIL):
        clock_r.s = s
        reference.apply([_sample("x", s, _x(s)), _sample("y", s, 5.0)])
        if s == round(s) and s > OUTAGE[0]:
            batch = build_batch(model, reference.get, clock_r.mono())
            assert len(batch.runnable) == 1, batch.blocked
            live_x[s] = batch.x[0]

    clock = Clock()
    table = _table(mapping, clock)
    _live(table, clock, 0.0, OUTAGE[0])
    table.mark_bad(["pump.x", "pump.y"], "connection lost")
    clock.s = OUTAGE[1]
    history = [
        _sample(tag, s, _x(s) if tag == "x" else 5.0, historical=True)
        for tag in ("x", "y")
        for s in _steps(OUTAGE[0], HISTORY_UNTIL)
    ]
    table.apply([*history, _sample("x", 60.0, _x(60.0)), _sample("y", 60.0, 5.0)])

    [backfill] = table.take_past("m")
    assert table.take_past("m") == []  # taken
    first, last = backfill.spans["pump"]
    assert first == pytest.approx(MONO0 + 20.1) and last == pytest.approx(MONO0 + HISTORY_UNTIL)
    for s, want in live_x.items():
        t = MONO0 + s
        batch = build_batch(model, backfill.as_of(t), t)
        assert len(batch.runnable) == 1, (s, batch.blocked)
        np.testing.assert_allclose(batch.x[0], want, rtol=1e-6, err_msg=f"at {s} s")
    # The live rings are back to their horizon: the gap went to the copies, not the table.
    ring = table.get("pump.x").ring
    assert ring is not None and ring.allocated < 2 * 10 * RATE_HZ


async def test_past_predictions_every_period_over_the_gap_flagged_and_in_order(
    tmp_path: Path,
) -> None:
    mapping = _mapping(tmp_path, predictions=True)
    # The reference runner sees x's samples live and ticks at every whole second.
    clock_r = Clock()
    reference = _table(mapping, clock_r)
    made_live: list[Prediction] = []
    ref_runner = _runner(mapping, reference, clock_r, made_live)
    for s in _steps(0.0, HISTORY_UNTIL):
        clock_r.s = s
        reference.apply([_sample("x", s, _x(s)), _sample("y", s, 5.0)])
        if s == round(s) and s > OUTAGE[0]:
            await ref_runner.tick()
    want = {p.timestamp: p for p in made_live}

    clock = Clock()
    table = _table(mapping, clock)
    made: list[Prediction] = []
    runner = _runner(mapping, table, clock, made)
    _outage_then_backfill(table, clock)
    await runner._safe_tick(None)

    past, now = made[:-1], made[-1]
    # y has no history: as of a past time it is stale once 3 s (its max_age_s) passed since
    # its last live value at 20 s, and those times get no prediction (the live tick of then
    # said why already).
    assert [p.timestamp - WALL0 for p in past] == [21.0, 22.0, 23.0]
    for p in past:
        ref = want[p.timestamp]
        assert p.historical and p.quality is Quality.GOOD
        assert p.value == pytest.approx(ref.value, rel=1e-6)
        # The inputs as they were then, with their source times.
        x_input = next(i for i in p.inputs if i.tag == "pump.x")
        assert x_input.source_time == pytest.approx(p.timestamp)
        assert x_input.value == pytest.approx(_x(p.timestamp - WALL0))
    assert runner.past_skipped == 27  # 24 .. 50 s
    # Sequence numbers follow time: the past first, then the tick of now, which is live.
    assert [p.seq for p in made] == [1, 2, 3, 4]
    assert not now.historical and now.timestamp == clock.wall()
    assert runner.health().counters["historical_predictions"] == 3


async def test_every_input_with_history_predicts_the_whole_gap(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, predictions=True)
    clock = Clock()
    table = _table(mapping, clock)
    made: list[Prediction] = []
    runner = _runner(mapping, table, clock, made)
    _full_backfill(table, clock)
    [backfill] = table.take_past("m")
    made_past = await runner.tick_past(backfill)
    assert [p.timestamp - WALL0 for p in made_past] == [float(s) for s in range(21, 51)]
    assert all(p.historical for p in made_past) and made == made_past
    assert not any(p.historical for p in await runner.tick())


async def test_without_the_option_nothing_is_made_for_the_past(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, predictions=False)
    assert not mapping.models["m"].backfill_predictions
    clock = Clock()
    table = _table(mapping, clock)
    made: list[Prediction] = []
    runner = _runner(mapping, table, clock, made)
    _outage_then_backfill(table, clock)
    assert table.past == {} and table.backfilled == 300
    await runner._safe_tick(None)
    assert [p.historical for p in made] == [False]
    assert runner.past_made == 0


async def test_a_long_past_is_made_a_chunk_per_tick_between_live_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "PAST_ROWS_PER_TICK", 8)
    mapping = _mapping(tmp_path, predictions=True)
    clock = Clock()
    table = _table(mapping, clock)
    made: list[Prediction] = []
    runner = _runner(mapping, table, clock, made)
    _full_backfill(table, clock)
    await runner._safe_tick(None)
    assert [p.historical for p in made] == [True] * 8 + [False]
    assert runner.health().counters["historical_pending_periods"] == 22
    for _ in range(3):
        await runner._safe_tick(None)
    past = [p for p in made if p.historical]
    assert [p.timestamp - WALL0 for p in past] == [float(s) for s in range(21, 51)]
    assert [p.historical for p in made[-7:]] == [True] * 6 + [False]
    assert runner.health().counters["historical_pending_periods"] == 0
    assert [p.seq for p in made] == list(range(1, 35))


async def test_a_change_model_makes_its_past_without_waiting_for_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "PAST_ROWS_PER_TICK", 12)
    path = tmp_path / "change.yaml"
    _mapping(tmp_path, predictions=True)
    text = (tmp_path / "mapping.yaml").read_text().replace("    period_s: 1\n", "")
    change = text.replace("    assets: [pump]\n", "    assets: [pump]\n    trigger: change\n")
    path.write_text(change)
    mapping = load_mapping(path)
    assert mapping.models["m"].trigger == "change" and mapping.models["m"].period_s == 1
    clock = Clock()
    table = _table(mapping, clock)
    made: list[Prediction] = []
    runner = _runner(mapping, table, clock, made)
    runner.trigger = table.triggers["m"]
    _full_backfill(table, clock)
    task = asyncio.create_task(runner.run())
    try:
        # One chunk with the tick of the reconnect's change, then one per period_s (1 s).
        await wait_until(lambda: runner.past_made >= 30, 20, what="the whole past")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    past = [p for p in made if p.historical]
    assert [p.timestamp - WALL0 for p in past] == [float(s) for s in range(21, 51)]
    assert sum(not p.historical for p in made) == 1  # the one change: no tick without one
