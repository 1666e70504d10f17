"""QueuedWriter: a bounded queue on the event loop, written to the store by one worker task.

Callers queue cheaply on the loop; the worker hands items to ``_persist`` (which does its
database work in a thread) and owns the one retry loop of those writes: capped exponential
backoff while the database is unavailable, nothing lost meanwhile. The bound is a guard for
rare events (alerts): when it is full the oldest item is dropped, counted and logged.
``close`` waits up to ``drain_timeout_s`` for the queue to empty before it stops the worker.

The worker is supervised (``supervise.Supervised``): any other exception restarts it with
backoff, counted in ``restarts``, and the restarted worker writes the same items again; items
that crash it ``POISON_AFTER`` times in a row are dropped (counted and logged) so they cannot
block the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

import structlog

from bridge.errors import BridgeError
from bridge.supervise import Supervised
from bridge.types import ComponentHealth

__all__ = ["POISON_AFTER", "QueuedWriter"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

POISON_AFTER = 3


class QueuedWriter(Generic[T]):
    """Subclasses implement ``_persist``; it raises ``BridgeError`` to have the items retried."""

    def __init__(
        self,
        name: str,
        *,
        batch: bool,
        queue_size: int = 10000,
        drain_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.name = name
        self._batch = batch  # all queued items per write, or one at a time
        self._queue: deque[T] = deque()
        self._queue_size = queue_size
        self._drain_timeout_s = drain_timeout_s
        self._max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # The items being written; kept here so a restarted worker writes them again.
        self._items: list[T] = []
        self._crashes = 0
        self._worker = Supervised(name, self._run, max_backoff_s=max_backoff_s)
        self._started = False
        self._closed = False
        self._last_error = ""
        self.counters: dict[str, int] = {"raised": 0, "stored": 0, "dropped": 0, "errors": 0}

    async def _persist(self, items: Sequence[T]) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        if not self._started and not self._closed:
            self._started = True
            self._worker.start()

    def _enqueue(self, item: T) -> None:
        if len(self._queue) >= self._queue_size:
            self._queue.popleft()
            self.counters["dropped"] += 1
            log.error("writer_queue_full_dropped_oldest", writer=self.name, size=self._queue_size)
        self._queue.append(item)
        self.counters["raised"] += 1
        self._idle.clear()
        self._wake.set()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=self._drain_timeout_s)
        await self._worker.stop()
        unsent = len(self._queue) + len(self._items)
        if unsent:
            log.warning("writer_closed_unsent", writer=self.name, unsent=unsent, **self.counters)

    def health(self) -> ComponentHealth:
        return ComponentHealth.of_worker(
            self.name,
            closed=self._closed,
            worker=self._worker if self._started else None,
            last_error=self._last_error or self._worker.last_crash,
            counters={
                **self.counters,
                "queue_depth": len(self._queue),
                "restarts": self._worker.restarts,
            },
        )

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._items:
                if not self._queue:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self._batch:
                    self._items = list(self._queue)
                    self._queue.clear()
                else:
                    self._items = [self._queue.popleft()]
                self._crashes = 0
            try:
                await self._persist(self._items)
            except BridgeError as exc:
                # Keep the items and retry: the database may be locked or restarting.
                failures += 1
                self.counters["errors"] += 1
                self._last_error = str(exc)
                delay = min(self._max_backoff_s, 0.5 * 2.0 ** min(failures - 1, 62))
                log.error(
                    "writer_store_failed",
                    writer=self.name,
                    items=len(self._items),
                    error=str(exc),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                # A bug: the supervisor restarts this loop with the same items, unless they
                # keep crashing it.
                self._crashes += 1
                if self._crashes >= POISON_AFTER:
                    self.counters["dropped"] += len(self._items)
                    log.error(
                        "writer_items_dropped",
                        writer=self.name,
                        items=len(self._items),
                        crashes=self._crashes,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    self._items = []
                raise
            failures = 0
            self._last_error = ""
            self._items = []
            self._worker.ok()
