"""The action evaluator: one triggering event in, one ``Decision`` out. Pure: no I/O, no clock
(``now`` is a parameter), no change to the state it reads; the caller applies the decision
(``ActionState.fall_back`` with ``Decision.fallback``, ``record_write`` once a write was read
back).

The rules, in the order a decision records them (docs/actions.md says the same for users):

1. A faulted action refuses everything.
2. A trigger that does not hold (another label, a low score, a false tag condition) is ``hold``.
3. An ``auto`` or ``confirm`` action falls back to ``shadow`` (``Decision.fallback``) when it
   is not armed, its inputs are Bad, Uncertain or stale, its model drifts, or the serving model
   version is not the one it was armed under; the caller latches that until re-armed.
4. The value (constant, expression, model output) must be a finite number (a bool for bool
   targets); integer types take the nearest integer, float32 the nearest float32 inside the
   limits.
5. Outside [min, max] refuses, or with ``clamp: true`` takes the nearest allowed value.
6. A step from the last written value larger than ``max_rate_per_min`` allows since that
   write refuses, or with ``clamp: true`` moves as far as allowed.
7. ``max_writes_per_hour`` writes in the last 60 minutes refuse another.
8. Every interlock needs a Good value no older than its tag's max_age_s, and its condition
   true; anything else refuses.
9. A step below ``deadband`` from the last written value is ``hold``.
10. What passes is ``write`` (auto), ``await_confirm`` (confirm) or ``shadow``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeGuard

from bridge.actions.state import ActionState
from bridge.config.actions import INT_RANGES, Condition, ExpressionError, ResolvedAction
from bridge.types import Prediction, Quality, TagValue

__all__ = [
    "Check",
    "Decision",
    "Event",
    "InterlockReading",
    "ModelView",
    "Outcome",
    "TagChange",
    "TagView",
    "evaluate",
]

Outcome = Literal["write", "shadow", "await_confirm", "refuse", "hold"]
_OUTCOME: dict[str, Outcome] = {"auto": "write", "confirm": "await_confirm", "shadow": "shadow"}


@dataclass(frozen=True, slots=True)
class TagView:
    """A tag as the tag table has it at evaluation time."""

    value: TagValue
    quality: Quality
    age_s: float  # now - the value's source (or received) time


@dataclass(frozen=True, slots=True)
class TagChange:
    """A tag-triggered evaluation: the tag (``asset.tag``) that changed."""

    tag: str


Event = Prediction | TagChange


@dataclass(frozen=True, slots=True)
class ModelView:
    """The serving model of a prediction-triggered action."""

    version: str
    drifting: bool = False  # the asset's drift score is past the model's threshold


@dataclass(frozen=True, slots=True)
class Check:
    """One rule as judged: its name (``range``, ``rate``, ``per_hour``, ``deadband``,
    ``value``, ``trigger``, ``fault``), whether it passed, and the figures behind it."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class InterlockReading:
    condition: str
    tag: str
    value: TagValue
    quality: Quality | None  # None: the tag has no value at all
    age_s: float | None
    ok: bool
    reason: str  # why not ok; "" when ok


@dataclass(frozen=True, slots=True)
class Decision:
    """``value``: what is written (write), would be (shadow) or is offered (await_confirm);
    None for refuse and hold. ``requested``: the value before rounding and clamping."""

    action: str
    outcome: Outcome
    value: float | int | bool | None
    requested: float | bool | None
    reasons: tuple[str, ...]
    checks: tuple[Check, ...]
    interlocks: tuple[InterlockReading, ...]
    fallback: str | None  # why an auto/confirm action is in shadow now (new or latched)
    mode: Literal["auto", "confirm", "shadow"]  # the mode applied (after any fallback)
    time: float


