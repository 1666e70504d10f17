"""Fuzz of the action evaluator: whatever the action, its state and its inputs, nothing that
would reach the target (write, shadow, await_confirm) breaks a limit, and a faulted, shadow or
interlocked action never writes."""

from __future__ import annotations

import math
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.actions import ActionState, ModelView, TagView, evaluate
from bridge.actions.evaluate import TagChange
from bridge.config.actions import (
    ActionLimits,
    Condition,
    ModbusTarget,
    ResolvedAction,
    parse_expression,
)
from bridge.types import Prediction, Quality

NUMERIC = ["int16", "uint16", "int32", "float32", "float64"]
PASSES = {"write", "shadow", "await_confirm"}
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
# Mostly small numbers and Good inputs, so that many examples pass every check and the
# limits of what passes are what is being tested.
near = st.one_of(st.floats(-200, 200), finite)
good = st.sampled_from([Quality.GOOD] * 4 + list(Quality))
anything = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(), st.text(max_size=3)
)


@st.composite
def actions(draw: st.DrawFn) -> ResolvedAction:
    kind = draw(st.sampled_from([*NUMERIC, "bool"]))
    interlocks = tuple(
        Condition(f"a.i{i} {op} {lit}", f"a.i{i}", op, lit)
        for i, (op, lit) in enumerate(
            draw(st.lists(st.tuples(st.sampled_from(["<", ">", "=="]), near), max_size=2))
        )
    )
    age = {c.tag: 5.0 for c in interlocks} | {"a.speed": 5.0}
    if kind == "bool":
        limits = ActionLimits(max_writes_per_hour=draw(st.none() | st.integers(1, 5)))
        value: dict[str, object] = {"constant": draw(st.booleans())}
    else:
        lo = draw(near)
        hi = draw(st.floats(min_value=lo, max_value=lo + 500, allow_nan=False))
        if kind.startswith("uint"):
            lo, hi = abs(lo), abs(lo) + (hi - lo)
        limits = ActionLimits(
            min=lo,
            max=hi,
            clamp=draw(st.booleans()),
            max_rate_per_min=draw(st.none() | st.floats(0.001, 1e4)),
            max_writes_per_hour=draw(st.none() | st.integers(1, 5)),
            deadband=draw(st.floats(0, 100)),
        )
        how = draw(st.sampled_from(["constant", "expression", "output"]))
        value = {
            "constant": draw(st.floats(lo, hi)) if how == "constant" else None,
            "expression": parse_expression(
                draw(st.sampled_from(["tags.speed - 50", "value * 2", "last + score", "1 / score"]))
            )
            if how == "expression"
            else None,
            "output": "value" if how == "output" else None,
        }
    table = "coil" if kind == "bool" else "holding"
    return ResolvedAction(
        name="a",
        asset="a",
        target=ModbusTarget(source="plc", table=table, address=0, type=kind),  # type: ignore[arg-type]
        value_type=kind,  # type: ignore[arg-type]
        mode=draw(st.sampled_from(["auto", "confirm", "shadow"])),
        limits=limits,
        model="m",
        label=None,
        min_score=None,
        trigger_tag=None,
        constant=value.get("constant"),  # type: ignore[arg-type]
        expression=value.get("expression"),  # type: ignore[arg-type]
        output=value.get("output"),  # type: ignore[arg-type]
        interlocks=interlocks,
        confirm_timeout_s=None,
        max_age_s=age,
        expression_tags={"speed": "a.speed"},
    )


views = st.builds(
    TagView,
    value=st.one_of(near, st.booleans(), st.none(), st.just(math.nan)),
    quality=good,
    age_s=st.floats(0, 8),
)


@st.composite
def states(draw: st.DrawFn, now: float) -> ActionState:
    writes = sorted(draw(st.lists(st.floats(now - 7200, now), max_size=6)))
    return ActionState(
        armed_version=draw(st.sampled_from([None, "1", "1", "1", "2"])),
        fallback=draw(st.sampled_from([None, None, None, "inputs stale"])),
        fault=draw(st.sampled_from([None, None, None, "read-back mismatch"])),
        last_value=draw(st.none() | near | st.booleans()),
        last_time=writes[-1] if writes else draw(st.none() | st.floats(now - 7200, now + 10)),
        writes=deque(writes),
    )


NOW = 1_000_000.0


@settings(max_examples=300, deadline=None)
@given(
    action=actions(),
    tags=st.dictionaries(st.sampled_from(["a.i0", "a.i1", "a.i2", "a.speed"]), views, max_size=4),
    state=states(NOW),
    version=st.sampled_from(["1", "1", "2"]),
    drifting=st.sampled_from([False, False, True]),
    quality=good,
    value=st.one_of(near, anything),
    score=st.none() | st.floats(0, 1),
)
def test_no_input_breaks_a_limit(
    action: ResolvedAction,
    tags: dict[str, TagView],
    state: ActionState,
    version: str,
    drifting: bool,
    quality: Quality,
    value: object,
    score: float | None,
) -> None:
    prediction = Prediction(
        "id",
        1,
        "a",
        "m",
        version,
        "",
        value,
        score,
        quality,
        NOW,
        0.0,  # type: ignore[arg-type]
    )
    decision = evaluate(action, prediction, tags, ModelView(version, drifting), state, NOW)
    limits = action.limits
    if decision.outcome == "write":
        assert action.mode == "auto" and decision.fallback is None
        assert state.fault is None and state.fallback is None
    if state.fault is not None or action.mode == "shadow":
        assert decision.outcome != "write"
    if decision.fallback is not None:
        assert decision.outcome in ("shadow", "refuse", "hold")
    for c in action.interlocks:
        view = tags.get(c.tag)
        fails = (
            view is None
            or view.quality != Quality.GOOD
            or not view.age_s <= 5.0
            or not c.holds(view.value)
        )
        if fails:
            assert decision.outcome not in PASSES, decision
    if decision.outcome not in PASSES:
        assert decision.value is None
        return
    v = decision.value
    if action.value_type == "bool":
        assert isinstance(v, bool)
    else:
        assert isinstance(v, int | float) and not isinstance(v, bool)
        assert math.isfinite(v)
        assert limits.min is not None and limits.max is not None
        assert limits.min <= v <= limits.max
        if not limits.clamp:
            # Without clamp a value asked for outside the limits is refused, never moved in.
            requested = decision.requested
            assert isinstance(requested, int | float)
            assert limits.min <= requested <= limits.max
        if action.value_type in ("int16", "uint16", "int32"):
            assert isinstance(v, int)
        last = state.last_value
        if isinstance(last, int | float) and not isinstance(last, bool):
            if limits.max_rate_per_min is not None and state.last_time is not None:
                allowed = limits.max_rate_per_min * max(0.0, NOW - state.last_time) / 60
                assert abs(v - last) <= allowed
            assert abs(v - last) >= limits.deadband or limits.deadband == 0
    if limits.max_writes_per_hour is not None:
        assert state.writes_in_hour(NOW) < limits.max_writes_per_hour


@settings(max_examples=100, deadline=None)
@given(action=actions(), state=states(NOW))
def test_the_evaluator_does_not_change_the_state(
    action: ResolvedAction, state: ActionState
) -> None:
    before = (state.fallback, state.fault, state.last_value, state.last_time, list(state.writes))
    evaluate(action, TagChange("a.speed"), {}, None, state, NOW)
    assert before == (
        state.fallback,
        state.fault,
        state.last_value,
        state.last_time,
        list(state.writes),
    )
