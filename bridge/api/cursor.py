"""Page cursors: the position after the last item of a page, readable and exact. Pure.

A history cursor is ``<timestamp>_<row id>`` (the timestamp as Python writes a float, so it
reads back to the same double). Any string of that form is a valid position, which lets the
OpenAPI pattern describe exactly what is accepted.
"""

from __future__ import annotations

import math
import re

__all__ = ["HISTORY_CURSOR_PATTERN", "decode_history", "encode_history"]

HISTORY_CURSOR_PATTERN = r"^-?[0-9]{1,20}(\.[0-9]{1,20})?(e[-+]?[0-9]{1,3})?_[0-9]{1,18}$"
_HISTORY = re.compile(HISTORY_CURSOR_PATTERN)


def encode_history(key: tuple[float, int]) -> str:
    ts, row_id = key
    if not math.isfinite(ts) or not 0 <= row_id < 10**18:
        raise ValueError(f"cannot make a cursor of {key!r}")
    return f"{ts!r}_{row_id}"


def decode_history(cursor: str) -> tuple[float, int]:
    """ValueError with a message fit for the client when the cursor has another form."""
    if _HISTORY.match(cursor) is None:
        raise ValueError("cursor: not a cursor returned by this API")
    ts, row_id = cursor.rsplit("_", 1)
    # A huge exponent reads as infinity: still a position (before or after everything).
    return float(ts), int(row_id)
