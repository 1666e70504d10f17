"""What this gateway serves now: asset -> lease generation (the fencing token), valid until a
local deadline.

The deadline is on this host's monotonic clock: the start of the heartbeat that renewed the
leases, plus ``lease_s``, minus one heartbeat. The store set the leases' expiry from its own
clock *after* that start, so a gateway that can no longer renew (cut off from the database)
stops serving at least one heartbeat before any other gateway may take its assets. Nothing
here needs the clocks of two hosts to agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

__all__ = ["Shard"]


class Shard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, int] = {}
        self._until = -1.0

    def update(self, held: Mapping[str, int], valid_until: float) -> None:
        self._held = dict(held)
        self._until = valid_until

    def clear(self) -> None:
        self._held = {}
        self._until = -1.0

    @property
    def valid(self) -> bool:
        return self._clock() < self._until

    def fences(self) -> dict[str, int]:
        """Asset -> generation of what may be published now (empty once the deadline passed:
        the leases were not renewed in time)."""
        return self._held if self.valid else {}

    def assets(self) -> frozenset[str]:
        return frozenset(self.fences())
