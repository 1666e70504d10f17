"""StoreSink: predictions queue in memory and are written in batches, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Sequence

import structlog

from bridge.errors import BridgeError, StoreError
from bridge.types import ComponentHealth, Prediction

from .db import Store
from .outbox import OutboxFeed
from .repository import PredictionRepository

__all__ = ["StoreSink"]

log = structlog.get_logger(__name__)

_DROP_LOG_INTERVAL_S = 5.0


class StoreSink:
    """A ``bridge.types.Sink`` named "store". One transaction per batch of up to ``batch_size``."""

    def __init__(
        self,
        store: Store,
        *,
        queue_size: int = 10000,
        batch_size: int = 500,
        drain_timeout_s: float = 10.0,
        max_backoff_s: float = 30.0,
        outbox: Sequence[OutboxFeed] = (),
        mapping_revision: str | None = None,
    ) -> None:
        self.name = "store"
        # Outbox rows of durable destinations go in the same transaction as their predictions.
        self._outbox = tuple(outbox)
        self._outbox_losses = {f.destination: 0 for f in self._outbox}
        self._last_outbox_log = -math.inf
        self._repo = PredictionRepository(store, mapping_revision)
        self._queue: deque[Prediction] = deque()
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._drain_timeout_s = drain_timeout_s
        self._max_backoff_s = max_backoff_s
        self._has_items = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writing = 0
        self._worker: asyncio.Task[None] | None = None
        self._accepting = True
        self._closed = False
        self._last_error = ""
        self._counters = {"written": 0, "batches": 0, "dropped": 0, "errors": 0}
        self._drops_unlogged = 0
        self._last_drop_log = -math.inf

    async def start(self) -> None:
        if self._closed:
            raise StoreError("store sink is closed")
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="store-sink")

    async def write(self, batch: Sequence[Prediction]) -> None:
        if not self._accepting:
            raise StoreError("store sink is closed")
        for prediction in batch:
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self._count_drop()
            self._queue.append(prediction)
        if self._queue:
            self._idle.clear()
            self._has_items.set()

    async def close(self) -> None:
        """Stop accepting, write what is queued (bounded by ``drain_timeout_s``), then stop."""
        if self._closed:
            return
        self._accepting = False
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is None:
            if self._queue:
                log.warning("store_sink_closed", unsent=len(self._queue), **self._counters)
            return
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=self._drain_timeout_s)
        finally:
            unsent = len(self._queue) + self._writing
            worker.cancel()
            results = await asyncio.gather(worker, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    log.error("store_sink_worker_crashed", error=repr(result))
            report = log.warning if unsent else log.info
            report("store_sink_closed", unsent=unsent, **self._counters)

    def health(self) -> ComponentHealth:
        return ComponentHealth.of_worker(
            self.name,
            closed=self._closed,
            worker=self._worker,
            last_error=self._last_error,
            counters={**self._counters, "queue_depth": len(self._queue)},
        )

    def _count_drop(self) -> None:
        self._counters["dropped"] += 1
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            log.warning(
                "store_queue_full_dropped_oldest",
                dropped=self._drops_unlogged,
                dropped_total=self._counters["dropped"],
                queue_size=self._queue_size,
            )
            self._drops_unlogged = 0
            self._last_drop_log = now

    def _report_outbox_losses(self) -> None:
        """A full outbox is never silent: logged (at most once per interval) and in health."""
        now = time.monotonic()
        if now - self._last_outbox_log < _DROP_LOG_INTERVAL_S:
            return
        for feed in self._outbox:
            lost = feed.refused + feed.dropped
            if lost == self._outbox_losses[feed.destination]:
                continue
            self._last_outbox_log = now
            self._outbox_losses[feed.destination] = lost
            log.warning(
                "outbox_full",
                destination=feed.destination,
                policy=feed.budget.when_full,
                max_pending=feed.budget.max_pending,
                refused_total=feed.refused,
                dropped_total=feed.dropped,
            )

    async def _run(self) -> None:
        try:
            await self._write_forever()
        except Exception:
            # Not a database error: a bug. Make it loud; health() now reports "down".
            log.exception("store_sink_worker_failed")
            raise

    async def _write_forever(self) -> None:
        failures = 0
        batch: list[Prediction] = []
        while True:
            if not batch:
                await self._has_items.wait()
                n = min(self._batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
                if not self._queue:
                    self._has_items.clear()
                self._writing = len(batch)
            try:
                await asyncio.to_thread(self._repo.add_many, batch, self._outbox)
            except BridgeError as exc:
                # Keep the batch and retry: the database may be locked or restarting.
                failures += 1
                self._counters["errors"] += 1
                self._last_error = str(exc)
                delay = min(self._max_backoff_s, 0.5 * 2.0 ** min(failures - 1, 62))
                log.error("store_write_failed", rows=len(batch), error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("store_write_recovered", after_failures=failures)
            failures = 0
            self._last_error = ""
            self._report_outbox_losses()
            self._counters["written"] += len(batch)
            self._counters["batches"] += 1
            batch = []
            self._writing = 0
            if not self._queue:
                self._idle.set()
