"""Drift state of one model over its assets: a ring of recent Good feature rows per asset, PSI
per feature against the reference, and threshold crossings with hysteresis. Pure (no I/O).

The bin counts of every window are kept up to date as rows come and go, so scoring 2,000 assets
is arithmetic on [assets, bins] arrays, not a histogram of every window each time.

An asset *crosses* when its score (the largest PSI over its features) rises above
``threshold`` while it was not drifting; it stops drifting once the score falls below
``clear_below``. So one excursion gives one crossing, however many runs it lasts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .psi import bin_index, psi_counts

__all__ = ["DriftCrossing", "DriftMonitor", "FeatureWindowStats"]

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FeatureWindowStats:
    feature: str
    psi: float
    mean: float
    std: float
    min: float
    max: float
    reference_mean: float
    reference_std: float


@dataclass(frozen=True, slots=True)
class DriftCrossing:
    asset: str
    score: float
    threshold: float
    window: int  # rows compared
    drifting: tuple[str, ...]  # features above the threshold, worst first
    features: tuple[FeatureWindowStats, ...]  # every feature, in model input order
    at: float


class DriftMonitor:
    def __init__(
        self,
        assets: Sequence[str],
        features: Sequence[str],
        reference: Mapping[str, Any],
        window: int,
        threshold: float,
        clear_below: float | None = None,
    ) -> None:
        self.assets = tuple(assets)
        self.features = tuple(features)
        self.window = window
        self.threshold = threshold
        self.clear_below = threshold * 0.8 if clear_below is None else clear_below
        ref = reference["features"]
        self._edges = [np.asarray(ref[f]["bins"], dtype=np.float64) for f in self.features]
        self._expected = [np.asarray(ref[f]["fractions"], dtype=np.float64) for f in self.features]
        self._ref_mean = [float(ref[f]["mean"]) for f in self.features]
        self._ref_std = [float(ref[f]["std"]) for f in self.features]
        self._index = {a: i for i, a in enumerate(self.assets)}
        n_assets, n_features = len(self.assets), len(self.features)
        # Raw values only feed the window statistics of a crossing: float32 halves the memory.
        self._ring = np.zeros((n_assets, window, n_features), dtype=np.float32)
        self._bins = np.zeros((n_assets, window, n_features), dtype=np.int16)
        self._counts = [np.zeros((n_assets, e.size), dtype=np.int32) for e in self._expected]
        self._seen = np.zeros(n_assets, dtype=np.int64)  # rows ever observed per asset
        self._drifting = np.zeros(n_assets, dtype=bool)
        self.scores: dict[str, float] = {}
        # PSI of each input per asset, in model input order, from the same evaluation.
        self.feature_scores: dict[str, tuple[float, ...]] = {}

    def observe(self, assets: Sequence[str], x: npt.NDArray[np.floating]) -> None:
        """Add one Good feature row per listed asset (``x`` [len(assets), features]); each
        asset at most once per call."""
        if not assets:
            return
        rows = np.fromiter((self._index[a] for a in assets), dtype=np.int64, count=len(assets))
        pos = self._seen[rows] % self.window
        evict = self._seen[rows] >= self.window
        old = self._bins[rows, pos]  # [rows, features]
        for j, edges in enumerate(self._edges):
            new = bin_index(x[:, j], edges)
            counts = self._counts[j]
            # Rows are distinct, so fancy-indexed += touches each (row, bin) once.
            counts[rows[evict], old[evict, j]] -= 1
            counts[rows, new] += 1
            self._bins[rows, pos, j] = new
        self._ring[rows, pos] = x
        self._seen[rows] += 1

    def evaluate(self, now: float) -> list[DriftCrossing]:
        """Update ``scores`` of assets whose window is full; return the new crossings."""
        full = np.flatnonzero(self._seen >= self.window)
        if full.size == 0:
            return []
        every = full.size == len(self.assets)
        psi = np.stack(
            [
                psi_counts(c if every else c[full], self.window, e)
                for c, e in zip(self._counts, self._expected, strict=True)
            ],
            axis=1,
        )  # [assets, features]
        score = psi.max(axis=1)
        self.scores.update(zip((self.assets[i] for i in full), score.tolist(), strict=True))
        self.feature_scores.update(
            (self.assets[i], tuple(row)) for i, row in zip(full, psi.tolist(), strict=True)
        )
        was = self._drifting[full]
        crossed = ~was & (score > self.threshold)
        cleared = was & (score < self.clear_below)
        self._drifting[full[crossed]] = True
        self._drifting[full[cleared]] = False
        return [
            self._crossing(self.assets[full[k]], float(score[k]), psi[k], self._ring[full[k]], now)
            for k in np.flatnonzero(crossed)
        ]

    def drifting(self, asset: str) -> bool:
        return bool(self._drifting[self._index[asset]])

    def _crossing(
        self, asset: str, score: float, psi: F64, window: npt.NDArray[np.float32], now: float
    ) -> DriftCrossing:
        stats = tuple(
            FeatureWindowStats(
                feature=f,
                psi=float(psi[j]),
                mean=float(window[:, j].mean()),
                std=float(window[:, j].std()),
                min=float(window[:, j].min()),
                max=float(window[:, j].max()),
                reference_mean=self._ref_mean[j],
                reference_std=self._ref_std[j],
            )
            for j, f in enumerate(self.features)
        )
        order = sorted(range(len(self.features)), key=lambda j: -psi[j])
        drifting = tuple(self.features[j] for j in order if psi[j] > self.threshold)
        return DriftCrossing(asset, score, self.threshold, self.window, drifting, stats, now)
