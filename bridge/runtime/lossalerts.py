"""LossAlerts: an alert in the store for each asset and model that lost predictions.

The store writer calls ``raise_for`` with every prediction it drops (its queue stayed full, the
gateway stopped with rows unwritten, a batch kept crashing the writer). One alert per
(asset, model) and episode: drops less than ``quiet_s`` apart belong to the same episode, so an
outage of an hour raises one alert per asset, not thousands. The alert names the first lost
prediction (its id is the alert's ``prediction_id``; that prediction is never in the store)
and has the label ``predictions_dropped``.

Drops happen mostly while the store is down, so the alerts wait in this writer's queue and are
written, with retries, once it is back.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

import structlog

from bridge.queuedwriter import QueuedWriter
from bridge.store.alerts import AlertRepository, NewAlert
from bridge.types import Prediction

__all__ = ["LOSS_LABEL", "LossAlerts"]

log = structlog.get_logger(__name__)

LOSS_LABEL = "predictions_dropped"


class LossAlerts(QueuedWriter[NewAlert]):
    def __init__(
        self,
        repo: AlertRepository,
        *,
        quiet_s: float = 60.0,
        drain_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        super().__init__(
            "loss-alerts",
            queue_size=10000,
            drain_timeout_s=drain_timeout_s,
            max_backoff_s=max_backoff_s,
        )
        self._repo = repo
        self._quiet_s = quiet_s
        self._last_drop: dict[tuple[str, str], float] = {}
        self.counters["lost_predictions"] = 0

    def raise_for(self, predictions: Sequence[Prediction], reason: str) -> None:
        """Called by the store writer on the event loop; only counts and queues."""
        self.counters["lost_predictions"] += len(predictions)
        now = time.monotonic()
        first: dict[tuple[str, str], Prediction] = {}
        for p in predictions:
            first.setdefault((p.asset, p.model), p)
        for key, p in first.items():
            last = self._last_drop.get(key, -math.inf)
            self._last_drop[key] = now
            if now - last < self._quiet_s or self._closed:
                continue
            log.error("alert_predictions_dropped", asset=p.asset, model=p.model, reason=reason)
            self._enqueue(NewAlert(p.id, p.asset, p.model, LOSS_LABEL, "", None, time.time()))

    async def _persist(self, items: Sequence[NewAlert]) -> None:
        await asyncio.to_thread(self._repo.add_many, list(items))
        self.counters["stored"] += len(items)
