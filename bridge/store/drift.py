"""Drift alerts: the alert row and its outbox events (MES, retraining webhook) in one
transaction, so an alert that exists is also delivered, and a retried write adds nothing twice
(the alert's event id is unique; events are only queued with a new alert row).

Which destinations get an alert, with which body and within which budget is decided above the
store (``bridge.drift.writer`` and ``bridge.outbox.feed``): each event comes with the
``EventStager`` that writes its row, and the store only runs it in the alert's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bridge.errors import StoreError

from .alerts import AlertRow, NewAlert, audit_raised
from .audit import default_writer
from .db import Store
from .outbox import OnCommit
from .sql import insert_ignoring

__all__ = ["DriftAlertRepository", "DriftOutboxEvent", "EventStager"]


class EventStager(Protocol):
    """Queues one event of a destination inside the caller's transaction (an ``OutboxFeed``).

    Returns what to do once that transaction committed (count it); the store runs it then,
    and never after a rollback.
    """

    def stage_event(self, session: Session, asset: str, event_id: str, body: str) -> OnCommit: ...


@dataclass(frozen=True, slots=True)
class DriftOutboxEvent:
    """The event of one destination for an alert: its body and the outbox that queues it."""

    outbox: EventStager
    body: str


class DriftAlertRepository:
    """``gateway`` names the writer of the alerts' ``alert.raised`` ledger entries (the runtime
    gives its gateway id; None: ``cli@<host>``)."""

    def __init__(self, store: Store, gateway: str | None = None) -> None:
        self._store = store
        self.gateway = gateway or default_writer()

    def raise_alert(self, alert: NewAlert, detail: str, events: Sequence[DriftOutboxEvent]) -> bool:
        """Store the alert and queue its events; False if this alert was stored before."""
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
                    return False
                on_commit = [
                    e.outbox.stage_event(session, alert.asset, alert.prediction_id, e.body)
                    for e in events
                ]
                # Last, as every append: the ledger's head stays locked for the shortest time.
                audit_raised(session, self.gateway, [(int(new), row)])
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot store drift alert of {alert.asset}: {exc}") from exc
        for done in on_commit:
            done()
        return True
