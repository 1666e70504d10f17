"""Wall-clock steps (NTP corrections, an operator setting the time) do not fool windows, input
ages or staleness: the real tag table and model runner, a real ONNX model, and a clock whose
wall reading is stepped 60 s back or forward while its monotonic reading only moves on.

Timestamps people see (received time, prediction time) stay on the wall clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from insight_models import linear_regressor

from bridge.config import load_mapping
from bridge.inference import LoadedModel
from bridge.runtime.runner import ModelRunner, TickOutcome
from bridge.runtime.tagtable import TagTable
from bridge.types import Prediction, Quality, TagSample

RATE_HZ = 10
TAG = "pump.x"

MAPPING = """
version: 1
gateway: {{id: unit, store: "sqlite:///{store}"}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}}
assets:
  pump:
    tags:
      x: {{source: plant, address: "nsu=urn:t;s=X", max_age_s: 3}}
models:
  m:
    file: {model}
    version: "1"
    assets: [pump]
    period_s: 0.1
    window_s: 10
    min_window_s: 5
    outputs: {{value: value}}
    features:
      - {{tag: x, stat: mean}}
      - {{tag: x, stat: min}}
      - {{tag: x, stat: max}}
"""


class SteppedClock:
    """A wall clock that can be stepped, over a monotonic clock that only moves forward."""

    def __init__(self) -> None:
        self.mono = 5_000.0
        self.offset = 1_750_000_000.0 - self.mono

    def wall(self) -> float:
        return self.mono + self.offset

    def monotonic(self) -> float:
        return self.mono

    def step(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Rig:
    clock: SteppedClock
    table: TagTable
    runner: ModelRunner
    features: list[list[float]] = field(default_factory=list)

    def feed(self, value: float, seconds: float) -> None:
        """The source sends ``value`` at RATE_HZ for ``seconds``."""
        for _ in range(round(seconds * RATE_HZ)):
            self.clock.mono += 1 / RATE_HZ
            now = self.clock.wall()
            self.table.apply([TagSample(TAG, value, Quality.GOOD, now, now, now)])

    def window(self) -> int:
        """How many samples of the tag a 10 s window holds now."""
        ring = self.table.get(TAG).ring
        assert ring is not None
        return ring.count_since(self.clock.monotonic() - 10.0)

    async def tick(self) -> Prediction:
        [p] = await self.runner.tick()
        return p


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    # value = x.mean: the model reads back the window's mean.
    model = linear_regressor(tmp_path / "m.onnx", [1.0, 0.0, 0.0], [0.0] * 3, [1.0] * 3)
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING.format(store=tmp_path / "b.db", model=model))
    mapping = load_mapping(path)
    clock = SteppedClock()
    table = TagTable(mapping, wall_clock=clock.wall, monotonic_clock=clock.monotonic)
    loaded = LoadedModel.load(model)

    async def publish(batch: Sequence[Prediction]) -> None:
        return None

    runner = ModelRunner(
        mapping.models["m"],
        loaded,
        (),
        table.get,
        publish,
        "unit",
        "boot",
        wall_clock=clock.wall,
        monotonic_clock=clock.monotonic,
    )
    rig = Rig(clock, table, runner)

    def observe(outcome: TickOutcome) -> None:
        rig.features = outcome.batch.x.tolist()

    runner.observers.append(observe)
    return rig


async def test_step_back_leaves_the_window_and_its_mean_right(rig: Rig) -> None:
    rig.feed(7.0, 30.0)
    rig.clock.step(-60.0)
    rig.feed(1.0, 12.0)
    p = await rig.tick()
    # The last 10 s hold the 100 samples of 1.0 sent after the step, nothing from before it.
    assert rig.window() in (100, 101)
    assert rig.features == [[1.0, 1.0, 1.0]]
    assert (p.quality, p.value) == (Quality.GOOD, pytest.approx(1.0))
    assert p.input_age_s == pytest.approx(0.0, abs=1e-6)
    # What people see stays on the (stepped) wall clock.
    assert p.timestamp == rig.clock.wall()
    [state] = rig.table.snapshot("pump")
    assert state.received_time == rig.clock.wall()


async def test_step_back_does_not_keep_a_silent_input_fresh(rig: Rig) -> None:
    rig.feed(7.0, 30.0)
    rig.clock.step(-60.0)  # the source falls silent as the clock is set back
    rig.clock.mono += 5.0
    p = await rig.tick()
    # 5 s without an update is stale (max_age_s 3), not 55 s in the future.
    assert p.quality is Quality.BAD and p.value is None
    assert "stale: not updated for 5.0 s" in p.reason
    assert p.input_age_s == pytest.approx(5.0)


async def test_step_forward_keeps_the_samples_of_the_last_seconds(rig: Rig) -> None:
    rig.feed(7.0, 30.0)
    rig.clock.step(60.0)
    rig.feed(1.0, 2.0)
    p = await rig.tick()
    # 10 s of window: 8 s of 7.0 from before the step and 2 s of 1.0 after it.
    assert rig.window() in (100, 101)
    [[mean, low, high]] = rig.features
    ones = 20
    sevens = rig.window() - ones
    assert mean == pytest.approx((7.0 * sevens + ones) / (sevens + ones))
    assert (low, high) == (1.0, 7.0)
    assert (p.quality, p.value) == (Quality.GOOD, pytest.approx(mean, rel=1e-6))
    assert p.timestamp == rig.clock.wall()


async def test_step_forward_does_not_make_fresh_inputs_stale(rig: Rig) -> None:
    rig.feed(7.0, 30.0)
    rig.clock.step(60.0)
    rig.clock.mono += 0.05
    p = await rig.tick()
    assert (p.quality, p.value) == (Quality.GOOD, pytest.approx(7.0))
    assert p.input_age_s == pytest.approx(0.05)
