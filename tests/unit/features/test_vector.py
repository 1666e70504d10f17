"""Feature rows, quality propagation and staleness, on hand-made tag states."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from bridge.config.resolved import Feature, ResolvedModel
from bridge.config.spec import ModelOutputs
from bridge.features.vector import build_batch
from bridge.features.window import Ring
from bridge.types import Quality, TagValue

NOW = 1_000.0


@dataclass
class State:
    value: TagValue = 1.0
    quality: Quality = Quality.GOOD
    reason: str = ""
    source_time: float | None = None
    updated_mono: float | None = NOW - 0.5
    max_age_s: float = 5.0
    ring: Ring | None = field(default_factory=lambda: Ring(64))


def model(assets: tuple[str, ...] = ("a", "b")) -> ResolvedModel:
    return ResolvedModel(
        name="m",
        path=None,
        version="1",
        sha256=None,
        assets=assets,  # type: ignore[arg-type]
        input="features",
        features=(Feature("x", "mean"), Feature("y", "max"), Feature("x", "slope")),
        outputs=ModelOutputs(label="label", scores="probabilities"),
        labels=None,
        period_s=1.0,
        window_s=10.0,
        min_window_s=3.0,
        max_samples=64,
    )


def filled(values: list[float], start: float = NOW - 4.0) -> State:
    s = State(value=values[-1])
    assert s.ring is not None
    for i, v in enumerate(values):
        s.ring.append(start + i, v)
    return s


def test_rows_in_feature_order_with_hand_computed_values() -> None:
    states = {
        "a.x": filled([1.0, 2.0, 3.0, 4.0]),
        "a.y": filled([5.0, 9.0, 7.0]),
        "b.x": filled([10.0, 10.0]),
        "b.y": filled([0.5]),
    }
    batch = build_batch(model(), states.__getitem__, NOW)
    assert [r.asset for r in batch.runnable] == ["a", "b"]
    assert batch.x.dtype == np.float32
    assert batch.x[0].tolist() == pytest.approx([2.5, 9.0, 1.0])
    assert batch.x[1].tolist() == pytest.approx([10.0, 0.5, 0.0])
    assert batch.runnable[0].quality is Quality.GOOD


def test_window_excludes_old_samples() -> None:
    x = filled([100.0, 100.0, 1.0, 3.0], start=NOW - 13.0)  # t = -13, -12, -11, -10
    x.ring.append(NOW - 1.0, 5.0)  # type: ignore[union-attr]
    states = {"a.x": x, "a.y": filled([1.0])}
    batch = build_batch(model(("a",)), states.__getitem__, NOW)
    assert batch.x[0][0] == pytest.approx(4.0)  # mean of 3 (t=-10) and 5 (t=-1)


def test_bad_input_blocks_the_asset_and_says_why() -> None:
    bad = filled([1.0, 2.0])
    bad.quality, bad.reason = Quality.BAD, "BadNodeIdUnknown"
    states = {"a.x": bad, "a.y": filled([1.0]), "b.x": filled([1.0]), "b.y": filled([2.0])}
    batch = build_batch(model(), states.__getitem__, NOW)
    assert [r.asset for r in batch.runnable] == ["b"]
    assert batch.x.shape == (1, 3)
    (blocked,) = batch.blocked
    assert blocked.asset == "a" and blocked.quality is Quality.BAD
    assert "x: BadNodeIdUnknown" in blocked.reason


def test_stale_input_counts_as_bad() -> None:
    stale = filled([1.0, 2.0])
    stale.updated_mono = NOW - 6.0  # max_age_s is 5
    batch = build_batch(model(("a",)), {"a.x": stale, "a.y": filled([1.0])}.__getitem__, NOW)
    assert not batch.runnable
    assert "stale" in batch.blocked[0].reason
    assert batch.blocked[0].input_age_s == pytest.approx(6.0)


def test_uncertain_input_gives_an_uncertain_row() -> None:
    unsure = filled([1.0, 2.0])
    unsure.quality = Quality.UNCERTAIN
    batch = build_batch(model(("a",)), {"a.x": unsure, "a.y": filled([1.0])}.__getitem__, NOW)
    assert batch.runnable[0].quality is Quality.UNCERTAIN


def test_no_samples_in_window_blocks() -> None:
    empty = State()
    batch = build_batch(model(("a",)), {"a.x": empty, "a.y": filled([1.0])}.__getitem__, NOW)
    assert not batch.runnable and "x: no Good samples yet" in batch.blocked[0].reason
    # Samples that all fell out of the window: the history is there, the window is empty.
    old = filled([1.0, 2.0], start=NOW - 30.0)
    batch = build_batch(model(("a",)), {"a.x": old, "a.y": filled([1.0])}.__getitem__, NOW)
    assert "x: no Good samples in the last 10 s" in batch.blocked[0].reason


def test_short_history_is_warming_up_not_a_prediction() -> None:
    # 1.5 s of samples: a slope over so little data is mostly noise, so the model waits.
    young = {"a.x": filled([1.0, 5.0], start=NOW - 1.5), "a.y": filled([1.0])}
    batch = build_batch(model(("a",)), young.__getitem__, NOW)
    assert not batch.runnable
    assert "warming up: x has 1.5 s of history, the model needs 3 s" in batch.blocked[0].reason
    # Old samples before the window count as history: a full window is never warming up.
    seasoned = filled([1.0], start=NOW - 60.0)
    seasoned.ring.append(NOW - 1.0, 2.0)  # type: ignore[union-attr]
    batch = build_batch(model(("a",)), {"a.x": seasoned, "a.y": filled([1.0])}.__getitem__, NOW)
    assert [r.asset for r in batch.runnable] == ["a"]
