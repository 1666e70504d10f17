"""Pure helpers of the API: time parsing, overall health, tag age."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.api.schemas import TagOut, overall_status
from bridge.api.timeparse import epoch_to_datetime, parse_time
from bridge.api.view import TagState
from bridge.types import ComponentHealth, Quality


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1714564800", 1714564800.0),
        ("1714564800.5", 1714564800.5),
        ("2024-05-01T12:00:00Z", 1714564800.0),
        ("2024-05-01T14:00:00+02:00", 1714564800.0),
        ("2024-05-01T12:00:00.250", 1714564800.25),  # no zone: UTC
        ("2024-05-01", 1714521600.0),
    ],
)
def test_parse_time_accepts_iso_and_epoch(text: str, expected: float) -> None:
    assert parse_time(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "", "nan", "inf", "2024-13-01T00:00:00Z"])
def test_parse_time_rejects_with_a_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"ISO 8601|finite"):
        parse_time(text)


def test_epoch_to_datetime_is_utc() -> None:
    assert epoch_to_datetime(1714564800.0) == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert epoch_to_datetime(None) is None


def c(state: str) -> ComponentHealth:
    return ComponentHealth(name=state, state=state)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], "ok"),
        (["ok", "ok"], "ok"),
        (["ok", "degraded"], "degraded"),
        (["ok", "starting"], "degraded"),
        (["ok", "down"], "degraded"),
        (["down", "down"], "down"),
        (["down", "stopped"], "down"),
    ],
)
def test_overall_status(states: list[str], expected: str) -> None:
    assert overall_status([c(s) for s in states]) == expected


def test_tag_age_prefers_source_then_server_then_received_time() -> None:
    state = TagState(
        tag="p1.temp",
        asset="p1",
        name="temp",
        source="plc",
        value=21.5,
        unit="degC",
        quality=Quality.GOOD,
        source_time=None,
        server_time=100.0,
        received_time=101.0,
        reason="",
    )
    out = TagOut.of(state, now=110.0)
    assert out.age_s == pytest.approx(10.0)
    assert out.quality == "Good"
    no_time = TagOut.of(
        TagState("a.b", "a", "b", "s", None, "", Quality.BAD, None, None, None, "never read"),
        now=5.0,
    )
    assert no_time.age_s is None
