"""The evaluator's rules on known cases: what is refused, clamped, held, or shadowed."""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from bridge.actions import ActionState, ModelView, TagView, evaluate
from bridge.config.actions import ActionLimits, Condition, ModbusTarget, ResolvedAction
from bridge.types import Prediction, Quality

NOW = 10_000.0
RUNNING = Condition("running == true", "p.running", "==", True)
ACTION = ResolvedAction(
    name="a",
    asset="p",
    target=ModbusTarget(source="plc", table="holding", address=0, type="float64"),
    value_type="float64",
    mode="auto",
    limits=ActionLimits(min=0, max=100, max_rate_per_min=60, deadband=1, max_writes_per_hour=2),
    model="m",
    label=None,
    min_score=None,
    trigger_tag=None,
    constant=None,
    expression=None,
    output="value",
    interlocks=(RUNNING,),
    confirm_timeout_s=None,
    max_age_s={"p.running": 5.0},
)
TAGS = {"p.running": TagView(True, Quality.GOOD, 1.0)}


def _run(value: float, action: ResolvedAction = ACTION, **state: object) -> object:
    st = ActionState(armed_version="1", **state)  # type: ignore[arg-type]
    pred = Prediction("i", 1, "p", "m", "1", "", value, None, Quality.GOOD, NOW, 0.0)
    return evaluate(action, pred, TAGS, ModelView("1"), st, NOW)


def test_within_every_limit_writes() -> None:
    d = _run(50.0, last_value=40.0, last_time=NOW - 60)
    assert d.outcome == "write" and d.value == 50.0  # type: ignore[attr-defined]


def test_outside_the_range_is_refused_unless_clamp() -> None:
    assert _run(150.0).outcome == "refuse"  # type: ignore[attr-defined]
    clamped = replace(ACTION, limits=ACTION.limits.model_copy(update={"clamp": True}))
    d = _run(150.0, clamped)
    assert d.outcome == "write" and d.value == 100.0  # type: ignore[attr-defined]


def test_rate_and_deadband_and_hourly_count() -> None:
    # 60/min, 10 s after the last write: 10 allowed.
    assert _run(55.0, last_value=40.0, last_time=NOW - 10).outcome == "refuse"  # type: ignore[attr-defined]
    clamped = replace(ACTION, limits=ACTION.limits.model_copy(update={"clamp": True}))
    d = _run(55.0, clamped, last_value=40.0, last_time=NOW - 10)
    assert d.value == 50.0  # type: ignore[attr-defined]
    assert _run(40.5, last_value=40.0, last_time=NOW - 60).outcome == "hold"  # type: ignore[attr-defined]
    busy = {"writes": deque([NOW - 3000, NOW - 10]), "last_value": 40.0, "last_time": NOW - 10}
    assert _run(45.0, **busy).outcome == "refuse"  # type: ignore[attr-defined]
    busy["writes"] = deque([NOW - 4000, NOW - 10])  # one left the hour
    assert _run(45.0, **busy).outcome == "write"  # type: ignore[attr-defined]


def test_interlocks_need_good_fresh_and_true() -> None:
    for view in (
        TagView(False, Quality.GOOD, 1.0),
        TagView(True, Quality.BAD, 1.0),
        TagView(True, Quality.GOOD, 6.0),
    ):
        pred = Prediction("i", 1, "p", "m", "1", "", 50.0, None, Quality.GOOD, NOW, 0.0)
        d = evaluate(ACTION, pred, {"p.running": view}, ModelView("1"), ActionState("1"), NOW)
        assert d.outcome == "refuse" and d.interlocks[0].ok is False


def test_fallback_to_shadow_on_drift_version_or_bad_inputs() -> None:
    pred = Prediction("i", 1, "p", "m", "2", "", 50.0, None, Quality.GOOD, NOW, 0.0)
    d = evaluate(ACTION, pred, TAGS, ModelView("2"), ActionState("1"), NOW)
    assert d.outcome == "shadow" and "version" in (d.fallback or "")
    d = evaluate(ACTION, pred, TAGS, ModelView("1", drifting=True), ActionState("1"), NOW)
    assert d.outcome == "shadow" and "drift" in (d.fallback or "")
    bad = replace(pred, version="1", quality=Quality.UNCERTAIN)
    d = evaluate(ACTION, bad, TAGS, ModelView("1"), ActionState("1"), NOW)
    assert d.outcome == "shadow"
    latched = ActionState("1", fallback="inputs stale")
    d = evaluate(ACTION, replace(pred, version="1"), TAGS, ModelView("1"), latched, NOW)
    assert d.outcome == "shadow"
    latched.arm("1")
    d = evaluate(ACTION, replace(pred, version="1"), TAGS, ModelView("1"), latched, NOW)
    assert d.outcome == "write"


def test_confirm_faulted_and_integer_rounding() -> None:
    assert _run(50.0, replace(ACTION, mode="confirm")).outcome == "await_confirm"  # type: ignore[attr-defined]
    assert _run(50.0, fault="read-back mismatch").outcome == "refuse"  # type: ignore[attr-defined]
    ints = replace(ACTION, value_type="int16")
    d = _run(49.6, ints)
    assert d.value == 50 and isinstance(d.value, int)  # type: ignore[attr-defined]
