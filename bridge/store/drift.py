"""Drift alerts: the alert row and its outbox events (MES, retraining webhook) in one
transaction, so an alert that exists is also delivered, and a retried write adds nothing twice
(the alert's event id is unique; events are only queued with a new alert row)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from bridge.errors import StoreError

from .alerts import AlertRow, NewAlert
from .db import Store
from .outbox import Budget, EnqueueResult, enqueue
from .sql import insert_ignoring

__all__ = ["DriftAlertRepository", "DriftOutboxEvent"]


@dataclass(frozen=True, slots=True)
class DriftOutboxEvent:
    destination: str
    budget: Budget
    pending: int
    body: str


class DriftAlertRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    def raise_alert(
        self, alert: NewAlert, detail: str, events: Sequence[DriftOutboxEvent]
    ) -> list[EnqueueResult] | None:
        """Store the alert and queue its events; None if this alert was stored before."""
        stmt = insert_ignoring(self._store, AlertRow.__table__, ["prediction_id"]).returning(
            AlertRow.__table__.c.id
        )
        row = {
            "prediction_id": alert.prediction_id,
            "asset": alert.asset,
            "model": alert.model,
            "label": alert.label,
            "previous": alert.previous,
            "score": alert.score,
            "raised_at": alert.raised_at,
            "detail": detail,
        }
        try:
            with self._store.sessions.begin() as session:
                new = session.execute(stmt, row).scalar_one_or_none()
                if new is None:
                    return None
                return [
                    enqueue(
                        session,
                        e.destination,
                        [(alert.asset, alert.prediction_id, e.body)],
                        e.budget,
                        e.pending,
                    )
                    for e in events
                ]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot store drift alert of {alert.asset}: {exc}") from exc
