"""The alert rule: a classifier's label changes to one that is not its first (normal) label.

A model's first label is its normal state (``healthy``); moving to any other label (``healthy``
-> ``bearing_fault``, or ``bearing_fault`` -> ``cavitation``) raises one alert; staying on a
label or going back to normal raises none. Before the first prediction an asset counts as
normal, so a fault already present at start-up is reported. Bad predictions (no value) change
nothing: a dead sensor is not a recovery. Regressors (no labels) raise no alert. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bridge.store.alerts import NewAlert
from bridge.types import Prediction, PredictionSlot

__all__ = ["AlertRule"]


class AlertRule:
    def __init__(self, slots: Iterable[PredictionSlot]) -> None:
        self._normal: dict[tuple[str, str], str] = {}
        self._last: dict[tuple[str, str], str] = {}
        for slot in slots:
            if slot.labels:
                key = (slot.asset, slot.model)
                self._normal[key] = self._last[key] = slot.labels[0]

    def evaluate(self, batch: Sequence[Prediction]) -> list[NewAlert]:
        alerts = []
        for p in batch:
            key = (p.asset, p.model)
            normal = self._normal.get(key)
            if normal is None or not isinstance(p.value, str):
                continue
            previous = self._last[key]
            self._last[key] = p.value
            if p.value != previous and p.value != normal:
                alerts.append(
                    NewAlert(p.id, p.asset, p.model, p.value, previous, p.score, p.timestamp)
                )
        return alerts