def evaluate(
    action: ResolvedAction,
    event: Event,
    tags: Mapping[str, TagView],
    model: ModelView | None,
    state: ActionState,
    now: float,
) -> Decision:
    checks: list[Check] = []
    reasons: list[str] = []

    def done(
        outcome: Outcome,
        value: float | int | bool | None = None,
        requested: float | bool | None = None,
        interlocks: tuple[InterlockReading, ...] = (),
        fallback: str | None = None,
        mode: Literal["auto", "confirm", "shadow"] = action.mode,
    ) -> Decision:
        return Decision(
            action.name,
            outcome,
            value,
            requested,
            tuple(reasons),
            tuple(checks),
            interlocks,
            fallback,
            mode,
            now,
        )

    if state.fault is not None:
        checks.append(Check("fault", False, state.fault))
        reasons.append(f"faulted: {state.fault}")
        return done("refuse")
    held = _trigger(action, event, tags)
    if held:
        checks.append(Check("trigger", False, held))
        reasons.append(held)
        return done("hold")
    checks.append(Check("trigger", True, ""))

    fallback = state.fallback or _fallback(action, event, tags, model, state, now)
    mode = action.mode
    if fallback is not None and mode != "shadow":
        mode = "shadow"

    requested = _requested(action, event, tags, state)
    if isinstance(requested, str):
        checks.append(Check("value", False, requested))
        reasons.append(requested)
        return done("refuse", fallback=fallback, mode=mode)
    checks.append(Check("value", True, f"requested {requested!r}"))

    value = _limited(action, requested, state, now, checks, reasons)
    interlocks = tuple(_interlock(action, c, tags) for c in action.interlocks)
    for reading in interlocks:
        if not reading.ok:
            reasons.append(f"interlock `{reading.condition}`: {reading.reason}")
    if reasons or value is None:
        return done("refuse", None, requested, interlocks, fallback, mode)

    last = state.last_value
    limits = action.limits
    if not isinstance(value, bool) and _is_number(last) and limits.deadband > 0:
        step = abs(float(value) - float(last))
        if step < limits.deadband:
            checks.append(Check("deadband", False, f"|{value} - {last}| < {limits.deadband}"))
            reasons.append(f"within the deadband ({step:g} < {limits.deadband:g})")
            return done("hold", None, requested, interlocks, fallback, mode)
        checks.append(Check("deadband", True, f"|{value} - {last}| >= {limits.deadband}"))
    return done(_OUTCOME[mode], value, requested, interlocks, fallback, mode)


def _trigger(action: ResolvedAction, event: Event, tags: Mapping[str, TagView]) -> str:
    """Why the event does not trigger the action ("" when it does)."""
    if action.trigger_tag is not None:
        cond = action.trigger_tag
        if not isinstance(event, TagChange) or event.tag != cond.tag:
            return "not this action's trigger"
        view = tags.get(cond.tag)
        if view is None or view.quality != Quality.GOOD:
            return f"trigger tag {cond.tag} has no Good value"
        if not cond.holds(view.value):
            return f"`{cond.text}` does not hold ({cond.tag} = {view.value!r})"
        return ""
    if not isinstance(event, Prediction):
        return "not this action's trigger"
    if event.model != action.model or event.asset != action.asset or event.historical:
        return "not this action's trigger"
    if action.label is not None and event.value != action.label:
        return f"label {event.value!r} is not {action.label!r}"
    if action.min_score is not None and (event.score is None or event.score < action.min_score):
        return f"score {event.score!r} is below {action.min_score}"
    return ""


def _fallback(
    action: ResolvedAction,
    event: Event,
    tags: Mapping[str, TagView],
    model: ModelView | None,
    state: ActionState,
    now: float,
) -> str | None:
    if state.armed_version is None:
        return "not armed"
    if isinstance(event, Prediction):
        if event.quality != Quality.GOOD:
            return f"prediction quality {event.quality.label} ({event.reason or 'no reason'})"
        if model is None:
            return "the serving model is unknown"
        if model.drifting:
            return f"model {action.model} drifts past its threshold"
        if model.version != state.armed_version:
            return f"model version {model.version} is not {state.armed_version} (armed)"
    inputs = [action.trigger_tag.tag] if action.trigger_tag is not None else []
    for tag in (*inputs, *action.expression_tags.values()):
        view = tags.get(tag)
        problem = _tag_problem(action, tag, view)
        if problem:
            return f"input {tag} {problem}"
    return None


def _tag_problem(action: ResolvedAction, tag: str, view: TagView | None) -> str:
    if view is None:
        return "has no value"
    if view.quality != Quality.GOOD:
        return f"is {view.quality.label}"
    max_age = action.max_age_s.get(tag)
    if max_age is not None and not view.age_s <= max_age:
        return f"is stale ({view.age_s:g} s old, max {max_age:g} s)"
    return ""


def _requested(
    action: ResolvedAction, event: Event, tags: Mapping[str, TagView], state: ActionState
) -> float | bool | str:
    """The value asked for, or why there is none (a str)."""
    raw: object
    if action.constant is not None:
        raw = action.constant
    elif action.output is not None:
        raw = getattr(event, action.output, None)
    elif action.expression is not None:
        pred = event if isinstance(event, Prediction) else None
        fields = {
            "value": pred.value if pred is not None else None,
            "score": pred.score if pred is not None else None,
            "drift_score": pred.drift_score if pred is not None else None,
            "last": state.last_value,
        }
        values = {
            name: (tags[tag].value if tag in tags else None)
            for name, tag in action.expression_tags.items()
        }
        try:
            raw = action.expression.evaluate(fields, values)
        except (ExpressionError, OverflowError) as exc:
            return f"the expression cannot be computed: {exc}"
    else:
        return "the action has no value"
    if action.value_type == "bool":
        return raw if isinstance(raw, bool) else f"{raw!r} is not true/false"
    if not _is_number(raw):
        return f"{raw!r} is not a number"
    number = float(raw)
    if not math.isfinite(number):
        return f"{number!r} is not a finite number"
    return number


