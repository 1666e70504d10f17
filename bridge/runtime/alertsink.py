"""AlertSink: applies the alert rule (``bridge.alertrule``) to every prediction batch and stores
the alerts it raises.

The gateway builds it with ``for_models`` so that each model's ``alerts:`` settings (the hold
against a label flapping at the decision boundary, on by default) reach the rule.

``write`` only evaluates the (pure, cheap) rule and queues; a worker writes to the store off the
event loop and retries while the database is unavailable. Alerts are rare, so the queue bound
is only a guard: when it is full the oldest alert is dropped, counted and logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import structlog

from bridge.alertrule import AlertRule
from bridge.config.resolved import ResolvedModel
from bridge.config.spec import AlertConfig
from bridge.errors import StoreError
from bridge.queuedwriter import QueuedWriter
from bridge.store.alerts import AlertRepository, NewAlert
from bridge.types import Prediction, PredictionSlot

__all__ = ["AlertSink"]

log = structlog.get_logger(__name__)

# The last stored prediction of each (asset, model) asked for (OutboxRepository's look-up).
Latest = Callable[[Sequence[tuple[str, str]]], Sequence[Prediction]]


class AlertSink(QueuedWriter[NewAlert]):
    def __init__(
        self,
        repo: AlertRepository,
        slots: Sequence[PredictionSlot],
        *,
        queue_size: int = 10000,
        drain_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        alerts: Mapping[str, AlertConfig] | None = None,
        latest: Latest | None = None,
    ) -> None:
        # ``latest``: the store's last prediction per (asset, model), read once at start so a
        # fault that goes on across a restart is not alerted a second time (the open alert,
        # and the HMI's alarm, stay the one an operator acknowledges).
        # ``alerts``: per model name; without it every label change alerts at once (the gateway
        # passes the mapping's settings, debounced by default: ``for_models``).
        super().__init__(
            "alerts",
            queue_size=queue_size,
            drain_timeout_s=drain_timeout_s,
            max_backoff_s=max_backoff_s,
        )
        self._repo = repo
        self._rule = AlertRule(slots, alerts)
        self._pairs = sorted({(s.asset, s.model) for s in slots if s.labels})
        self._latest = latest

    @classmethod
    def for_models(
        cls,
        repo: AlertRepository,
        slots: Sequence[PredictionSlot],
        models: Mapping[str, ResolvedModel],
        latest: Latest | None = None,
    ) -> AlertSink:
        """The sink with each model's alert settings from the mapping."""
        alerts = {name: m.alerts for name, m in models.items()}
        return cls(repo, slots, alerts=alerts, latest=latest)

    async def start(self) -> None:
        if self._latest is not None and self._pairs:
            try:
                seen = await asyncio.to_thread(self._latest, self._pairs)
            except StoreError as exc:  # not fatal: at worst a continuing fault alerts again
                log.warning("alert_rule_not_seeded", error=str(exc))
            else:
                self._rule.seed(seen)
                log.info("alert_rule_seeded", predictions=len(seen))
            self._latest = None  # once: a restart of the sink alone keeps its state
        await super().start()

    def follow(self, slots: Sequence[PredictionSlot], models: Mapping[str, ResolvedModel]) -> None:
        """Alert on ``slots`` from now on (a mapping reload); kept assets keep their state."""
        self._rule.follow(slots, {name: m.alerts for name, m in models.items()})

    async def write(self, batch: Sequence[Prediction]) -> None:
        if batch and batch[0].historical:
            # Made for the past (the runner publishes them in batches of their own): an alert
            # is about now, and the rule's state follows the live predictions only.
            return
        raised = self._rule.evaluate(batch)
        if not raised or self._closed:
            return
        for a in raised:
            p = a.prediction
            alert = NewAlert(p.id, p.asset, p.model, a.label, a.previous, p.score, p.timestamp)
            log.warning(
                "alert_raised",
                asset=alert.asset,
                model=alert.model,
                label=alert.label,
                previous=alert.previous,
            )
            self._enqueue(alert)

    async def _persist(self, items: Sequence[NewAlert]) -> None:
        await asyncio.to_thread(self._repo.add_many, list(items))
        self.counters["stored"] += len(items)
