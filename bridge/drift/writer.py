"""Stores drift alerts off the event loop, with their MES and webhook outbox events.

``raise_crossing`` only queues (cheap, on the loop); a worker writes each alert and its events in
one transaction and retries while the database is unavailable. Drift crossings are rare (once
per excursion per asset), so the queue bound is only a guard: when full the oldest is dropped,
counted and logged.

A destination with event rules (the MES) gets a drift event when its rules include ``every`` or
``alerts``, shaped like its other events (its template, or its default body) from a ``drift``
``Trigger``; other destinations and the webhook get the drift body of ``bridge.drift.events``.
The wiring hands in the destinations' outbox feeds as ``AlertFeed``s: this package does not
import the outbox, it only needs a body and a row for each alert.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from bridge.queuedwriter import QueuedWriter
from bridge.store.alerts import NewAlert
from bridge.store.drift import DriftAlertRepository, DriftOutboxEvent, EventStager
from bridge.types import Prediction, Quality, Trigger

from .events import DRIFT_LABEL, drift_details, drift_event, drift_event_id, dumps
from .monitor import DriftCrossing

__all__ = ["AlertFeed", "DriftAlertWriter"]

log = structlog.get_logger(__name__)


class AlertFeed(EventStager, Protocol):
    """One destination's outbox as a drift alert needs it (``bridge.outbox.feed.OutboxFeed``):
    the body of the alert's event, and queuing it in the alert's transaction."""

    def alert_body(self, trigger: Trigger, default: str) -> str: ...


@dataclass(frozen=True, slots=True)
class _Pending:
    alert: NewAlert
    detail: str
    events: tuple[DriftOutboxEvent, ...]


class DriftAlertWriter(QueuedWriter[_Pending]):
    def __init__(
        self,
        repo: DriftAlertRepository,
        gateway_id: str,
        alert_feeds: Sequence[AlertFeed] = (),
        *,
        queue_size: int = 10000,
        drain_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        # One at a time: each alert and its outbox events are one transaction.
        super().__init__(
            "drift-alerts",
            batch_size=1,
            queue_size=queue_size,
            drain_timeout_s=drain_timeout_s,
            max_backoff_s=max_backoff_s,
        )
        self._repo = repo
        self._gateway_id = gateway_id
        # Every durable destination (MES) gets drift alerts; a model's webhook only its own.
        self._alert_feeds = tuple(alert_feeds)
        self.counters["duplicates"] = 0

    def set_alert_feeds(self, alert_feeds: Sequence[AlertFeed]) -> None:
        """Alerts raised from now on go to these destinations (a mapping reload changed them)."""
        self._alert_feeds = tuple(alert_feeds)

    def raise_crossing(
        self,
        model: str,
        version: str,
        sha256: str,
        crossing: DriftCrossing,
        webhook: AlertFeed | None,
        prediction: Prediction | None = None,
    ) -> None:
        """``prediction``: the asset's prediction of the tick that crossed (what a templated
        MES event shows besides the drift), if there was one."""
        if self._closed:
            return
        event_id = drift_event_id(self._gateway_id, model, crossing.asset, crossing.at)
        detail = dumps(drift_event(self._gateway_id, model, version, sha256, crossing))
        alert = NewAlert(
            prediction_id=event_id,
            asset=crossing.asset,
            model=model,
            label=DRIFT_LABEL,
            previous="",
            score=crossing.score,
            raised_at=crossing.at,
        )
        feeds = (*self._alert_feeds, webhook) if webhook is not None else self._alert_feeds
        trigger = Trigger(
            _as_event(prediction, event_id, model, version, sha256, crossing),
            "drift",
            drift=drift_details(crossing),
        )
        events = tuple(DriftOutboxEvent(f, f.alert_body(trigger, detail)) for f in feeds)
        log.warning(
            "drift_detected",
            asset=crossing.asset,
            model=model,
            version=version,
            score=round(crossing.score, 4),
            features=list(crossing.drifting),
        )
        self._enqueue(_Pending(alert, detail, events))

    async def _persist(self, items: Sequence[_Pending]) -> None:
        (item,) = items
        # The alert's detail is the event body: the API shows what the MES received. The feeds
        # count their events once the alert's transaction committed.
        stored = await asyncio.to_thread(
            self._repo.raise_alert, item.alert, item.detail, item.events
        )
        if not stored:
            self.counters["duplicates"] += 1
            return
        self.counters["stored"] += 1


def _as_event(
    p: Prediction | None,
    event_id: str,
    model: str,
    version: str,
    sha256: str,
    c: DriftCrossing,
) -> Prediction:
    """The prediction a drift event shows, under the event's own id: the prediction itself may
    be an event of the same destination, and the MES would take one for a repeat of the other."""
    if p is not None:
        return replace(p, id=event_id)
    return Prediction(
        id=event_id,
        seq=0,
        asset=c.asset,
        model=model,
        version=version,
        sha256=sha256,
        value=None,
        score=None,
        quality=Quality.UNCERTAIN,
        timestamp=c.at,
        input_age_s=None,
        reason="drift detected without a prediction in that run",
        drift_score=c.score,
    )
