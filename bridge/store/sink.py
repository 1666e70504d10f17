"""StoreSink: predictions queue in memory and are written in batches, off the event loop.

A ``QueuedWriter`` (``bridge.queuedwriter``): the queue, the supervised worker, its retries
while the database is away and the setting aside of a batch that keeps crashing it are that
class's; this one adds what predictions need.

Backpressure, not silent loss: ``write`` waits (up to ``max_wait_s``) for room in the bounded
queue, so a slow store slows the model runners down instead of losing their predictions. What
still cannot be kept (the store down for longer than the queue and the wait cover, the gateway
stopping with rows unwritten, a batch that crashes the writer again and again) is counted as
``dropped``, logged and handed to ``on_drop`` (the gateway raises an alert with it): never
silent. A prediction is durable once its batch committed; ``written`` counts those rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence

import structlog

from bridge.errors import StoreError
from bridge.histogram import LatencyHistogram
from bridge.queuedwriter import QueuedWriter
from bridge.types import Prediction

from .db import Store
from .outbox import OutboxHook
from .repository import PredictionRepository

__all__ = ["OnDrop", "StoreSink"]

log = structlog.get_logger(__name__)

_DROP_LOG_INTERVAL_S = 5.0
# Health stays degraded this long after the last drop.
_DROP_DEGRADED_S = 60.0
# How long a stopping writer waits for a commit already running in its thread: the thread
# cannot be cancelled, and only its outcome says whether those rows are stored or lost.
_SETTLE_TIMEOUT_S = 10.0

# Called with predictions that will never be stored and the reason, on the event loop; it must
# be quick and must not raise (the gateway queues an alert).
OnDrop = Callable[[Sequence[Prediction], str], None]


class StoreSink(QueuedWriter[Prediction]):
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
        # One transaction per pipeline tick of a 2,000-asset plant: each commit is an fsync
        # (SQLite FULL, PostgreSQL synchronous_commit), and 2,000 rows per commit wrote 10-20 %
        # more predictions/s than 500 (bench/store.py).
        batch_size: int = 2000,
        drain_timeout_s: float = 10.0,
        max_backoff_s: float = 30.0,
        max_wait_s: float = 5.0,
        outbox: Sequence[OutboxHook] = (),
        mapping_revision: str | None = None,
        on_drop: OnDrop | None = None,
        gateway_id: str | None = None,
    ) -> None:
        super().__init__(
            "store",
            batch_size=batch_size,
            queue_size=queue_size,
            drain_timeout_s=drain_timeout_s,
            max_backoff_s=max_backoff_s,
            counters=("written", "batches", "fenced"),
        )
        # Outbox rows of durable destinations go in the same transaction as their predictions;
        # the feeds count, and report a full outbox, themselves (``bridge.outbox.feed``).
        self._outbox = tuple(outbox)
        self._repo = PredictionRepository(store, mapping_revision, gateway_id)
        self._max_wait_s = max_wait_s
        self._on_drop = on_drop
        self.counters["waits"] = 0
        self.counters["waited_ms"] = 0
        self._drops_unlogged = 0
        self._last_drop_log = -math.inf
        self._last_drop_at = -math.inf
        self._last_drop_reason = ""
        # Seconds per committed batch, for the metrics endpoint (bridge_store_write_seconds).
        self.write_latency = LatencyHistogram()

    def set_outbox(self, outbox: Sequence[OutboxHook]) -> None:
        """Batches written from now on fill these destinations' outboxes (a mapping reload
        added or removed destinations; a batch already in its transaction keeps the old ones)."""
        self._outbox = tuple(outbox)

    def fence(self) -> None:
        """Fleet: from now on a prediction whose asset's lease changed hands since it was made
        is refused by the store (counted as ``fenced``, never stored, never sent)."""
        self._repo.fenced = True

    def set_mapping_revision(self, revision: str) -> None:
        """Rows written from now on carry ``revision`` (a reloaded mapping)."""
        self._repo.mapping_revision = revision

    async def start(self) -> None:
        if self._closed:
            raise StoreError("store sink is closed")
        await super().start()

    async def write(self, batch: Sequence[Prediction]) -> None:
        """Queue ``batch``; while the queue is full, wait for room (backpressure) up to
        ``max_wait_s``, then drop the oldest queued predictions to make room (counted)."""
        if self._closed:
            self._lost(batch, "they came after the store writer closed")
            raise StoreError("store sink is closed")
        if not batch:
            return
        need = min(len(batch), self._queue_size)
        if len(self._queue) + need > self._queue_size:
            started = time.monotonic()
            self.counters["waits"] += 1
            try:
                await self._wait_for_room(need, self._max_wait_s)
            except asyncio.CancelledError:
                self._lost(batch, "the gateway stopped while they waited for the store")
                raise
            finally:
                self.counters["waited_ms"] += int((time.monotonic() - started) * 1000)
            if self._closed:
                self._lost(batch, "the store writer closed while they waited for it")
                return
        oldest = self._admit(batch)
        self._lost(oldest, f"the store queue stayed full for {self._max_wait_s:g} s")

    def _problem(self) -> str:
        problem = super()._problem()
        if not problem and time.monotonic() - self._last_drop_at < _DROP_DEGRADED_S:
            problem = f"predictions dropped: {self._last_drop_reason}"
        return problem

    def _lost(self, items: Sequence[Prediction], reason: str) -> None:
        """Predictions that will never be stored: counted, logged (at most once per interval),
        shown in health for a while and handed to ``on_drop``."""
        if not items:
            return
        self.counters["dropped"] += len(items)
        self._drops_unlogged += len(items)
        now = time.monotonic()
        self._last_drop_at, self._last_drop_reason = now, reason
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            log.error(
                "store_predictions_dropped",
                dropped=self._drops_unlogged,
                dropped_total=self.counters["dropped"],
                reason=reason,
                queue_size=self._queue_size,
            )
            self._drops_unlogged = 0
            self._last_drop_log = now
        if self._on_drop is not None:
            try:
                self._on_drop(items, reason)
            except Exception:  # reporting a loss must not cause another one
                log.exception("store_drop_report_failed")

    async def _persist(self, items: Sequence[Prediction]) -> None:
        started = time.monotonic()
        job = asyncio.ensure_future(asyncio.to_thread(self._repo.add_many, items, self._outbox))
        try:
            refused = await asyncio.shield(job)
        except asyncio.CancelledError:
            # Stopping: the thread cannot be cancelled and may still commit. Its outcome says
            # whether these rows are stored or must be counted as lost.
            with contextlib.suppress(Exception):
                refused = await asyncio.wait_for(job, _SETTLE_TIMEOUT_S)
                self._committed(items, refused)
            raise
        self.write_latency.observe(time.monotonic() - started)
        self._committed(items, refused)

    def _committed(self, items: Sequence[Prediction], refused: int = 0) -> None:
        if refused:
            # Not a loss: another gateway serves these assets now and publishes for them.
            self.counters["fenced"] += refused
            stale = self._repo.refused
            log.warning(
                "store_refused_stale_predictions",
                refused=refused,
                refused_total=self.counters["fenced"],
                assets=sorted({p.asset for p in stale})[:20],
                reason="their assets' leases changed hands since they were made",
            )
        self.counters["written"] += len(items) - refused
        self.counters["batches"] += 1
        self._settled(items)
