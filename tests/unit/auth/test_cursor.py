"""Page cursors of the API round-trip exactly, and other strings are refused clearly."""

from __future__ import annotations

import re

import pytest

from bridge.api.cursor import HISTORY_CURSOR_PATTERN, decode_history, encode_history


@pytest.mark.parametrize(
    "key",
    [(1714564800.123456, 7), (0.0, 0), (-1.5, 10**18 - 1), (1e-7, 3), (0.1 + 0.2, 5)],
)
def test_history_cursor_round_trips_the_exact_double(key: tuple[float, int]) -> None:
    token = encode_history(key)
    assert re.match(HISTORY_CURSOR_PATTERN, token)
    assert decode_history(token) == key


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "1.5",
        "1.5_",
        "_3",
        "1.5_-3",
        "1.5_3_4",
        "nan_1",
        "inf_1",
        "1.5_1234567890123456789",
    ],
)
def test_other_strings_are_value_errors(token: str) -> None:
    with pytest.raises(ValueError, match="not a cursor returned by this API"):
        decode_history(token)


def test_positions_that_cannot_be_written_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_history((float("nan"), 1))
    with pytest.raises(ValueError):
        encode_history((1.0, 10**18))
