"""The one retry policy (bridge.retry): backoff with equal jitter, the failure streak of a loop,
tenacity's wait, retryable statuses and Retry-After. Pure: time and randomness are parameters."""

from __future__ import annotations

import random

import pytest
from tenacity import Retrying, stop_after_attempt

from bridge.retry import (
    Backoff,
    backoff_delay,
    is_retryable_status,
    parse_retry_after,
    tenacity_wait,
)

NOW = 1_000_000.0


def test_backoff_grows_with_equal_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    for n in range(1, 12):
        ceiling = min(8.0, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= backoff_delay(n, 0.5, 8.0, rng) <= ceiling
    # A days-long outage neither overflows nor passes the cap.
    assert 4.0 <= backoff_delay(100_000, 0.5, 8.0, rng) <= 8.0


def test_backoff_is_jittered_at_the_cap() -> None:
    rng = random.Random(2)
    waits = {backoff_delay(20, 0.5, 8.0, rng) for _ in range(10)}
    assert len(waits) > 1  # gateways retrying one peer do not do it in lock-step


def test_a_backoff_streak_grows_caps_and_resets() -> None:
    backoff = Backoff(initial_s=0.5, max_s=4.0, rng=random.Random(3))
    waits = [backoff.failed() for _ in range(6)]
    assert backoff.failures == 6
    for n, wait in enumerate(waits, start=1):
        ceiling = min(4.0, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= wait <= ceiling, (n, waits)
    assert all(2.0 <= w <= 4.0 for w in waits[3:])  # at the cap
    backoff.succeeded()
    assert backoff.failures == 0
    # The next failure starts a new streak: a short wait, not the cap.
    assert 0.25 <= backoff.failed() <= 0.5


def test_tenacity_waits_follow_the_same_backoff() -> None:
    sleeps: list[float] = []
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 7:
            raise ConnectionError("not yet")
        return "up"

    retrying = Retrying(
        wait=tenacity_wait(0.5, 4.0), sleep=sleeps.append, stop=stop_after_attempt(10)
    )
    assert retrying(flaky) == "up"
    assert len(sleeps) == 6
    for n, wait in enumerate(sleeps, start=1):
        ceiling = min(4.0, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= wait <= ceiling, (n, sleeps)


def test_retryable_statuses() -> None:
    retryable = [
        s for s in (400, 401, 404, 408, 409, 422, 425, 429, 500, 502, 503) if is_retryable_status(s)
    ]
    # 5xx and the 4xx that mean "later"; any other 4xx would fail the same way again.
    assert retryable == [408, 425, 429, 500, 502, 503]


def test_retry_after_as_seconds_or_an_http_date() -> None:
    assert parse_retry_after("7", NOW) == 7.0
    assert parse_retry_after(" 7 ", NOW) == 7.0
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("", NOW) is None
    assert parse_retry_after("soon", NOW) is None
    date = "Mon, 12 Jan 1970 13:46:50 GMT"  # epoch 1_000_010
    assert parse_retry_after(date, NOW) == pytest.approx(10.0)
    # A date already past means "now", never a negative wait.
    assert parse_retry_after("Mon, 12 Jan 1970 13:46:30 GMT", NOW) == 0.0
