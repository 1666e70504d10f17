"""Per-key budgets (pure: the time is a parameter)."""

from __future__ import annotations

from bridge.api.limits import KeyLimits


def test_burst_then_the_sustained_rate_with_a_retry_after() -> None:
    limits = KeyLimits(rate_per_s=2.0, burst=3, max_concurrent=100)
    for _ in range(3):
        assert limits.admit("k", 0.0) is None
        limits.release("k")
    refusal = limits.admit("k", 0.0)
    assert refusal is not None and refusal.retry_after_s == 1
    assert "rate_limit_per_s: 2" in refusal.detail
    assert limits.admit("k", 0.5) is None  # one token back after 1/rate seconds
    limits.release("k")
    assert limits.admit("k", 0.5) is not None
    assert limits.admit("other", 0.5) is None  # budgets are per key


def test_a_slow_rate_asks_to_wait_longer() -> None:
    limits = KeyLimits(rate_per_s=0.1, burst=1, max_concurrent=10)
    assert limits.admit("k", 0.0) is None
    refusal = limits.admit("k", 0.0)
    assert refusal is not None and refusal.retry_after_s == 10


def test_concurrency_counts_requests_in_progress() -> None:
    limits = KeyLimits(rate_per_s=100.0, burst=100, max_concurrent=2)
    assert limits.admit("k", 0.0) is None
    assert limits.admit("k", 0.0) is None
    refusal = limits.admit("k", 0.0)
    assert refusal is not None and "max_concurrent_per_key: 2" in refusal.detail
    limits.release("k")
    assert limits.admit("k", 0.0) is None


def test_the_table_forgets_idle_keys_when_full() -> None:
    limits = KeyLimits(rate_per_s=1.0, burst=1, max_concurrent=1, max_keys=2)
    assert limits.admit("a", 0.0) is None  # in progress: kept
    assert limits.admit("b", 0.0) is None
    limits.release("b")
    assert limits.admit("c", 10.0) is None  # "b" was idle and refilled: dropped
    assert limits.admit("a", 10.0) is not None  # "a" still holds its slot
