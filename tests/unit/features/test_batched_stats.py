"""The batched feature path gives exactly what one window at a time gives."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.config.resolved import Feature, ResolvedModel
from bridge.config.spec import ModelOutputs
from bridge.features import stats
from bridge.features.vector import build_batch
from bridge.features.window import Ring
from bridge.types import Quality

NOW = 2_000_000_000.0  # epoch-sized times, as the gateway has them


@pytest.mark.parametrize("stat", stats.STATS)
@pytest.mark.parametrize("n", [1, 2, 9, 100, 300])
def test_rows_equal_single_windows_bit_for_bit(stat: str, n: int) -> None:
    rng = np.random.default_rng(n)
    t = np.sort(rng.uniform(NOW - 10, NOW, size=(12, n)), axis=1)
    v = rng.normal(50.0, 10.0, size=(12, n))
    t[3] = t[3, 0]  # all times equal: slope 0, not a division by zero
    rows = stats.compute_rows(stat, t, v)
    assert rows.tolist() == [stats.compute(stat, t[i], v[i]) for i in range(12)]


def test_rows_reject_empty_windows_and_unknown_stats() -> None:
    with pytest.raises(ValueError, match="no samples"):
        stats.compute_rows("mean", np.empty((2, 0)), np.empty((2, 0)))
    with pytest.raises(ValueError, match="unknown statistic"):
        stats.compute_rows("median", np.ones((1, 2)), np.ones((1, 2)))


class _Tag:
    def __init__(self, samples: list[tuple[float, float]]) -> None:
        self.ring = Ring(64)
        for t, v in samples:
            self.ring.append(t, v)
        self.value = samples[-1][1] if samples else None
        self.quality = Quality.GOOD
        self.reason = ""
        self.source_time = None
        self.updated_mono: float | None = NOW - 0.1
        self.max_age_s = 5.0


def test_batch_of_windows_of_different_lengths_matches_per_asset_compute() -> None:
    # Assets whose windows differ in length land in different stacks; each row must still be
    # the per-window statistics, in the model's feature order and the assets' order.
    features = (
        Feature("x", "mean"),
        Feature("x", "std"),
        Feature("y", "slope"),
        Feature("x", "last"),
    )
    model = ResolvedModel(
        name="m",
        path=None,  # type: ignore[arg-type]
        version="1",
        sha256=None,
        assets=("a", "b", "c", "d"),
        input="features",
        features=features,
        outputs=ModelOutputs(label="label", scores="probabilities"),
        labels=None,
        period_s=1.0,
        window_s=10.0,
        min_window_s=1.0,
        max_samples=64,
    )
    rng = np.random.default_rng(5)
    tags = {}
    for k, asset in enumerate(model.assets):
        n = 5 + 3 * (k % 2)  # lengths 5, 8, 5, 8
        times = NOW - 4.0 + np.arange(n) * 0.5
        for name in ("x", "y"):
            tags[f"{asset}.{name}"] = _Tag(list(zip(times, rng.normal(size=n), strict=True)))
    batch = build_batch(model, tags.__getitem__, NOW)
    assert [r.asset for r in batch.runnable] == list(model.assets)
    for i, asset in enumerate(model.assets):
        expected = []
        for f in features:
            t, v = tags[f"{asset}.{f.tag}"].ring.since(NOW - 10.0)
            expected.append(np.float32(stats.compute(f.stat, t, v)))
        assert batch.x[i].tolist() == expected
