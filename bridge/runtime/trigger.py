"""Change triggers: which assets of a ``trigger: change`` model have new inputs, and when the
model may run again.

The tag table marks an asset when a sample changes one of the model's input tags (a sample the
deadband suppresses is no change) and when its source goes down (its tags turn Bad: the
prediction must say so now, not at the next change). The runner waits on ``changed`` (no
polling), waits out ``min_interval_s`` since its last run if needed, then takes the marked
assets and runs one batch over them. Coalescing: an asset marked any number of times before
the next run is one row of that run; marks that arrive during a run wait for the next one.

The first change after a quiet spell runs at once (the interval has passed): the interval
bounds the run rate, it does not delay a lone change. Time is a parameter; the only state
besides the pending assets is the ``asyncio.Event`` the runner waits on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

__all__ = ["ChangeTrigger"]


@dataclass(eq=False, slots=True)
class ChangeTrigger:
    model: str
    min_interval_s: float
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # An ordered set (dict keys): arrival order, each asset once.
    _pending: dict[str, None] = field(default_factory=dict)
    _last_run: float | None = None
    marks: int = 0  # input changes seen
    coalesced: int = 0  # of those, changes of an asset already pending (no extra row)
    runs: int = 0

    def mark(self, asset: str) -> None:
        """An input of ``asset`` changed (called by the tag table for every such sample)."""
        self.marks += 1
        pending = self._pending
        if asset in pending:
            self.coalesced += 1
            return
        pending[asset] = None
        if len(pending) == 1:
            self.changed.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def wait_s(self, now: float) -> float:
        """Seconds to wait before the next run may start (0: now)."""
        if self._last_run is None:
            return 0.0
        return max(0.0, self._last_run + self.min_interval_s - now)

    def take(self, now: float) -> tuple[str, ...]:
        """The assets to run now, in the order their first change arrived; starts the interval."""
        assets = tuple(self._pending)
        self._pending.clear()
        self.changed.clear()
        if assets:
            self._last_run = now
            self.runs += 1
        return assets
