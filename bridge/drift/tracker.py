"""Drift of one model's inputs: Good feature rows enter the windows, every ``drift.every`` runs
the windows are scored, and the reference is the serving version's.

When the active version changes, drift switches to its reference and the windows start empty
(scores against a new reference are not comparable with the old ones); a switch that keeps the
same statistics keeps the windows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from bridge.config.resolved import ResolvedModel

from .monitor import DriftCrossing, DriftMonitor

__all__ = ["DriftTracker"]

log = structlog.get_logger(__name__)


class DriftTracker:
    def __init__(self, model: ResolvedModel, reference: Mapping[str, Any]) -> None:
        self.model = model
        self.reference = reference  # what drift compares with now
        self.monitor = self._monitor(reference)

    @property
    def scores(self) -> Mapping[str, float]:
        return self.monitor.scores if self.monitor is not None else {}

    def feature_scores(self, asset: str) -> dict[str, float]:
        """PSI of each input of ``asset`` at the last evaluation; empty before a full window."""
        if self.monitor is None:
            return {}
        found = self.monitor.feature_scores.get(asset)
        if found is None:
            return {}
        return dict(zip(self.monitor.features, found, strict=True))

    def use(self, reference: Mapping[str, Any], version: str) -> bool:
        """Compare with ``reference`` (the active ``version``'s) from now on; True when the
        statistics changed (the windows then start empty)."""
        if reference is self.reference:
            return False
        if reference == self.reference:  # another version, same statistics: keep the windows
            self.reference = reference
            return False
        self.reference = reference
        # The windows are scored against the new reference from their first row on.
        self.monitor = self._monitor(reference)
        log.info(
            "drift_reference_switched",
            model=self.model.name,
            version=version,
            windows_reset=self.monitor is not None,
        )
        return True

    def observe(
        self, assets: Sequence[str], x: npt.NDArray[np.floating], run: int, now: float
    ) -> list[DriftCrossing]:
        """Add Good rows (``x``, one per asset); on every ``drift.every``-th run, score."""
        if self.monitor is None:
            return []
        self.monitor.observe(assets, x)
        drift = self.model.drift
        if drift is not None and run % drift.every == 0:
            return self.monitor.evaluate(now)
        return []

    def _monitor(self, reference: Mapping[str, Any]) -> DriftMonitor | None:
        drift = self.model.drift
        if drift is None:
            return None
        return DriftMonitor(
            self.model.assets,
            [f.name for f in self.model.features],
            reference,
            drift.window,
            drift.threshold,
            drift.clear_below,
        )
