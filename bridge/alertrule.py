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
on every change to a fault label (the rule without a hold: ``IMMEDIATE``). Pure.

One rule, two users: the alert writer (``bridge.runtime.alertsink``: the alerts the store keeps
and the API lists) steps an ``AlertRule``; the outbox's ``alerts`` event rule
(``bridge.outbox.rules``: alert events for a destination) steps one ``LabelTrack`` per asset
and model, staged until its batch commits. The rule sits in the kernel because the outbox may
not import the runtime: it knows neither the mapping's settings (anything with ``raise_after``
and ``clear_after`` will do) nor the store's alert rows (it names the predictions that alert).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bridge.types import Prediction, PredictionSlot, Quality

__all__ = ["IMMEDIATE", "AlertHold", "AlertRule", "Hold", "LabelAlert", "LabelTrack", "label_of"]


class Hold(Protocol):
    """How long a label must last (the mapping's ``alerts:`` settings of a model)."""

    @property
    def raise_after(self) -> int: ...

    @property
    def clear_after(self) -> int: ...


@dataclass(frozen=True, slots=True)
class AlertHold:
    raise_after: int = 1
    clear_after: int = 1


# Every change to a fault label alerts at once: for callers without mapping settings.
IMMEDIATE = AlertHold(raise_after=1, clear_after=1)


def label_of(p: Prediction) -> str | None:
    """The label a prediction counts with; None for a regressor's number or a Bad prediction."""
    if isinstance(p.value, str) and p.quality is not Quality.BAD:
        return p.value
    return None


@dataclass(slots=True)
class LabelTrack:
    """One asset and model: the state alerted on, and the runs that may change it."""

    normal: str
    raise_after: int = 1
    clear_after: int = 1
    state: str = ""  # the label last alerted, or `normal`
    last: str = ""  # the label of the latest labelled prediction
    same_run: int = 0  # labelled predictions in a row equal to `last`
    fault_run: int = 0  # labelled predictions in a row that are not normal

    def __post_init__(self) -> None:
        self.state = self.state or self.normal
        self.last = self.last or self.normal

    @classmethod
    def held(cls, normal: str, hold: Hold) -> LabelTrack:
        return cls(normal, hold.raise_after, hold.clear_after)

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

    def seed(self, label: str) -> None:
        """Start from a label already stored (a restart): it counts as the confirmed state, so
        it is not alerted again. Exact without a hold; with one, a fault that had not held long
        enough before the restart counts as alerted."""
        self.state = self.last = label
        self.same_run = 1
        self.fault_run = 0 if label == self.normal else 1

    def copy(self) -> LabelTrack:
        """A copy to stage changes on (kept only if its batch commits)."""
        return copy.copy(self)


@dataclass(frozen=True, slots=True)
class LabelAlert:
    """``prediction``'s label alerts: it left ``previous`` (the normal label or another fault)."""

    prediction: Prediction
    label: str
    previous: str


def follow_tracks(
    tracks: Mapping[tuple[str, str], LabelTrack],
    slots: Iterable[PredictionSlot],
    holds: Mapping[str, Hold] | None,
) -> dict[tuple[str, str], LabelTrack]:
    """One track per slot with labels: an existing track is kept (its state goes on) while its
    normal label and hold are the same; a new slot, or one whose were changed, starts one."""
    out: dict[tuple[str, str], LabelTrack] = {}
    for slot in slots:
        if not slot.labels:
            continue
        key = (slot.asset, slot.model)
        hold = (holds or {}).get(slot.model, IMMEDIATE)
        old = tracks.get(key)
        same = old is not None and (old.normal, old.raise_after, old.clear_after) == (
            slot.labels[0],
            hold.raise_after,
            hold.clear_after,
        )
        out[key] = old if same and old is not None else LabelTrack.held(slot.labels[0], hold)
    return out


class AlertRule:
    """The rule over prediction batches, one ``LabelTrack`` per asset and model with labels."""

    def __init__(
        self,
        slots: Iterable[PredictionSlot],
        holds: Mapping[str, Hold] | None = None,
    ) -> None:
        """``holds``: the mapping's alert settings per model name; a model not in it (or no
        ``holds`` at all) alerts on every change (``IMMEDIATE``)."""
        self._tracks = follow_tracks({}, slots, holds)

    def follow(self, slots: Iterable[PredictionSlot], holds: Mapping[str, Hold] | None) -> None:
        """Serve ``slots`` from now on (a mapping reload); see ``follow_tracks``."""
        self._tracks = follow_tracks(self._tracks, slots, holds)

    def seed(self, latest: Iterable[Prediction]) -> None:
        """Continue from the last stored prediction of each asset and model (a restart): a
        fault still predicted is the state already alerted, not a new alert."""
        for p in latest:
            track = self._tracks.get((p.asset, p.model))
            label = label_of(p)
            if track is not None and label is not None:
                track.seed(label)

    def evaluate(self, batch: Sequence[Prediction]) -> list[LabelAlert]:
        alerts = []
        for p in batch:
            track = self._tracks.get((p.asset, p.model))
            label = label_of(p)
            if track is None or label is None:
                continue
            previous = track.step(label)
            if previous is not None:
                alerts.append(LabelAlert(p, label, previous))
        return alerts
