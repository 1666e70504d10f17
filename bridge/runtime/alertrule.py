"""The alert rule: a classifier's label moves away from its first (normal) label, and holds.

A model's first label is its normal state (``healthy``). An asset in the normal state raises
one alert once it has been predicted not normal ``raise_after`` runs in a row (the alert names
the label of the run that confirmed it); an alerted asset raises another only when a different
fault label holds ``raise_after`` runs in a row (``bearing_fault`` -> ``cavitation``), and it
counts as normal again (no alert; a later fault alerts anew) after ``clear_after`` normal runs
in a row. Flips back and forth in between raise nothing: a classifier at its decision boundary
flipped 3 times in 0.5 s and raised 3 alerts for one fault onset before this hold.

Before the first prediction an asset counts as normal, so a fault already present at start-up
is reported. Bad predictions (no value) neither confirm nor interrupt anything: a dead sensor is
not a recovery. Regressors (no labels) raise no alert. ``raise_after = clear_after = 1`` alerts
on every change to a fault label (the rule without a hold). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bridge.config.models import AlertConfig
from bridge.store.alerts import NewAlert
from bridge.types import Prediction, PredictionSlot

__all__ = ["IMMEDIATE", "AlertRule"]

# Every change to a fault label alerts at once: for callers without mapping settings.
IMMEDIATE = AlertConfig(raise_after=1, clear_after=1)


@dataclass(slots=True)
class _Track:
    """One asset and model: the state alerted on, and the runs that may change it."""

    normal: str
    raise_after: int
    clear_after: int
    state: str = ""  # the label last alerted, or `normal`
    last: str = ""  # the label of the latest labelled prediction
    same_run: int = 0  # labelled predictions in a row equal to `last`
    fault_run: int = 0  # labelled predictions in a row that are not normal

    def __post_init__(self) -> None:
        self.state = self.last = self.normal

    def step(self, label: str) -> str | None:
        """Take one prediction's label; the previous state when it raises an alert."""
        self.same_run = self.same_run + 1 if label == self.last else 1
        self.last = label
        self.fault_run = 0 if label == self.normal else self.fault_run + 1
        previous = self.state
        if previous == self.normal:
            if self.fault_run >= self.raise_after:
                self.state = label
                return previous
        elif label == self.normal:
            if self.same_run >= self.clear_after:
                self.state = label
        elif label != previous and self.same_run >= self.raise_after:
            self.state = label
            return previous
        return None


class AlertRule:
    def __init__(
        self,
        slots: Iterable[PredictionSlot],
        holds: Mapping[str, AlertConfig] | None = None,
    ) -> None:
        """``holds``: the mapping's alert settings per model name; a model not in it (or no
        ``holds`` at all) alerts on every change (``IMMEDIATE``)."""
        self._tracks: dict[tuple[str, str], _Track] = {}
        for slot in slots:
            if slot.labels:
                hold = (holds or {}).get(slot.model, IMMEDIATE)
                self._tracks[(slot.asset, slot.model)] = _Track(
                    slot.labels[0], hold.raise_after, hold.clear_after
                )

    def evaluate(self, batch: Sequence[Prediction]) -> list[NewAlert]:
        alerts = []
        for p in batch:
            track = self._tracks.get((p.asset, p.model))
            if track is None or not isinstance(p.value, str):
                continue
            previous = track.step(p.value)
            if previous is not None:
                alerts.append(
                    NewAlert(p.id, p.asset, p.model, p.value, previous, p.score, p.timestamp)
                )
        return alerts
