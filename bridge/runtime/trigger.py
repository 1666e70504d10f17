"""Change triggers: which assets of a ``trigger: change`` model have new inputs, and when the
model may run again.

The tag table marks an asset when a sample changes one of the model's input tags (a sample the
deadband suppresses is no change) and when its source goes down (its tags turn Bad: the
prediction must say so now, not at the next change). The runner waits on ``changed`` (no
polling), waits out ``min_interval_s`` since its last run if needed, then takes the marked
assets and runs one batch over them. Coalescing: an asset marked any number of times before
its row is computed is one row; marks that arrive during a run wait for the next one.

A run is at most ``max_rows`` assets. A burst bigger than that (a plant's scan cycle changing
every asset at once) is run ``max_rows`` at a time, the event loop free between chunks, and
what changed meanwhile goes first: a lone change waits for the chunk in progress, not for the
whole burst, and runs in a chunk of its own. The tag table hands over the changes of one
source batch at once (``mark_batch``): a batch that changes more than ``max_rows`` assets is a
burst from the start, so a change of another source taken in between (the probe of
bench/trigger.py, landing while a 2,000-asset publish response is applied) is not run behind
the rest of it (150-200 ms at 2,000 assets) but ahead.

So that a stream of new changes cannot starve a burst, their chunks and the burst's alternate
(the burst moves at least one chunk in two; new changes beyond one chunk queue behind it).
The rest of a burst does not wait out the interval: the interval bounds how often the model
starts over on new changes, not how fast it works through changes it has already taken.

The first change after a quiet spell runs at once (the interval has passed): the interval
bounds the run rate, it does not delay a lone change. Time is a parameter; the only state
besides the pending assets is the ``asyncio.Event`` the runner waits on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

__all__ = ["MAX_ROWS", "ChangeTrigger"]

# Rows of one run. Features, predictions and the sinks (the HMI server's writes most of all)
# cost ~50-100 µs a row on the event loop of a quiet 2-core machine, so a chunk holds it a few
# ms (bench/trigger.py: the probe waits for the chunk in progress, and its notification for
# the HMI server's next publish, which waits for the loop too); a run also costs ~0.3 ms.
MAX_ROWS = 50


@dataclass(eq=False, slots=True)
class ChangeTrigger:
    model: str
    min_interval_s: float
    max_rows: int = MAX_ROWS
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # ``_pending``: marked since the last take, an ordered set (dict keys: arrival order, each
    # asset once). ``_backlog``: taken with a burst, not run yet, in order; ``_queued`` is its
    # set (a dict popped from the front is slow to iterate, a deque is not).
    _pending: dict[str, None] = field(default_factory=dict)
    _backlog: deque[str] = field(default_factory=deque)
    _queued: set[str] = field(default_factory=set)
    _last_run: float | None = None
    _overtook: bool = False  # the last chunk was new changes run ahead of a burst
    marks: int = 0  # input changes seen
    coalesced: int = 0  # of those, changes of an asset already waiting (no extra row)
    runs: int = 0

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {self.max_rows}")

    def mark(self, asset: str) -> None:
        """An input of ``asset`` changed (called by the tag table for every such sample)."""
        self.marks += 1
        pending = self._pending
        if asset in pending or asset in self._queued:
            # Its row is not computed yet: it will read the latest inputs.
            self.coalesced += 1
            return
        pending[asset] = None
        if len(pending) == 1:
            self.changed.set()

    def mark_batch(self, assets: list[str]) -> None:
        """The assets one source batch changed, in order (an asset may repeat). More than
        ``max_rows`` new ones are a burst: they queue behind what arrives on its own."""
        self.marks += len(assets)
        pending, queued = self._pending, self._queued
        new = [a for a in dict.fromkeys(assets) if a not in pending and a not in queued]
        self.coalesced += len(assets) - len(new)
        if not new:
            return
        if len(new) > self.max_rows:
            self._backlog.extend(new)
            queued.update(new)
        else:
            for asset in new:
                pending[asset] = None
        self.changed.set()

    @property
    def pending(self) -> int:
        """Assets waiting for a row (new changes and the rest of a burst)."""
        return len(self._pending) + len(self._backlog)

    @property
    def ready(self) -> bool:
        """Something is waiting to run."""
        return bool(self._pending or self._backlog)

    def wait_s(self, now: float) -> float:
        """Seconds to wait before the next run may start (0: now)."""
        if self._last_run is None or self._backlog:
            return 0.0
        return max(0.0, self._last_run + self.min_interval_s - now)

    def take(self, now: float) -> tuple[str, ...]:
        """The assets to run now (at most ``max_rows``), in the order their first change
        arrived; starts the interval. While a burst is in progress, chunks of new changes and
        chunks of the burst alternate (new changes first)."""
        limit = self.max_rows
        pending, backlog = self._pending, self._backlog
        if pending and not (backlog and self._overtook):
            behind = bool(backlog)  # a burst is in progress: these run ahead of it
            fresh = list(pending)
            assets = fresh[:limit]
            if len(fresh) > limit:  # they arrived after the whole backlog
                backlog.extend(fresh[limit:])
                self._queued.update(fresh[limit:])
            pending.clear()
            self.changed.clear()
            self._overtook = behind
        else:  # the burst's turn; new changes stay pending (they go first in the next chunk)
            assets = []
            while backlog and len(assets) < limit:
                asset = backlog.popleft()
                self._queued.discard(asset)
                assets.append(asset)
            self._overtook = False
        if assets:
            self._last_run = now
            self.runs += 1
        if not (pending or backlog):
            self.changed.clear()
        return tuple(assets)
