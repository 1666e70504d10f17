"""Stores drift alerts off the event loop, with their MES and webhook outbox events.

``raise_crossing`` only queues (cheap, on the loop); a worker writes each alert and its events in
one transaction and retries while the database is unavailable. Drift crossings are rare (once
per excursion per asset), so the queue bound is only a guard: when full the oldest is dropped,
counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from bridge.errors import BridgeError
from bridge.store.alerts import NewAlert
from bridge.store.drift import DriftAlertRepository, DriftOutboxEvent
from bridge.store.outbox import OutboxFeed
from bridge.types import ComponentHealth

from .events import DRIFT_LABEL, drift_event, drift_event_id, dumps
from .monitor import DriftCrossing

__all__ = ["DriftAlertWriter"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Pending:
    alert: NewAlert
    body: str
    feeds: tuple[OutboxFeed, ...]


class DriftAlertWriter:
    def __init__(
        self,
        repo: DriftAlertRepository,
        gateway_id: str,
        alert_feeds: Sequence[OutboxFeed] = (),
        *,
        queue_size: int = 10000,
        drain_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.name = "drift-alerts"
        self._repo = repo
        self._gateway_id = gateway_id
        # Every durable destination (MES) gets drift alerts; a model's webhook only its own.
        self._alert_feeds = tuple(alert_feeds)
        self._queue: deque[_Pending] = deque()
        self._queue_size = queue_size
        self._drain_timeout_s = drain_timeout_s
        self._max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._last_error = ""
        self.counters = {"raised": 0, "stored": 0, "duplicates": 0, "dropped": 0, "errors": 0}

    async def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="drift-alerts")

    def raise_crossing(
        self,
        model: str,
        version: str,
        sha256: str,
        crossing: DriftCrossing,
        webhook: OutboxFeed | None,
    ) -> None:
        if self._closed:
            return
        body = drift_event(self._gateway_id, model, version, sha256, crossing)
        alert = NewAlert(
            prediction_id=drift_event_id(self._gateway_id, model, crossing.asset, crossing.at),
            asset=crossing.asset,
            model=model,
            label=DRIFT_LABEL,
            previous="",
            score=crossing.score,
            raised_at=crossing.at,
        )
        feeds = (*self._alert_feeds, webhook) if webhook is not None else self._alert_feeds
        log.warning(
            "drift_detected",
            asset=crossing.asset,
            model=model,
            version=version,
            score=round(crossing.score, 4),
            features=list(crossing.drifting),
        )
        if len(self._queue) >= self._queue_size:
            self._queue.popleft()
            self.counters["dropped"] += 1
            log.error("drift_alert_queue_full_dropped_oldest", queue_size=self._queue_size)
        self._queue.append(_Pending(alert, dumps(body), feeds))
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
        if self._queue:
            log.warning("drift_alerts_closed", unsent=len(self._queue), **self.counters)

    def health(self) -> ComponentHealth:
        counters = {**self.counters, "queue_depth": len(self._queue)}
        if self._closed:
            return ComponentHealth(self.name, "stopped", counters=counters)
        if self._worker is None:
            return ComponentHealth(self.name, "starting", counters=counters)
        if self._worker.done():
            return ComponentHealth(self.name, "down", "writer task ended", counters)
        if self._last_error:
            return ComponentHealth(self.name, "degraded", self._last_error, counters)
        return ComponentHealth(self.name, "ok", counters=counters)

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._queue[0]
            events = [
                DriftOutboxEvent(f.destination, f.budget, f.pending, item.body) for f in item.feeds
            ]
            try:
                # The alert's detail is the event body: the API shows what the MES received.
                results = await asyncio.to_thread(
                    self._repo.raise_alert, item.alert, item.body, events
                )
            except BridgeError as exc:
                failures += 1
                self.counters["errors"] += 1
                self._last_error = str(exc)
                delay = min(self._max_backoff_s, 0.5 * 2.0 ** min(failures - 1, 62))
                log.error("drift_alert_store_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self._last_error = ""
            self._queue.popleft()
            if results is None:
                self.counters["duplicates"] += 1
                continue
            self.counters["stored"] += 1
            # Counted on the loop, like the store writer's counts: the relays read them.
            for feed, r in zip(item.feeds, results, strict=True):
                feed.pending = max(0, feed.pending + r.added - r.dropped)
                feed.added += r.added
                feed.refused += r.refused
                feed.dropped += r.dropped
