"""PSI against hand-computed values, and the drift monitor's crossings (once per excursion)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bridge.config.reference import compute_reference
from bridge.drift.monitor import DriftMonitor
from bridge.drift.psi import psi_rows

EDGES = np.asarray([0.0, 1.0, 2.0, 3.0])
EXPECTED = np.asarray([0.25, 0.5, 0.25])


def test_psi_matches_a_hand_computed_case() -> None:
    # 4 values: bins get 2, 1, 1 -> shares 0.5, 0.25, 0.25.
    window = np.asarray([[0.5, 0.7, 1.5, 2.5]])
    want = (0.5 - 0.25) * math.log(0.5 / 0.25) + (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert psi_rows(window, EDGES, EXPECTED)[0] == pytest.approx(want)


def test_psi_is_zero_for_the_reference_shares_and_outer_bins_are_open() -> None:
    same = np.asarray([[0.5, 1.2, 1.8, 2.5]])
    # Below the first and above the last edge count in the outer bins.
    outside = np.asarray([[-5.0, 1.2, 1.8, 99.0]])
    assert psi_rows(same, EDGES, EXPECTED)[0] == pytest.approx(0.0)
    assert psi_rows(outside, EDGES, EXPECTED)[0] == pytest.approx(0.0)


def test_psi_rows_are_independent() -> None:
    windows = np.asarray([[0.5, 1.2, 1.8, 2.5], [2.5, 2.6, 2.7, 2.8]])
    out = psi_rows(windows, EDGES, EXPECTED)
    assert out[0] == pytest.approx(0.0)
    assert out[1] == pytest.approx(psi_rows(windows[1:], EDGES, EXPECTED)[0])
    assert out[1] > 1.0


def _reference(rng: np.random.Generator) -> dict[str, object]:
    x = np.column_stack([rng.normal(10.0, 1.0, 20000), rng.normal(50.0, 2.0, 20000)])
    return compute_reference(x, ["a.mean", "b.mean"], bins=10)


def test_a_drifting_input_crosses_once_within_two_windows_then_clears() -> None:
    rng = np.random.default_rng(3)
    window = 100
    monitor = DriftMonitor(["p1", "p2"], ["a.mean", "b.mean"], _reference(rng), window, 1.0)
    crossings = []
    for step in range(20 * window):
        drifting = window * 4 <= step < window * 12  # p1's input b drifts for 8 windows
        b1 = rng.normal(58.0 if drifting else 50.0, 2.0)
        x = np.asarray([[rng.normal(10.0, 1.0), b1], [rng.normal(10.0, 1.0), rng.normal(50, 2)]])
        monitor.observe(["p1", "p2"], x)
        crossings += [(step, c) for c in monitor.evaluate(float(step))]
    assert [c.asset for _, c in crossings] == ["p1"], "one crossing, only the drifting asset"
    step, crossing = crossings[0]
    assert window * 4 <= step < window * 6, "raised within two windows of the onset"
    assert crossing.drifting == ("b.mean",)
    stats = {s.feature: s for s in crossing.features}
    assert stats["b.mean"].mean > stats["b.mean"].reference_mean + 1.0
    assert stats["b.mean"].psi > 1.0 > stats["a.mean"].psi
    assert not monitor.drifting("p1"), "cleared after the input came back"
    assert monitor.scores["p2"] < 1.0


def test_a_second_excursion_raises_again_and_bad_rows_are_not_observed() -> None:
    rng = np.random.default_rng(5)
    window = 100
    monitor = DriftMonitor(["p1"], ["a.mean", "b.mean"], _reference(rng), window, 1.0)
    raised = 0
    for step in range(24 * window):
        phase = (step // (4 * window)) % 2  # 4 windows normal, 4 drifting, ...
        x = np.asarray([[rng.normal(10.0 + 5 * phase, 1.0), rng.normal(50.0, 2.0)]])
        monitor.observe(["p1"], x)
        raised += len(monitor.evaluate(float(step)))
    assert raised == 3
    # Rows that are never observed (Bad) leave the window as it was.
    before = monitor.scores["p1"]
    monitor.observe([], np.empty((0, 2)))
    monitor.evaluate(0.0)
    assert monitor.scores["p1"] == before


def test_running_bin_counts_match_a_histogram_of_the_last_window() -> None:
    rng = np.random.default_rng(9)
    ref = _reference(rng)
    window = 30
    monitor = DriftMonitor(["p1", "p2"], ["a.mean", "b.mean"], ref, window, 1e9)
    fed: dict[str, list[np.ndarray]] = {"p1": [], "p2": []}
    for step in range(3 * window + 7):
        # p2 only every other step: windows of assets advance independently.
        assets = ["p1", "p2"] if step % 2 else ["p1"]
        x = np.column_stack([rng.normal(11.0, 1.5, len(assets)), rng.normal(49, 3, len(assets))])
        monitor.observe(assets, x)
        for a, r in zip(assets, x, strict=True):
            fed[a].append(r)
    monitor.evaluate(0.0)
    feats = ref["features"]
    for asset, rows in fed.items():
        last = np.asarray(rows[-window:])
        per_feature = [
            psi_rows(
                last[:, j][None, :],
                np.asarray(feats[f]["bins"]),  # type: ignore[index]
                np.asarray(feats[f]["fractions"]),  # type: ignore[index]
            )[0]
            for j, f in enumerate(["a.mean", "b.mean"])
        ]
        assert monitor.scores[asset] == pytest.approx(max(per_feature))
        # The console's drift per input: the same evaluation, one PSI per feature.
        assert monitor.feature_scores[asset] == pytest.approx(tuple(per_feature))
