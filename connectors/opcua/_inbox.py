"""The hand-off between asyncua's publish callback and ``OpcUaSource.samples()``.

``offer`` runs inside asyncua's publish loop, so it must be O(1) and never await. The queue is
bounded; when it is full, later notifications are coalesced per item (latest value wins) instead
of being lost silently, and every superseded notification is counted in ``dropped``. Once an item
has spilled over, its later values spill over too until the consumer flushes them, so values of
one item are never delivered out of order.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

__all__ = ["Inbox"]

T = TypeVar("T")


class Inbox(Generic[T]):
    def __init__(self, maxsize: int, wake: asyncio.Event | None = None) -> None:
        self._queue: asyncio.Queue[tuple[int, T]] = asyncio.Queue(maxsize=maxsize)
        self._spilled: dict[int, T] = {}
        # Shared by the inboxes of one source's sessions, so its consumer waits on one event;
        # it then takes from every inbox (take() clears the shared event before draining).
        self._wake = wake if wake is not None else asyncio.Event()
        self._failure: str | None = None
        self.dropped = 0
        self.spilled_total = 0

    @property
    def failure(self) -> str | None:
        return self._failure

    def offer(self, handle: int, item: T) -> None:
        if handle in self._spilled or self._queue.full():
            if handle in self._spilled:
                self.dropped += 1
            self._spilled[handle] = item
            self.spilled_total += 1
        else:
            self._queue.put_nowait((handle, item))
        self._wake.set()

    def fail(self, reason: str) -> None:
        """Record the first reason the link died and wake the consumer; later ones are ignored."""
        if self._failure is None:
            self._failure = reason
        self._wake.set()

    async def wait(self, within: float) -> None:
        """Return when something arrived, the link failed, or ``within`` seconds passed."""
        if self._wake.is_set():
            return
        try:
            async with asyncio.timeout(within):
                await self._wake.wait()
        except TimeoutError:
            pass

    def take(self, max_items: int) -> tuple[list[tuple[int, T]], list[tuple[int, T]]]:
        """Up to ``max_items`` queued items, then (once the queue is empty) the spilled ones."""
        self._wake.clear()
        items: list[tuple[int, T]] = []
        queue = self._queue
        while len(items) < max_items and not queue.empty():
            items.append(queue.get_nowait())
        spilled: list[tuple[int, T]] = []
        if queue.empty() and self._spilled:
            spilled = list(self._spilled.items())
            self._spilled.clear()
        if not queue.empty() or self._failure is not None:
            self._wake.set()
        return items, spilled
