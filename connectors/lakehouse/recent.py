"""The ids of the predictions the spool accepted last, so that a repeat is not a second row.

The outbox sends an event again when the gateway stopped (or its store failed) between the
spool's fsync and the outbox recording the acceptance: at most the events of the deliveries
under way then, which are among the newest the spool took. Their ids are kept here, loaded at
start from the segments still in the spool and from the newest committed ones (kept in
``done/`` for that), and a delivery skips an id it finds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from pathlib import Path

from .spool import read_segment

__all__ = ["RecentIds", "ids_of"]


class RecentIds:
    """A bounded set of ids: the newest ``limit`` added."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: Iterable[str]) -> None:
        for key in ids:
            if key in self._ids:
                continue
            self._ids.add(key)
            self._order.append(key)
        while len(self._order) > self.limit:
            self._ids.discard(self._order.popleft())


def ids_of(path: Path) -> list[str]:
    """The ``id`` column of a segment's whole batches (a torn tail is ignored)."""
    table = read_segment(path)
    if table is None or "id" not in table.column_names:
        return []
    return [str(v) for v in table["id"].to_pylist() if v is not None]
