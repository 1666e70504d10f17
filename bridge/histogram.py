"""A fixed-bucket latency histogram that components keep for themselves.

The metrics endpoint reads it at scrape time (``bridge.runtime.metrics``): a component records
a duration with one bisect and two additions, and knows nothing of Prometheus.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["LATENCY_BUCKETS_S", "LatencyHistogram"]

# Upper bounds in seconds, from a 1,000-row model run (sub-millisecond) to a store commit that
# waited out SQLite's busy timeout (5 s).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(slots=True)
class LatencyHistogram:
    bounds: Sequence[float] = LATENCY_BUCKETS_S
    # counts[i]: observations in (bounds[i-1], bounds[i]]; the last one is above every bound.
    counts: list[int] = field(init=False)
    total_s: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total_s += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it) ending with ``+Inf``, as Prometheus
        exposes a histogram."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((repr(float(bound)), running))
        out.append(("+Inf", self.count))
        return out
