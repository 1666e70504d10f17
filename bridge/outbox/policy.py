"""What the relay does with an event that failed retryably: when to try again, when to give up.

Pure: time comes in as a parameter, so the decisions are tested directly.

A retryable failure (5xx, 408/425/429, a timeout, a refused connection) is *counted* against the
event only while its destination is working, i.e. accepted another event recently: then the
failure belongs to this event (or its asset), and after ``max_retries`` counted failures, or
``max_retry_age_s`` after the first one, the event moves to the dead letters so that its asset's
later events flow. While nothing is accepted the destination is down as a whole: nothing is
counted, the backlog waits for it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryDecision", "RetryPolicy", "backoff_delay"]

_RNG = random.Random()


def backoff_delay(
    attempt: int, initial: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, never above ``cap``.

    Jitter keeps gateways from retrying in lock-step; the fixed half keeps the delay growing.
    """
    r = rng if rng is not None else _RNG
    # The exponent is clamped so a days-long outage cannot overflow a float.
    ceiling = min(cap, initial * 2.0 ** min(max(0, attempt - 1), 62))
    return ceiling / 2 + r.uniform(0, ceiling / 2)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """The new state of an event after a retryable failure; ``dead`` moves it to dead letters."""

    retries: int
    first_failed_at: float
    next_attempt_at: float
    dead: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 20
    max_retry_age_s: float = 600.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, hint_s: float | None = None) -> float:
        """The destination's hint (Retry-After) if it gave one, else backoff; both capped."""
        if hint_s is not None:
            return min(max(0.0, hint_s), self.max_backoff_s)
        return backoff_delay(attempt, self.initial_backoff_s, self.max_backoff_s)

    def decide(
        self,
        retries: int,
        first_failed_at: float,
        error: str,
        now: float,
        *,
        counted: bool,
        hint_s: float | None = None,
    ) -> RetryDecision:
        """``retries``/``first_failed_at``: the event's counted failures so far (0: none)."""
        if not counted:
            # The destination is down as a whole: the relay pauses; the event keeps its count.
            return RetryDecision(retries, first_failed_at, now, False, error)
        retries += 1
        first = first_failed_at or now
        age = now - first
        dead = retries >= self.max_retries or age >= self.max_retry_age_s
        reason = error
        if dead:
            reason = (
                f"{error} (retryable; gave up after {retries} failure(s) in {age:.1f} s while "
                "the destination accepted other events)"
            )
        return RetryDecision(retries, first, now + self.delay(retries, hint_s), dead, reason)
