"""AlertSink: applies the alert rule to every prediction batch and stores the alerts it raises.

``write`` only evaluates the (pure, cheap) rule and queues; a worker writes to the store off the
event loop and retries while the database is unavailable. Alerts are rare, so the queue bound
is only a guard: when it is full the oldest alert is dropped, counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence

import structlog

from bridge.errors import BridgeError
from bridge.store.alerts import AlertRepository, NewAlert
from bridge.types import ComponentHealth, Prediction, PredictionSlot

from .alertrule import AlertRule

__all__ = ["AlertSink"]

log = structlog.get_logger(__name__)


class AlertSink:
    def __init__(
        self,
        repo: AlertRepository,
        slots: Sequence[PredictionSlot],
        *,
        queue_size: int = 10000,
        drain_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.name = "alerts"
        self._repo = repo
        self._rule = AlertRule(slots)
        self._queue: deque[NewAlert] = deque()
        self._queue_size = queue_size
        self._drain_timeout_s = drain_timeout_s
        self._max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._last_error = ""
        self._counters = {"raised": 0, "stored": 0, "dropped": 0, "errors": 0}

    async def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="alert-sink")

    async def write(self, batch: Sequence[Prediction]) -> None:
        alerts = self._rule.evaluate(batch)
        if not alerts or self._closed:
            return
        for alert in alerts:
            log.warning(
                "alert_raised",
                asset=alert.asset,
                model=alert.model,
                label=alert.label,
                previous=alert.previous,
            )
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self._counters["dropped"] += 1
                log.error("alert_queue_full_dropped_oldest", queue_size=self._queue_size)
            self._queue.append(alert)
        self._counters["raised"] += len(alerts)
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
        unsent = self._counters["raised"] - self._counters["stored"] - self._counters["dropped"]
        if unsent:
            log.warning("alert_sink_closed", unsent=unsent, **self._counters)

    def health(self) -> ComponentHealth:
        counters = {**self._counters, "queue_depth": len(self._queue)}
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
        batch: list[NewAlert] = []
        while True:
            if not batch:
                if not self._queue:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = list(self._queue)
                self._queue.clear()
            try:
                await asyncio.to_thread(self._repo.add_many, batch)
            except BridgeError as exc:
                # Keep the alerts and retry: the database may be locked or restarting.
                failures += 1
                self._counters["errors"] += 1
                self._last_error = str(exc)
                delay = min(self._max_backoff_s, 0.5 * 2.0 ** min(failures - 1, 62))
                log.error("alert_store_failed", alerts=len(batch), error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self._last_error = ""
            self._counters["stored"] += len(batch)
            batch = []
