"""Query parameters shared by several endpoints."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import HTTPException, Query, Request

from .timeparse import MAX_EPOCH_S, parse_time

__all__ = [
    "MAX_LIMIT",
    "WIDE_RANGE",
    "Since",
    "Until",
    "bounded_range",
    "single_valued_query",
    "time_param",
    "time_range",
]

MAX_LIMIT = 1000
# The documented answer of operations with a time range (route keyword for ``secured``).
WIDE_RANGE = (400, "The time range is wider than gateway.api.max_history_days")

# The documented forms, so a client (and schemathesis) knows what is accepted: epoch seconds,
# or an RFC 3339 date-time / date (any ISO 8601 that Python reads is accepted too).
_TIME_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_S},
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "date"},
    ]
}
Since = Annotated[
    str | None,
    Query(
        description="From this time (inclusive): ISO 8601 or epoch seconds. "
        "After `until`: nothing matches.",
        json_schema_extra=_TIME_SCHEMA,
    ),
]
Until = Annotated[
    str | None,
    Query(
        description="Up to this time (inclusive): ISO 8601 or epoch seconds.",
        json_schema_extra=_TIME_SCHEMA,
    ),
]


def time_param(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise HTTPException(422, f"{name}: {exc}") from exc


def time_range(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    # ``since`` after ``until`` is an empty range, not an error: the answer is simply empty.
    return time_param("since", since), time_param("until", until)


def bounded_range(
    days: float, since: str | None, until: str | None
) -> tuple[float | None, float | None]:
    """``time_range``, refused (400) when wider than ``days`` (gateway.api.max_history_days).

    ``since`` alone reaches up to now. A range open at the start is left to the page limit
    and the statement timeout: newest first, it reads no further back than one page."""
    since_ts, until_ts = time_range(since, until)
    if since_ts is not None:
        end = until_ts if until_ts is not None else time.time()
        if end - since_ts > days * 86400:
            raise HTTPException(
                400,
                f"since..until spans {(end - since_ts) / 86400:.1f} days; at most {days:g} days "
                "are allowed (gateway.api.max_history_days): ask for narrower ranges in turn",
            )
    return since_ts, until_ts


async def single_valued_query(request: Request) -> None:
    """No parameter of this API is a list: a repeated one is an error, not "the last wins"."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise HTTPException(422, f"{name}: given more than once")
        seen.add(name)
