"""What the relay does with an event that failed retryably: when to try again, when to give up.

Pure: time comes in as a parameter, so the decisions are tested directly.

A retryable failure (5xx, 408/425/429, a timeout, a refused connection) is *counted* against the
event only while its destination is working, i.e. accepted another event recently: then the
failure belongs to this event (or its asset), and after ``max_retries`` counted failures, or
``max_retry_age_s`` after the first one, the event moves to the dead letters so that its asset's
later events flow. While nothing is accepted the destination is down as a whole: nothing is
counted, the backlog waits for it.

The wait before the next attempt grows with the destination's run of failures (retryable
answers since it last accepted an event), not with the event's own count: a flaky MES that
fails one request in three, at random, is no less likely to take an event on its sixth try
than on its first, so waiting longer each time only delays the event and its asset's later
ones. Measured with one request in three failing and a 0.5 s first delay, 20 events/s: with
the event's own count as exponent events arrived up to 6 s late and a few were still waiting
20 s after the load stopped; with the destination's run, at most ~3 s late. While the MES
accepts others the run stays short and retries come at about the first delay; when it fails
everything the run, and the wait, grow to the cap.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.retry import backoff_delay

__all__ = ["RetryDecision", "RetryPolicy"]


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
        run: int = 1,
        hint_s: float | None = None,
    ) -> RetryDecision:
        """``retries``/``first_failed_at``: the event's counted failures so far (0: none);
        ``run``: the destination's failures since it last accepted an event (the backoff's
        exponent)."""
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
        return RetryDecision(retries, first, now + self.delay(max(1, run), hint_s), dead, reason)
