from __future__ import annotations

import math

import pytest

from bridge.config.resolved import ResolvedTag
from bridge.normalize import compile_transform, passes_deadband
from bridge.types import Quality

G, U, B = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD


def tag(**kw: object) -> ResolvedTag:
    base: dict[str, object] = dict(
        id="a.t",
        asset="a",
        name="t",
        source="s",
        address=None,
        unit="",
        scale=1.0,
        offset=0.0,
        deadband=0.0,
        clamp=None,
        max_age_s=10.0,
    )
    base.update(kw)
    return ResolvedTag(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "raw", "quality", "expected"),
    [
        ({}, 12, G, (12, G, "")),
        ({"scale": 0.1}, 215, G, (pytest.approx(21.5), G, "")),
        ({"scale": 0.1, "offset": -40.0}, 650, G, (pytest.approx(25.0), G, "")),
        ({"scale": 2.0}, 3, U, (6.0, U, "")),
        ({"scale": 10.0}, True, G, (True, G, "")),  # booleans are never scaled
        ({"scale": 10.0}, "RUN", G, ("RUN", G, "")),
        ({"scale": 10.0}, None, B, (None, B, "")),
        ({"clamp": (0.0, 100.0)}, 50.0, G, (50.0, G, "")),
    ],
)
def test_value_table(
    settings: dict[str, object],
    raw: object,
    quality: Quality,
    expected: tuple[object, Quality, str],
) -> None:
    assert compile_transform(tag(**settings))(raw, quality) == expected  # type: ignore[arg-type]


def test_clamp_marks_uncertain_and_says_why() -> None:
    value, quality, why = compile_transform(tag(clamp=(0.0, 100.0)))(104.5, G)
    assert (value, quality) == (100.0, U)
    assert "104.5 clamped to [0, 100]" in why
    value, quality, _ = compile_transform(tag(clamp=(0.0, 100.0)))(-3, B)
    assert (value, quality) == (0.0, B)  # never better than what the source said


@pytest.mark.parametrize("raw", [math.nan, math.inf, -math.inf])
def test_non_finite_is_bad(raw: float) -> None:
    value, quality, why = compile_transform(tag(scale=2.0))(raw, G)
    assert value is None and quality is B and "finite" in why


@pytest.mark.parametrize(
    ("previous", "value", "deadband", "passes"),
    [
        (10.0, 10.04, 0.05, False),
        (10.0, 10.05, 0.05, True),
        (10.0, 9.9, 0.05, True),
        (10.0, 10.0, 0.0, True),
        (None, 1.0, 0.5, True),
        (True, False, 0.5, True),
        (True, True, 0.5, False),
        ("A", "B", 1.0, True),
    ],
)
def test_deadband(previous: object, value: object, deadband: float, passes: bool) -> None:
    assert passes_deadband(previous, value, deadband) is passes  # type: ignore[arg-type]
