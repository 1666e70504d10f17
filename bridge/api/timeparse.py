"""Time values in and out of the API. Pure."""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["MAX_EPOCH_S", "epoch_to_datetime", "parse_time"]

MAX_EPOCH_S = 1e11  # year 5138: anything larger is a mistake (milliseconds, not seconds)


def epoch_to_datetime(ts: float | None) -> datetime | None:
    """Epoch seconds -> aware UTC datetime (serialized by pydantic as ISO 8601)."""
    if ts is None or not math.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, tz=UTC)


def parse_time(text: str) -> float:
    """ISO 8601 (``2024-05-01T12:00:00Z``; no zone means UTC) or epoch seconds -> epoch seconds.

    Raises ValueError with a message fit for the API client.
    """
    raw = text.strip()
    try:
        number = float(raw)
    except ValueError:
        pass
    else:
        if not 0 <= number <= MAX_EPOCH_S:
            raise ValueError(
                f"{text!r} is not a finite number of seconds from 0 to {MAX_EPOCH_S:.0e}"
            )
        return number
    try:
        moment = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither ISO 8601 (e.g. 2024-05-01T12:00:00Z) nor epoch seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
