"""Per-unit circuit breaker. Pure: time is passed in, so it is tested without sleeping.

After ``failures`` failed polls in a row a unit is skipped for ``backoff_s``; when that
time is up one poll probes it (half-open): success closes the breaker, failure opens it again
for twice as long (capped at ``max_backoff_s``). A skipped unit costs the shared line nothing,
which is what keeps one dead unit from delaying the healthy ones.

Not ``bridge.retry``'s jittered backoff: this is a schedule of one gateway's own line (no herd of
clients to spread out), and an exact one lets the poller report when a unit is tried next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Breaker"]


@dataclass(slots=True)
class Breaker:
    failures: int
    backoff_s: float
    max_backoff_s: float
    failed_in_a_row: int = 0
    open_until: float = 0.0
    opened: int = 0  # how many times it opened (a counter for diagnostics)
    _next_backoff: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._next_backoff = self.backoff_s

    def is_open(self, now: float) -> bool:
        """True while polls of the unit are skipped."""
        return now < self.open_until

    def retry_in(self, now: float) -> float:
        return max(0.0, self.open_until - now)

    def success(self) -> None:
        self.failed_in_a_row = 0
        self.open_until = 0.0
        self._next_backoff = self.backoff_s

    def failure(self, now: float) -> bool:
        """Record a failed poll; True if the breaker opens (again) because of it."""
        self.failed_in_a_row += 1
        if self.failed_in_a_row < self.failures:
            return False
        self.open_until = now + self._next_backoff
        self._next_backoff = min(self._next_backoff * 2, self.max_backoff_s)
        self.opened += 1
        return True
