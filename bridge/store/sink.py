"""StoreSink: predictions queue in memory and are written in batches, off the event loop.

Backpressure, not silent loss: ``write`` waits (up to ``max_wait_s``) for room in the bounded
queue, so a slow store slows the model runners down instead of losing their predictions. What
still cannot be kept (the store down for longer than the queue and the wait cover, the gateway
stopping with rows unwritten, a batch that crashes the writer again and again) is counted as
``dropped``, logged and handed to ``on_drop`` (the gateway raises an alert with it): never
silent. A prediction is durable once its batch committed; ``written`` counts those rows.

The worker is supervised (``bridge.supervise``): it restarts, with backoff, on any
exception, and the batch it was writing is written by the restarted worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence

import structlog

from bridge.errors import BridgeError, StoreError
from bridge.supervise import Supervised
from bridge.types import ComponentHealth, Prediction

from .db import Store
from .outbox import OutboxFeed
from .repository import PredictionRepository

__all__ = ["OnDrop", "StoreSink"]

log = structlog.get_logger(__name__)

_DROP_LOG_INTERVAL_S = 5.0
# Health stays degraded this long after the last drop.
_DROP_DEGRADED_S = 60.0
# How long a stopping writer waits for a commit already running in its thread: the thread
# cannot be cancelled, and only its outcome says whether those rows are stored or lost.
_SETTLE_TIMEOUT_S = 10.0
# A batch that crashed the writer this many times in a row is set aside (dropped, counted and
# alerted) so that one bad row cannot hold back every later prediction.
_POISON_AFTER = 3

# Called with predictions that will never be stored and the reason, on the event loop; it must
# be quick and must not raise (the gateway queues an alert).
OnDrop = Callable[[Sequence[Prediction], str], None]


class StoreSink:
    """A ``bridge.types.Sink`` named "store". One transaction per batch of up to ``batch_size``.

    ``max_wait_s`` is how long one ``write`` may wait for room in a full queue before the
    oldest queued predictions are dropped to make room; the default, SQLite's busy timeout, lets
    a store that is locked for one busy timeout cost no prediction even with a full queue.
    """

    def __init__(
        self,
        store: Store,
        *,
        queue_size: int = 10000,
        batch_size: int = 500,
        drain_timeout_s: float = 10.0,
        max_backoff_s: float = 30.0,
        max_wait_s: float = 5.0,
        outbox: Sequence[OutboxFeed] = (),
        mapping_revision: str | None = None,
        on_drop: OnDrop | None = None,
        gateway_id: str | None = None,
    ) -> None:
        self.name = "store"
        # Outbox rows of durable destinations go in the same transaction as their predictions.
        self._outbox = tuple(outbox)
        self._outbox_losses = {f.destination: 0 for f in self._outbox}
        self._last_outbox_log = -math.inf
        self._repo = PredictionRepository(store, mapping_revision, gateway_id)
        self._queue: deque[Prediction] = deque()
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._drain_timeout_s = drain_timeout_s
        self._max_backoff_s = max_backoff_s
        self._max_wait_s = max_wait_s
        self._on_drop = on_drop
        self._has_items = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        # The batch being written; kept here so a restarted worker writes it again.
        self._batch: list[Prediction] = []
        self._batch_crashes = 0
        self._worker = Supervised("store-sink", self._write_forever, max_backoff_s=max_backoff_s)
        self._started = False
        self._accepting = True
        self._closed = False
        self._last_error = ""
        self._counters = {
            "written": 0,
            "batches": 0,
            "dropped": 0,
            "errors": 0,
            "waits": 0,
            "waited_ms": 0,
        }
        self._drops_unlogged = 0
        self._last_drop_log = -math.inf
        self._last_drop_at = -math.inf
        self._last_drop_reason = ""

    async def start(self) -> None:
        if self._closed:
            raise StoreError("store sink is closed")
        if not self._started:
            self._started = True
            self._worker.start()

    async def write(self, batch: Sequence[Prediction]) -> None:
        """Queue ``batch``; while the queue is full, wait for room (backpressure) up to
        ``max_wait_s``, then drop the oldest queued predictions to make room (counted)."""
        if not self._accepting:
            self._drop(batch, "they came after the store writer closed")
            raise StoreError("store sink is closed")
        if not batch:
            return
        need = min(len(batch), self._queue_size)
        if len(self._queue) + need > self._queue_size:
            try:
                await self._wait_for_room(need)
            except asyncio.CancelledError:
                self._drop(batch, "the gateway stopped while they waited for the store")
                raise
            if not self._accepting:
                self._drop(batch, "the store writer closed while they waited for it")
                return
        self._queue.extend(batch)
        overflow = len(self._queue) - self._queue_size
        if overflow > 0:
            oldest = [self._queue.popleft() for _ in range(overflow)]
            self._drop(oldest, f"the store queue stayed full for {self._max_wait_s:g} s")
        self._idle.clear()
        self._has_items.set()

    async def _wait_for_room(self, need: int) -> None:
        started = time.monotonic()
        deadline = started + self._max_wait_s
        self._counters["waits"] += 1
        try:
            while self._accepting and len(self._queue) + need > self._queue_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), remaining)
        finally:
            self._counters["waited_ms"] += int((time.monotonic() - started) * 1000)

    async def close(self) -> None:
        """Stop accepting, write what is queued (bounded by ``drain_timeout_s``), then stop.

        What is still unwritten then is counted as dropped and reported: never silent."""
        if self._closed:
            return
        self._accepting = False
        self._closed = True
        self._room.set()  # writers still waiting for room give up (and count their batch)
        if self._started:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=self._drain_timeout_s)
            await self._worker.stop()
        unsent = [*self._batch, *self._queue]
        self._batch = []
        self._queue.clear()
        if unsent:
            self._drop(unsent, "the gateway stopped before the store committed them")
            log.error("store_sink_closed_unsent", unsent=len(unsent), **self._counters)
        else:
            log.info("store_sink_closed", unsent=0, **self._counters)

    def health(self) -> ComponentHealth:
        problem = self._last_error or self._worker.last_crash
        if not problem and time.monotonic() - self._last_drop_at < _DROP_DEGRADED_S:
            problem = f"predictions dropped: {self._last_drop_reason}"
        return ComponentHealth.of_worker(
            self.name,
            closed=self._closed,
            worker=self._worker if self._started else None,
            last_error=problem,
            counters={
                **self._counters,
                "queue_depth": len(self._queue),
                "restarts": self._worker.restarts,
            },
        )

    def _drop(self, predictions: Sequence[Prediction], reason: str) -> None:
        """Predictions that will never be stored: counted, logged (at most once per interval),
        shown in health for a while and handed to ``on_drop``."""
        if not predictions:
            return
        self._counters["dropped"] += len(predictions)
        self._drops_unlogged += len(predictions)
        now = time.monotonic()
        self._last_drop_at, self._last_drop_reason = now, reason
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            log.error(
                "store_predictions_dropped",
                dropped=self._drops_unlogged,
                dropped_total=self._counters["dropped"],
                reason=reason,
                queue_size=self._queue_size,
            )
            self._drops_unlogged = 0
            self._last_drop_log = now
        if self._on_drop is not None:
            try:
                self._on_drop(predictions, reason)
            except Exception:  # reporting a loss must not cause another one
                log.exception("store_drop_report_failed")

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

    async def _write_forever(self) -> None:
        failures = 0
        while True:
            if not self._batch:
                await self._has_items.wait()
                n = min(self._batch_size, len(self._queue))
                self._batch = [self._queue.popleft() for _ in range(n)]
                self._batch_crashes = 0
                if not self._queue:
                    self._has_items.clear()
                self._room.set()
                if not self._batch:
                    continue
            try:
                await self._commit(self._batch)
            except BridgeError as exc:
                # Keep the batch and retry: the database may be locked or restarting.
                failures += 1
                self._counters["errors"] += 1
                self._last_error = str(exc)
                delay = min(self._max_backoff_s, 0.5 * 2.0 ** min(failures - 1, 62))
                log.error(
                    "store_write_failed", rows=len(self._batch), error=str(exc), retry_in_s=delay
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                # A bug, not the database: the supervisor restarts this loop, which writes the
                # batch again, unless it keeps crashing on this very batch.
                self._batch_crashes += 1
                if self._batch_crashes >= _POISON_AFTER:
                    batch, self._batch = self._batch, []
                    self._drop(
                        batch,
                        f"the store writer failed {self._batch_crashes} times on their batch: "
                        f"{type(exc).__name__}: {exc}",
                    )
                    if not self._queue:
                        self._idle.set()
                raise
            if failures:
                log.info("store_write_recovered", after_failures=failures)
            failures = 0
            self._last_error = ""
            self._worker.ok()
            self._report_outbox_losses()
            if not self._queue:
                self._idle.set()

    async def _commit(self, batch: list[Prediction]) -> None:
        job = asyncio.ensure_future(asyncio.to_thread(self._repo.add_many, batch, self._outbox))
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            # Stopping: the thread cannot be cancelled and may still commit. Its outcome says
            # whether these rows are stored or must be counted as lost.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(job, _SETTLE_TIMEOUT_S)
                self._committed(batch)
            raise
        self._committed(batch)

    def _committed(self, batch: list[Prediction]) -> None:
        self._counters["written"] += len(batch)
        self._counters["batches"] += 1
        if self._batch is batch:
            self._batch = []
