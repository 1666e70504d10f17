"""Event rules of a durable destination: which predictions become events for it.

Rules are evaluated by the store writer, inside the transaction that stores the predictions and
their outbox rows: an event exists exactly when its prediction was committed. Rules that
remember (label change, threshold, alerts) *stage* their new state while a batch is being
written and keep it only once the batch committed (``EventSelector.commit``); a batch retried
after a failed commit is evaluated again from the same state, so it yields the same events.
On start the state is seeded from the last stored prediction of every asset and model, so a
restart neither repeats nor misses a change.

Pure: no I/O. Connectors import these models for their settings (``events:``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

# The `alerts` rule is the gateway's one alert rule (the alert writer steps the same tracks).
from bridge.alertrule import Hold, LabelTrack, follow_tracks, label_of

# The rules as settings live in the kernel (connectors declare them); evaluated here.
from bridge.eventrules import DRIFT_RULES, EVENT_KINDS, EventRule, ThresholdRule, ThresholdSpec

# ``Trigger`` lives in the kernel (connectors and the drift writer use it without this package);
# named here too because the rules are what make triggers.
from bridge.types import Prediction, PredictionSlot, Quality, Trigger

__all__ = [
    "DRIFT_RULES",
    "EVENT_KINDS",
    "EventRule",
    "EventSelector",
    "ThresholdRule",
    "ThresholdSpec",
    "Trigger",
]


_Key = tuple[str, str]


def _number(p: Prediction, field: str) -> float | None:
    if p.quality is Quality.BAD:
        return None
    raw = p.score if field == "score" else p.value
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    return float(raw)


class _Threshold:
    def __init__(self, spec: ThresholdSpec) -> None:
        self.spec = spec
        self._high = spec.above is not None
        self.state: dict[_Key, bool] = {}

    def beyond(self, x: float) -> bool:
        return x > self.spec.limit if self._high else x < self.spec.limit

    def back(self, x: float) -> bool:
        s = self.spec
        return x <= s.limit - s.hysteresis if self._high else x >= s.limit + s.hysteresis

    def step(self, key: _Key, p: Prediction, staged: dict[_Key, bool]) -> Trigger | None:
        x = _number(p, self.spec.field)
        if x is None:
            return None  # a Bad or non-numeric prediction crosses nothing
        inside = staged.get(key, self.state.get(key, False))
        if not inside and self.beyond(x):
            staged[key] = True
            return Trigger(p, "threshold", None, "enter", self.spec.limit, self.spec.field)
        if inside and self.back(x):
            staged[key] = False
            if self.spec.notify_clear:
                return Trigger(p, "threshold", None, "clear", self.spec.limit, self.spec.field)
        return None


def _normals(slots: Iterable[PredictionSlot]) -> dict[_Key, str]:
    return {(s.asset, s.model): s.labels[0] for s in slots if s.labels}


class EventSelector:
    """The rules of one destination, with their state per (asset, model)."""

    def __init__(
        self,
        rules: Sequence[EventRule],
        slots: Iterable[PredictionSlot] = (),
        holds: Mapping[str, Hold] | None = None,
    ) -> None:
        """``holds``: the models' ``alerts:`` settings, the same the gateway's stored alerts
        use; a model without one alerts at every change to a fault label (``IMMEDIATE``)."""
        self.rules = tuple(rules) or ("every",)
        slots = tuple(slots)
        self._normal = _normals(slots)
        self._labels: dict[_Key, str] = {}
        self._staged_labels: dict[_Key, str] = {}
        self._tracks = follow_tracks({}, slots, holds)
        self._staged_tracks: dict[_Key, LabelTrack] = {}
        self._thresholds = [
            _Threshold(r.threshold) for r in self.rules if isinstance(r, ThresholdRule)
        ]
        self._staged_thresholds: list[dict[_Key, bool]] = [{} for _ in self._thresholds]

    def follow(self, slots: Iterable[PredictionSlot], holds: Mapping[str, Hold] | None) -> None:
        """Serve ``slots`` from now on (a mapping reload): the state of a slot that stays goes
        on (``bridge.alertrule.follow_tracks``); a new slot starts from its normal label."""
        slots = tuple(slots)
        self._normal = _normals(slots)
        self._tracks = follow_tracks(self._tracks, slots, holds)

    @property
    def stateful(self) -> bool:
        return any(r != "every" for r in self.rules)

    def seed(self, latest: Iterable[Prediction]) -> None:
        """Start from the last stored prediction of each (asset, model)."""
        for p in latest:
            key = (p.asset, p.model)
            label = label_of(p)
            if label is not None:
                self._labels[key] = label
                if key in self._tracks:
                    self._tracks[key].seed(label)
            for t in self._thresholds:
                x = _number(p, t.spec.field)
                if x is not None:
                    t.state[key] = t.beyond(x)

    def select(self, predictions: Sequence[Prediction]) -> list[Trigger]:
        """Events of a batch, oldest first; state changes are staged until ``commit``."""
        self._staged_labels = {}
        self._staged_tracks = {}
        self._staged_thresholds = [{} for _ in self._thresholds]
        out: list[Trigger] = []
        for p in predictions:
            trigger = self._one(p)
            if trigger is not None:
                out.append(trigger)
        return out

    def commit(self) -> None:
        """The batch of the last ``select`` is committed: keep the state it reached."""
        self._labels.update(self._staged_labels)
        self._tracks.update(self._staged_tracks)
        for t, staged in zip(self._thresholds, self._staged_thresholds, strict=True):
            t.state.update(staged)
        self._staged_labels = {}
        self._staged_tracks = {}
        self._staged_thresholds = [{} for _ in self._thresholds]

    def _one(self, p: Prediction) -> Trigger | None:
        if p.historical:
            # Made for the past (backfill): `every` reports it, but it is no label change,
            # alert or crossing of now, and the rules' state follows the live predictions only.
            return Trigger(p) if "every" in self.rules else None
        key = (p.asset, p.model)
        label_trigger: Trigger | None = None
        alert_trigger: Trigger | None = None
        label = label_of(p)
        if label is not None:
            # Before any prediction an asset counts as normal (same as the alert rule), so a
            # fault present at start-up is reported.
            previous = self._staged_labels.get(key, self._labels.get(key, self._normal.get(key)))
            self._staged_labels[key] = label
            if previous is not None and label != previous:
                label_trigger = Trigger(p, "label_change", previous)
            track = self._staged_track(key)
            left = track.step(label) if track is not None else None
            if left is not None:
                alert_trigger = Trigger(p, "alert", left)
        crossings = [
            t.step(key, p, staged)
            for t, staged in zip(self._thresholds, self._staged_thresholds, strict=True)
        ]
        for rule in self.rules:
            if rule == "every":
                return Trigger(p)
            if rule == "label_change" and label_trigger is not None:
                return label_trigger
            if rule == "alerts" and alert_trigger is not None:
                return alert_trigger
            if isinstance(rule, ThresholdRule):
                for t, crossing in zip(self._thresholds, crossings, strict=True):
                    if t.spec is rule.threshold and crossing is not None:
                        return crossing
        return None

    def _staged_track(self, key: _Key) -> LabelTrack | None:
        """The alert track of ``key`` as this batch left it (a copy until ``commit``)."""
        track = self._staged_tracks.get(key)
        if track is None and key in self._tracks:
            track = self._staged_tracks[key] = self._tracks[key].copy()
        return track
