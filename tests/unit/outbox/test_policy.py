"""The retry decisions of the relay: pure, time as a parameter. The backoff they use is tested
in tests/unit/test_retry.py."""

from __future__ import annotations

import pytest

from bridge.outbox.retries import RetryPolicy

NOW = 1_000_000.0


def test_a_counted_failure_counts_and_schedules_the_next_attempt() -> None:
    policy = RetryPolicy(max_retries=3, max_retry_age_s=60, initial_backoff_s=1, max_backoff_s=8)
    first = policy.decide(0, 0.0, "HTTP 500", NOW, counted=True)
    assert (first.retries, first.first_failed_at, first.dead) == (1, NOW, False)
    assert NOW + 0.5 <= first.next_attempt_at <= NOW + 1.0
    # The wait follows the destination's run of failures, not the event's own count.
    second = policy.decide(1, NOW, "HTTP 500", NOW + 1, counted=True, run=1)
    assert (second.retries, second.first_failed_at, second.dead) == (2, NOW, False)
    assert NOW + 1.5 <= second.next_attempt_at <= NOW + 2
    longer = policy.decide(1, NOW, "HTTP 500", NOW + 1, counted=True, run=3)
    assert NOW + 3 <= longer.next_attempt_at <= NOW + 5
    capped = policy.decide(1, NOW, "HTTP 500", NOW + 1, counted=True, run=50)
    assert NOW + 5 <= capped.next_attempt_at <= NOW + 9
    third = policy.decide(2, NOW, "HTTP 502", NOW + 3, counted=True)
    assert third.dead and third.retries == 3
    assert third.reason.startswith("HTTP 502 (retryable; gave up after 3 failure(s) in 3.0 s")


def test_the_age_cap_dead_letters_before_the_count() -> None:
    policy = RetryPolicy(max_retries=100, max_retry_age_s=30)
    assert not policy.decide(4, NOW, "HTTP 503", NOW + 29.9, counted=True).dead
    assert policy.decide(4, NOW, "HTTP 503", NOW + 30.0, counted=True).dead


def test_an_outage_counts_nothing_and_never_dead_letters() -> None:
    policy = RetryPolicy(max_retries=1, max_retry_age_s=0.001)
    d = policy.decide(7, NOW - 3600, "ConnectError", NOW, counted=False)
    assert (d.retries, d.first_failed_at, d.dead, d.next_attempt_at) == (7, NOW - 3600, False, NOW)


@pytest.mark.parametrize(("hint", "expected"), [(2.0, 2.0), (600.0, 30.0), (-1.0, 0.0)])
def test_retry_after_is_honoured_and_capped(hint: float, expected: float) -> None:
    policy = RetryPolicy(max_backoff_s=30)
    assert policy.delay(1, hint) == expected
    d = policy.decide(0, 0.0, "HTTP 429", NOW, counted=True, hint_s=hint)
    assert d.next_attempt_at == NOW + expected
