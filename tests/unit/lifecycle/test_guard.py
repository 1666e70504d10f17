"""CanaryGuard: the registry's guard settings in typed form, and when a candidate trips them."""

from __future__ import annotations

from bridge.lifecycle.canary_guard import DEFAULT_MIN_SAMPLES, CanaryGuard
from bridge.lifecycle.version_stats import VersionStats


def _stats(agree: int, disagree: int, runs: int = 0, failed: int = 0) -> VersionStats:
    stats = VersionStats("2")
    for i in range(agree):
        stats.agreement.add(f"a{i}", True)
    for i in range(disagree):
        stats.agreement.add(f"d{i}", False)
    stats.runs, stats.failed_runs = runs, failed
    return stats


def test_settings_become_a_typed_guard_and_no_settings_no_guard() -> None:
    assert CanaryGuard.of(None) is None
    assert CanaryGuard.of({}) is None
    guard = CanaryGuard.of({"max_disagreement": 0.2, "min_samples": 5.0})
    assert guard == CanaryGuard(max_disagreement=0.2, max_error_rate=None, min_samples=5)
    assert isinstance(guard.min_samples, int)
    assert CanaryGuard.of({"max_error_rate": 0.1}) == CanaryGuard(
        max_error_rate=0.1, min_samples=DEFAULT_MIN_SAMPLES
    )
    # Equal settings are equal guards: the registry watcher compares deployments by them.
    assert CanaryGuard.of({"max_disagreement": 0.2}) == CanaryGuard.of({"max_disagreement": 0.2})


def test_disagreement_trips_only_past_the_limit_and_after_min_samples() -> None:
    guard = CanaryGuard(max_disagreement=0.5, min_samples=10)
    assert guard.tripped(_stats(agree=2, disagree=7)) is None  # 9 compared: too few
    assert guard.tripped(_stats(agree=5, disagree=5)) is None  # 0.5 is not past 0.5
    assert guard.tripped(_stats(agree=4, disagree=6)) == "disagreement 0.600 > 0.5"


def test_error_rate_trips_on_attempted_runs() -> None:
    guard = CanaryGuard(max_error_rate=0.25, min_samples=4)
    assert guard.tripped(_stats(0, 0, runs=2, failed=1)) is None  # 3 attempts: too few
    assert guard.tripped(_stats(0, 0, runs=3, failed=1)) is None  # 0.25 is not past 0.25
    assert guard.tripped(_stats(0, 0, runs=2, failed=2)) == "error rate 0.500 > 0.25"


def test_only_an_error_rate_limit_tolerates_failed_runs() -> None:
    assert CanaryGuard(max_error_rate=0.1).tolerates_failures
    assert not CanaryGuard(max_disagreement=0.1).tolerates_failures
