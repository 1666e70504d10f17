"""The MES payload's timestamps: the fast ``iso_utc`` gives the text ``datetime`` always gave."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.connectors.mes.payload import iso_utc


def _reference(ts: float) -> str:
    text = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@given(st.floats(min_value=-2e9, max_value=4e9, allow_nan=False, allow_infinity=False))
def test_iso_utc_is_the_text_of_datetime_isoformat(ts: float) -> None:
    assert iso_utc(ts) == _reference(ts)


@pytest.mark.parametrize(
    "ts",
    [0.0, 0.9999996, 0.9994999, 1.0005, -0.0000004, -1.5, 1714564800.9995, 1714564800.9999999],
)
def test_iso_utc_rounds_as_fromtimestamp_at_the_edges(ts: float) -> None:
    assert iso_utc(ts) == _reference(ts)


def test_iso_utc_keeps_none_and_marks_utc() -> None:
    assert iso_utc(None) is None
    assert iso_utc(1714564800.123456) == "2024-05-01T12:00:00.123Z"
