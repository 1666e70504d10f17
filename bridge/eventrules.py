"""Event rules as settings: which predictions a durable destination wants as events.

Plain data that a destination connector's settings declare (``events:``) and its
``Capabilities.rules`` hand to the core; ``bridge.outbox.rules`` evaluates them. Kernel level,
so connectors and the destination contract (``bridge.destination``) use them without importing
the outbox package (which reaches the store).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "DRIFT_RULES",
    "EVENT_KINDS",
    "EventRule",
    "SimpleRule",
    "ThresholdRule",
    "ThresholdSpec",
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
