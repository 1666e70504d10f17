"""The one retry policy: how long to wait after a failure, what an HTTP answer says about trying
again, and the ``Retry-After`` it may carry. Pure: time and randomness come in as parameters.

Who uses it: sources' reconnects and the supervisor's restarts (through tenacity, which retries
a whole call: ``tenacity_wait``), and the loops that keep their unsent items and sleep between
tries (the queued writers, the store writer, the outbox relay: ``Backoff``). Those loops do not
use tenacity because the retried unit is not one call: between two tries they take new work
into the same batch and report their state to health, so they keep the failure count
themselves and ask this module for the wait. Who *decides* to retry is never here: a source's
reconnect belongs to ``runtime/sources.py``, an event's retries to the outbox relay
(``bridge.outbox.retries``), a destination only reports what happened.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from tenacity import RetryCallState

__all__ = [
    "Backoff",
    "ReconnectSettings",
    "backoff_delay",
    "is_retryable_status",
    "parse_retry_after",
    "tenacity_wait",
]

_RETRYABLE_4XX = frozenset({408, 425, 429})
_RNG = random.Random()


def backoff_delay(
    attempt: int, initial: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, never above ``cap``.

    Jitter keeps many gateways from retrying a recovering peer in lock-step; the fixed half
    keeps the delay growing so a long outage is not polled at full rate. ``attempt`` counts
    from 1 (the first retry waits between ``initial / 2`` and ``initial``).
    """
    r = rng if rng is not None else _RNG
    # The exponent is clamped so a days-long outage cannot overflow a float.
    ceiling = min(cap, initial * 2.0 ** min(max(0, attempt - 1), 62))
    return ceiling / 2 + r.uniform(0, ceiling / 2)


def is_retryable_status(status: int) -> bool:
    """5xx and the 4xx that mean "try later"; every other 4xx will fail the same way again."""
    return status >= 500 or status in _RETRYABLE_4XX


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (epoch seconds): delta-seconds or an HTTP date;
    None if absent or unusable."""
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


@dataclass(slots=True)
class Backoff:
    """The failure streak of a loop that retries by itself: ``failed()`` counts a failure and
    returns the wait before the next try, ``succeeded()`` ends the streak."""

    initial_s: float = 0.5
    max_s: float = 30.0
    failures: int = 0
    rng: random.Random | None = field(default=None, repr=False)

    def failed(self) -> float:
        self.failures += 1
        return backoff_delay(self.failures, self.initial_s, self.max_s, self.rng)

    def succeeded(self) -> None:
        self.failures = 0


def tenacity_wait(initial_s: float, max_s: float) -> Callable[[RetryCallState], float]:
    """A tenacity ``wait=`` with this module's backoff (tenacity's own exponential waits put
    the jitter on top of the cap or none at all)."""

    def wait(state: RetryCallState) -> float:
        return backoff_delay(state.attempt_number, initial_s, max_s)

    return wait


class ReconnectSettings(BaseModel):
    """A source's ``reconnect:`` block: how the runtime reconnects it after a failure (the
    runtime owns the only retry loop; ``bridge.runtime.sources``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_backoff_s: float = Field(
        0.5,
        gt=0,
        description="First wait after a failed connect; doubles per failure (with jitter: half "
        "fixed, half random) up to max_backoff_s.",
    )
    max_backoff_s: float = Field(
        5,
        gt=0,
        description="Cap of the wait between connect attempts, however long the outage lasts.",
    )
    probe_interval_s: float = Field(
        0.5,
        ge=0,
        description="While the server's port refuses connections, a TCP connect to its "
        "host:port is tried this often; once the port accepts again the next attempt starts at "
        "once instead of at the end of the backoff. A port that accepts but gives no session "
        "keeps the backoff. 0 switches the probe off.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.initial_backoff_s > self.max_backoff_s:
            raise ValueError(
                f"reconnect.initial_backoff_s ({self.initial_backoff_s:g}) is above "
                f"reconnect.max_backoff_s ({self.max_backoff_s:g}): raise max_backoff_s or "
                "lower initial_backoff_s"
            )
        return self
