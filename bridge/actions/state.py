"""What an action's limits are judged against: its last write, its writes in the last hour,
and whether it is armed, fallen back to shadow, or faulted.

Plain data changed only through these methods, each taking the time as a parameter (no clock
reads), so the evaluator stays pure and tests replay any history.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["HOUR_S", "ActionState"]

HOUR_S = 3600.0


@dataclass(slots=True)
class ActionState:
    """``armed_version``: the model version the action was armed under (None: not armed; an
    action triggered by tags only is armed with ``""``). ``fallback``: why an auto or confirm
    action writes nothing until re-armed (inputs Bad or stale, drift, another model version).
    ``fault``: why it never writes until cleared (e.g. a read-back that did not match)."""

    armed_version: str | None = None
    fallback: str | None = None
    fault: str | None = None
    last_value: float | bool | None = None
    last_time: float | None = None
    writes: deque[float] = field(default_factory=deque)  # times of writes, oldest first

    def arm(self, version: str) -> None:
        """Re-arm (an operator's act): clears the fallback, not a fault."""
        self.armed_version = version
        self.fallback = None

    def fall_back(self, reason: str) -> None:
        """Latch shadow until ``arm``; the first reason is kept."""
        if self.fallback is None:
            self.fallback = reason

    def set_fault(self, reason: str) -> None:
        self.fault = reason

    def clear_fault(self) -> None:
        self.fault = None

    def record_write(self, value: float | bool, now: float) -> None:
        """A write the target accepted (and read back): the base of rate, deadband and
        writes-per-hour checks."""
        self.last_value = value
        self.last_time = now
        self.writes.append(now)
        self.prune(now)

    def prune(self, now: float) -> None:
        while self.writes and self.writes[0] <= now - HOUR_S:
            self.writes.popleft()

    def writes_in_hour(self, now: float) -> int:
        """Writes in the hour before ``now`` (sliding window), without changing the state."""
        return sum(1 for t in self.writes if now - HOUR_S < t <= now)
