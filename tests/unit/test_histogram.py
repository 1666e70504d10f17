"""The latency histogram components keep for /metrics: Prometheus' cumulative buckets."""

from __future__ import annotations

from bridge.histogram import LatencyHistogram


def test_buckets_are_cumulative_and_end_with_inf() -> None:
    h = LatencyHistogram(bounds=(0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0):
        h.observe(seconds)
    # A bound is an upper bound included in its bucket ("le"): 0.1 counts in le=0.1.
    assert h.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert h.count == 4
    assert h.total_s == 3.65


def test_an_empty_histogram_has_zero_counts() -> None:
    h = LatencyHistogram()
    assert all(n == 0 for _, n in h.cumulative())
    assert h.cumulative()[-1] == ("+Inf", 0)
