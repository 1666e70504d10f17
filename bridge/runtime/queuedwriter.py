"""QueuedWriter: a bounded queue on the event loop, written to the store by one worker task.

Callers queue cheaply on the loop; the worker hands items to ``_persist`` (which does its
database work in a thread) and owns the one retry loop of those writes: capped exponential
backoff while the database is unavailable, nothing lost meanwhile. The bound is a guard for
rare events (alerts): when it is full the oldest item is dropped, counted and logged.
``close`` waits up to ``drain_timeout_s`` for the queue to empty before it stops the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

import structlog

from bridge.errors import BridgeError
from bridge.types import ComponentHealth

__all__ = ["QueuedWriter"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


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
        self._in_flight = 0
        self._queue_size = queue_size
        self._drain_timeout_s = drain_timeout_s
        self._max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._last_error = ""
        self.counters: dict[str, int] = {"raised": 0, "stored": 0, "dropped": 0, "errors": 0}

    async def _persist(self, items: Sequence[T]) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=self.name)

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
        worker, self._worker = self._worker, None
        if worker is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=self._drain_timeout_s)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        unsent = len(self._queue) + self._in_flight
        if unsent:
            log.warning("writer_closed_unsent", writer=self.name, unsent=unsent, **self.counters)

    def health(self) -> ComponentHealth:
        return ComponentHealth.of_worker(
            self.name,
            closed=self._closed,
            worker=self._worker,
            last_error=self._last_error,
            counters={**self.counters, "queue_depth": len(self._queue)},
        )

    async def _run(self) -> None:
        failures = 0
        items: list[T] = []
        while True:
            if not items:
                if not self._queue:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self._batch:
                    items = list(self._queue)
                    self._queue.clear()
                else:
                    items = [self._queue.popleft()]
                self._in_flight = len(items)
            try:
                await self._persist(items)
            except BridgeError as exc:
                # Keep the items and retry: the database may be locked or restarting.
                failures += 1
                self.counters["errors"] += 1
                self._last_error = str(exc)
                delay = min(self._max_backoff_s, 0.5 * 2.0 ** min(failures - 1, 62))
                log.error(
                    "writer_store_failed",
                    writer=self.name,
                    items=len(items),
                    error=str(exc),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            self._last_error = ""
            items = []
            self._in_flight = 0
