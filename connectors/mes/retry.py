"""Which MES answers are worth retrying and how long to wait. Pure, so it is tested directly."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

__all__ = ["backoff_delay", "is_retryable_status", "parse_retry_after"]

_RETRYABLE_4XX = frozenset({408, 425, 429})
_RNG = random.Random()


def is_retryable_status(status: int) -> bool:
    """5xx and the 4xx that mean "try later"; every other 4xx will fail the same way again."""
    return status >= 500 or status in _RETRYABLE_4XX


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def backoff_delay(
    attempt: int, initial: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, never above ``cap``.

    Jitter keeps many gateways from hammering a recovering MES in lock-step; the fixed half
    keeps the delay growing so a long outage is not polled at full rate.
    """
    r = rng if rng is not None else _RNG
    # The exponent is clamped so a days-long outage cannot overflow a float.
    ceiling = min(cap, initial * 2.0 ** min(max(0, attempt - 1), 62))
    return ceiling / 2 + r.uniform(0, ceiling / 2)
