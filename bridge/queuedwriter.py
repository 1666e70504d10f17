"""QueuedWriter: a bounded queue on the event loop, written out by one supervised worker task.

Every writer of the gateway that must not block the loop and must not lose work while the
database is away is one of these: the store writer (predictions), the alert writers (label,
loss and drift alerts). Callers queue cheaply on the loop; the worker hands the queued items,
up to ``batch_size`` at a time, to ``_persist`` (which does its blocking work in a thread) and
owns the one retry loop of those writes: ``BridgeError`` means "not now" (the database is
locked or restarting), the items are kept and written again after ``bridge.retry.Backoff``'s
wait, nothing is lost meanwhile.

A full queue has two answers. ``_enqueue`` (rare events: alerts) drops the oldest item at once;
``_wait_for_room`` lets a caller that can slow down (the model runners feeding the store
writer) wait for the worker first. Whatever is lost (pushed out of a full queue, set aside as
poison, still queued when the writer closes) goes through ``_lost``: counted, logged, and
reported further by writers that override it. Never silent.

The worker is supervised (``bridge.supervise.Supervised``): any other exception is a bug and
restarts it with backoff, counted in ``restarts``, and the restarted worker writes the same
items again; items that crash it ``POISON_AFTER`` times in a row are set aside as lost so they
cannot block the rest. ``close`` waits up to ``drain_timeout_s`` for the queue to empty before
it stops the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

import structlog

from bridge.errors import BridgeError
from bridge.retry import Backoff
from bridge.supervise import Supervised
from bridge.types import ComponentHealth

__all__ = ["POISON_AFTER", "QueuedWriter"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

POISON_AFTER = 3


class QueuedWriter(Generic[T]):
    """Subclasses implement ``_persist``; it raises ``BridgeError`` to have the items retried.

    ``batch_size``: items per ``_persist`` call (1: one transaction per item; None: all that
    are queued). ``counters``: the writer's own counts, ahead of the ``dropped`` and ``errors``
    every writer has; ``_enqueue`` counts in ``raised``.
    """

    def __init__(
        self,
        name: str,
        *,
        batch_size: int | None = None,
        queue_size: int = 10000,
        drain_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        counters: Sequence[str] = ("raised", "stored"),
    ) -> None:
        self.name = name
        self._batch_size = queue_size if batch_size is None else max(1, batch_size)
        self._queue: deque[T] = deque()
        self._queue_size = queue_size
        self._drain_timeout_s = drain_timeout_s
        self._max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()
        self._room.set()
        # The items being written; kept here so a restarted worker writes them again.
        self._items: list[T] = []
        self._crashes = 0
        self._worker = Supervised(name, self._run, max_backoff_s=max_backoff_s)
        self._started = False
        self._closed = False
        self._last_error = ""
        self.counters: dict[str, int] = {k: 0 for k in (*counters, "dropped", "errors")}

    async def _persist(self, items: Sequence[T]) -> None:
        raise NotImplementedError

    def _lost(self, items: Sequence[T], reason: str) -> None:
        """Items that will never be written: counted and logged. Writers that must report a
        loss further (the store writer raises an alert) extend this; it must not raise."""
        if not items:
            return
        self.counters["dropped"] += len(items)
        log.error("writer_items_dropped", writer=self.name, items=len(items), reason=reason)

    def _problem(self) -> str:
        """What health shows as this writer's trouble; empty when there is none."""
        return self._last_error or self._worker.last_crash

    async def start(self) -> None:
        if not self._started and not self._closed:
            self._started = True
            self._worker.start()

    def _admit(self, items: Sequence[T]) -> list[T]:
        """Queue ``items`` and wake the worker; the oldest items that no longer fit are taken
        out and returned, for the caller to report with its reason."""
        self._queue.extend(items)
        overflow = len(self._queue) - self._queue_size
        evicted = [self._queue.popleft() for _ in range(max(0, overflow))]
        if self._queue:
            self._idle.clear()
            self._wake.set()
        return evicted

    def _enqueue(self, item: T) -> None:
        """Queue one rare item (an alert); a full queue drops its oldest item, not this one."""
        evicted = self._admit([item])
        self.counters["raised"] += 1
        self._lost(evicted, f"the queue of {self._queue_size} was full")

    async def _wait_for_room(self, need: int, timeout_s: float) -> None:
        """Backpressure: wait until ``need`` more items fit, the writer closes or ``timeout_s``
        has passed, whichever comes first."""
        deadline = time.monotonic() + timeout_s
        while not self._closed and len(self._queue) + need > self._queue_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), remaining)

    def _settled(self, items: Sequence[T]) -> None:
        """``items`` were written after all (a write the stopping worker waited for): they
        are no longer unsent."""
        if self._items is items:
            self._items = []

    async def close(self) -> None:
        """Stop taking items, write what is queued (bounded by ``drain_timeout_s``), then stop
        the worker. What is still unwritten then is lost, and reported as such."""
        if self._closed:
            return
        self._closed = True
        self._room.set()  # callers still waiting for room give up
        if self._started:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=self._drain_timeout_s)
            await self._worker.stop()
        unsent = [*self._items, *self._queue]
        self._items = []
        self._queue.clear()
        if unsent:
            self._lost(unsent, "the writer closed before they were written")
            log.error("writer_closed_unsent", writer=self.name, unsent=len(unsent), **self.counters)
        else:
            log.info("writer_closed", writer=self.name, **self.counters)

    def health(self) -> ComponentHealth:
        return ComponentHealth.of_worker(
            self.name,
            closed=self._closed,
            worker=self._worker if self._started else None,
            last_error=self._problem(),
            counters={
                **self.counters,
                "queue_depth": len(self._queue),
                "restarts": self._worker.restarts,
            },
        )

    async def _run(self) -> None:
        backoff = Backoff(max_s=self._max_backoff_s)
        while True:
            if not self._items:
                if not self._queue:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                n = min(self._batch_size, len(self._queue))
                self._items = [self._queue.popleft() for _ in range(n)]
                self._crashes = 0
                self._room.set()
            try:
                await self._persist(self._items)
            except BridgeError as exc:
                # Keep the items and retry: the database may be locked or restarting.
                self.counters["errors"] += 1
                self._last_error = str(exc)
                delay = backoff.failed()
                log.error(
                    "writer_store_failed",
                    writer=self.name,
                    items=len(self._items),
                    error=str(exc),
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                # A bug: the supervisor restarts this loop with the same items, unless they
                # keep crashing it.
                self._crashes += 1
                if self._crashes >= POISON_AFTER:
                    items, self._items = self._items, []
                    self._lost(
                        items,
                        f"the writer failed {self._crashes} times on them: "
                        f"{type(exc).__name__}: {exc}",
                    )
                    if not self._queue:
                        self._idle.set()  # a closing writer need not wait out the restart
                raise
            if backoff.failures:
                log.info("writer_recovered", writer=self.name, after_failures=backoff.failures)
            backoff.succeeded()
            self._last_error = ""
            self._items = []
            self._worker.ok()
