"""Window statistics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bridge.features import stats

T = np.array([0.0, 1.0, 2.0, 3.0])
V = np.array([1.0, 3.0, 2.0, 6.0])


def test_stats_are_the_documented_set() -> None:
    assert stats.STATS == ("mean", "std", "min", "max", "last", "slope")


@pytest.mark.parametrize(
    ("stat", "expected"),
    [
        ("mean", 3.0),  # 12 / 4
        # deviations -2, 0, -1, 3 -> squares 4, 0, 1, 9 -> 14 / 4 (population)
        ("std", math.sqrt(3.5)),
        ("min", 1.0),
        ("max", 6.0),
        ("last", 6.0),
        # t - 1.5 = -1.5, -0.5, 0.5, 1.5; sum(tc * (v - 3)) = 3 + 0 - 0.5 + 4.5 = 7; sum(tc^2) = 5
        ("slope", 7.0 / 5.0),
    ],
)
def test_hand_computed(stat: str, expected: float) -> None:
    assert stats.compute(stat, T, V) == pytest.approx(expected, rel=1e-12)


def test_slope_is_per_second_not_per_sample() -> None:
    t = np.array([0.0, 0.5, 1.0])  # 2 Hz
    v = np.array([10.0, 11.0, 12.0])
    assert stats.compute("slope", t, v) == pytest.approx(2.0)


def test_slope_with_epoch_timestamps_keeps_precision() -> None:
    t = 1.76e9 + np.arange(100) * 0.1
    v = 5.0 - 0.25 * (t - t[0])
    assert stats.compute("slope", t, v) == pytest.approx(-0.25, rel=1e-9)


@pytest.mark.parametrize("n", [0, 1])
def test_slope_is_zero_below_two_samples(n: int) -> None:
    assert stats.compute("slope", T[:n], V[:n]) == 0.0


def test_slope_is_zero_when_all_times_equal() -> None:
    assert stats.compute("slope", np.array([4.0, 4.0]), np.array([1.0, 9.0])) == 0.0


def test_single_sample() -> None:
    t, v = np.array([7.0]), np.array([2.5])
    assert stats.compute("std", t, v) == 0.0
    assert stats.compute("mean", t, v) == stats.compute("last", t, v) == 2.5


@pytest.mark.parametrize("stat", ["mean", "std", "min", "max", "last"])
def test_empty_window_is_refused(stat: str) -> None:
    with pytest.raises(ValueError, match="no samples"):
        stats.compute(stat, np.array([]), np.array([]))


def test_unknown_stat_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="unknown statistic 'median'"):
        stats.compute("median", T, V)
    with pytest.raises(ValueError, match="equal length"):
        stats.compute("mean", T, V[:3])


def test_returns_plain_float() -> None:
    assert type(stats.compute("mean", T, V.astype(np.float32))) is float
