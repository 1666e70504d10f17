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
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bridge.types import Prediction, PredictionSlot, Quality

__all__ = [
    "DRIFT_RULES",
    "EVENT_KINDS",
    "EventRule",
    "EventSelector",
    "ThresholdRule",
    "ThresholdSpec",
    "Trigger",
]

SimpleRule = Literal["every", "label_change", "alerts"]
EVENT_KINDS = ("prediction", "label_change", "threshold", "alert", "drift")
# Rules whose destinations also get the drift events raised outside the prediction flow.
DRIFT_RULES = ("every", "alerts")


class ThresholdSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: Literal["score", "value"] = Field(
        description="What is compared: the prediction's `score` (a classifier's probability) "
        "or its numeric `value` (a regressor's output)."
    )
    above: float | None = Field(None, description="An event when the field rises above this limit.")
    below: float | None = Field(None, description="An event when the field falls below this limit.")
    hysteresis: float = Field(
        0.0,
        ge=0,
        description="The field must come back past the limit by this much before another "
        "crossing counts (keeps a noisy value near the limit from flooding the MES).",
    )
    notify_clear: bool = Field(
        False,
        description="Also send an event (crossing `clear`) when the field is back past the "
        "limit by the hysteresis.",
    )

    @model_validator(mode="after")
    def _one_limit(self) -> ThresholdSpec:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of `above:` or `below:`")
        return self

    @property
    def limit(self) -> float:
        return self.above if self.above is not None else float(self.below or 0.0)


class ThresholdRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: ThresholdSpec = Field(description="A threshold crossing of score or value.")


_SIMPLE = ("every", "label_change", "alerts")
_RULE_HINT = "use every, label_change, alerts or threshold: {field, above|below, hysteresis}"


def _one_rule(value: Any) -> Any:
    """One readable error per wrong rule, instead of one per member of the union."""
    if isinstance(value, str):
        if value not in _SIMPLE:
            raise PydanticCustomError("event_rule", "unknown event rule", {"hint": _RULE_HINT})
        return value
    if isinstance(value, dict):
        try:
            return ThresholdRule.model_validate(value)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            raise PydanticCustomError(
                "event_rule",
                "{where}: {msg}",
                {
                    "where": where,
                    "msg": err["msg"].removeprefix("Value error, "),
                    "hint": _RULE_HINT,
                },
            ) from None
    if isinstance(value, ThresholdRule):
        return value
    raise PydanticCustomError(
        "event_rule", "an event rule is a name or a threshold: mapping", {"hint": _RULE_HINT}
    )


EventRule = Annotated[
    SimpleRule | ThresholdRule,
    BeforeValidator(_one_rule),
    Field(
        description="`every` (each prediction), `label_change` (a classifier's label differs "
        "from the asset's previous one), `alerts` (the alerts bridge raises: a change to a "
        "label other than the model's first, normal one) or `threshold: {field, above|below, "
        "hysteresis}`."
    ),
]


@dataclass(frozen=True, slots=True)
class Trigger:
    """Why a prediction became an event: the first matching rule (in the destination's order).

    ``previous`` is the label before a label change or alert; ``crossing`` (``enter`` or
    ``clear``), ``limit`` and ``field`` describe a threshold crossing. A ``drift`` event carries
    the drift details (``bridge.drift.events.drift_details``) and the asset's latest prediction,
    its id replaced by the drift event's id (the Idempotency-Key).
    """

    prediction: Prediction
    event: str = "prediction"
    previous: str | None = None
    crossing: str | None = None
    limit: float | None = None
    field: str | None = None
    drift: Mapping[str, Any] | None = None


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


class EventSelector:
    """The rules of one destination, with their state per (asset, model)."""

    def __init__(self, rules: Sequence[EventRule], slots: Iterable[PredictionSlot] = ()) -> None:
        self.rules = tuple(rules) or ("every",)
        self._normal = {(s.asset, s.model): s.labels[0] for s in slots if s.labels}
        self._labels: dict[_Key, str] = {}
        self._staged_labels: dict[_Key, str] = {}
        self._thresholds = [
            _Threshold(r.threshold) for r in self.rules if isinstance(r, ThresholdRule)
        ]
        self._staged_thresholds: list[dict[_Key, bool]] = [{} for _ in self._thresholds]

    @property
    def stateful(self) -> bool:
        return any(r != "every" for r in self.rules)

    def seed(self, latest: Iterable[Prediction]) -> None:
        """Start from the last stored prediction of each (asset, model)."""
        for p in latest:
            key = (p.asset, p.model)
            if isinstance(p.value, str) and p.quality is not Quality.BAD:
                self._labels[key] = p.value
            for t in self._thresholds:
                x = _number(p, t.spec.field)
                if x is not None:
                    t.state[key] = t.beyond(x)

    def select(self, predictions: Sequence[Prediction]) -> list[Trigger]:
        """Events of a batch, oldest first; state changes are staged until ``commit``."""
        self._staged_labels = {}
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
        for t, staged in zip(self._thresholds, self._staged_thresholds, strict=True):
            t.state.update(staged)
        self._staged_labels = {}
        self._staged_thresholds = [{} for _ in self._thresholds]

    def _one(self, p: Prediction) -> Trigger | None:
        key = (p.asset, p.model)
        label_trigger: Trigger | None = None
        alert_trigger: Trigger | None = None
        if isinstance(p.value, str) and p.quality is not Quality.BAD:
            normal = self._normal.get(key)
            # Before any prediction an asset counts as normal (same as the alert rule), so a
            # fault present at start-up is reported.
            previous = self._staged_labels.get(key, self._labels.get(key, normal))
            self._staged_labels[key] = p.value
            if previous is not None and p.value != previous:
                label_trigger = Trigger(p, "label_change", previous)
                if normal is not None and p.value != normal:
                    alert_trigger = Trigger(p, "alert", previous)
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