def _limited(
    action: ResolvedAction,
    requested: float | bool,
    state: ActionState,
    now: float,
    checks: list[Check],
    reasons: list[str],
) -> float | int | bool | None:
    """The value after range, rate and writes-per-hour (None: refused, reasons say why)."""
    limits = action.limits
    count = state.writes_in_hour(now)
    if limits.max_writes_per_hour is not None:
        ok = count < limits.max_writes_per_hour
        checks.append(Check("per_hour", ok, f"{count} of {limits.max_writes_per_hour}"))
        if not ok:
            reasons.append(f"{count} writes in the last hour (max {limits.max_writes_per_hour})")
    if isinstance(requested, bool):
        return requested
    kind = action.value_type
    assert limits.min is not None and limits.max is not None  # the loader requires both
    low, high = limits.min, limits.max
    if not low <= requested <= high:
        if not limits.clamp:
            checks.append(Check("range", False, f"{requested:g} outside [{low:g}, {high:g}]"))
            reasons.append(f"{requested:g} is outside the limits [{low:g}, {high:g}]")
            return None
        checks.append(Check("range", True, f"{requested:g} clamped into [{low:g}, {high:g}]"))
    else:
        checks.append(Check("range", True, f"{requested:g} in [{low:g}, {high:g}]"))
    value = _fit(requested, low, high, kind)
    if value is None:
        checks.append(Check("range", False, f"no {kind} value in [{low:g}, {high:g}]"))
        reasons.append(f"no {kind} value lies in [{low:g}, {high:g}]")
        return None
    last, since = state.last_value, state.last_time
    rate = limits.max_rate_per_min
    if rate is not None and _is_number(last) and since is not None:
        allowed = rate * max(0.0, now - since) / 60.0
        base = float(last)
        step = abs(value - base)
        detail = f"|{value:g} - {base:g}| = {step:g}, {allowed:g} allowed"
        if step > allowed:
            if not limits.clamp:
                checks.append(Check("rate", False, detail))
                reasons.append(f"step {step:g} is above the {allowed:g} the rate limit allows")
                return None
            value = _fit(value, max(low, base - allowed), min(high, base + allowed), kind)
            if value is None:
                checks.append(Check("rate", False, detail + ", none reachable in range"))
                reasons.append("no value within both the limits and the rate limit")
                return None
            checks.append(Check("rate", True, detail + f", clamped to {value:g}"))
        else:
            checks.append(Check("rate", True, detail))
    return value


def _fit(value: float, low: float, high: float, kind: str) -> float | int | None:
    """The value of type ``kind`` in [low, high] nearest to ``value`` (None: none exists)."""
    if low > high:
        return None
    x = min(max(value, low), high)
    if kind in INT_RANGES:
        # Nearest integer (halves to even, Python's round), then back inside the bounds.
        n = round(x)
        if n < low:
            n = math.ceil(low)
        if n > high:
            n = math.floor(high)
        return n if low <= n <= high else None
    if kind == "float32":
        q = _f32(x)
        if q > high:
            q = _next32(q, down=True)
        if q < low:
            q = _next32(q, down=False)
        return q if low <= q <= high else None
    return x


def _f32(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


def _next32(x: float, *, down: bool) -> float:
    """The adjacent float32 below (``down``) or above ``x`` (a finite float32 value)."""
    if x == 0.0:
        bits = 0x80000001 if down else 0x00000001  # the smallest subnormals
    else:
        bits = struct.unpack(">I", struct.pack(">f", x))[0]
        # Float bits grow with the magnitude: away from zero is +1 on either sign.
        bits += 1 if (x > 0) != down else -1
    return float(struct.unpack(">f", struct.pack(">I", bits))[0])


def _interlock(
    action: ResolvedAction, cond: Condition, tags: Mapping[str, TagView]
) -> InterlockReading:
    text, tag = cond.text, cond.tag
    view = tags.get(tag)
    if view is None:
        return InterlockReading(text, tag, None, None, None, False, "no value")
    problem = _tag_problem(action, tag, view)
    if problem:
        return InterlockReading(text, tag, view.value, view.quality, view.age_s, False, problem)
    holds = cond.holds(view.value)
    reason = "" if holds else f"false ({tag} = {view.value!r})"
    return InterlockReading(text, tag, view.value, view.quality, view.age_s, holds, reason)


def _is_number(value: object) -> TypeGuard[float | int]:
    return isinstance(value, int | float) and not isinstance(value, bool)
