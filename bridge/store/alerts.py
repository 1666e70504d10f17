"""Alerts in the SQL store: raised by the core's alert rule, acknowledged through the API."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Double, Index, Integer, String, Text, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from bridge.errors import StoreError

from .audit import append_entries, append_entry, default_writer
from .auditchain import NewAuditEntry
from .db import Store, read_session
from .sql import insert_ignoring
from .tables import Base

__all__ = [
    "Alert",
    "AlertFilter",
    "AlertMetrics",
    "AlertRepository",
    "AlertRow",
    "AlreadyAcknowledged",
    "NewAlert",
    "audit_raised",
]


class AlertRow(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_asset_raised", "asset", "raised_at"),
        Index("ix_alerts_raised_at", "raised_at"),  # retention, oldest first (revision 0008)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The prediction that raised it: unique, so writing the same batch twice raises one alert.
    prediction_id: Mapped[str] = mapped_column(String(36), unique=True)
    asset: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(String(200))
    previous: Mapped[str] = mapped_column(String(200))
    score: Mapped[float | None] = mapped_column(Double)
    raised_at: Mapped[float] = mapped_column(Double)
    acked_at: Mapped[float | None] = mapped_column(Double)
    acked_by: Mapped[str | None] = mapped_column(String(200))
    acked_key: Mapped[str | None] = mapped_column(String(12))
    ack_comment: Mapped[str | None] = mapped_column(Text)
    # JSON details of alerts that are not label changes (drift: features, window statistics).
    detail: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True, slots=True)
class NewAlert:
    prediction_id: str
    asset: str
    model: str
    label: str
    previous: str
    score: float | None
    raised_at: float


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    prediction_id: str
    asset: str
    model: str
    label: str
    previous: str
    score: float | None
    raised_at: float
    acked_at: float | None
    acked_by: str | None
    acked_key: str | None
    ack_comment: str | None
    detail: str | None = None  # JSON, for alerts that are not label changes (drift)


@dataclass(frozen=True, slots=True)
class AlertFilter:
    asset: str | None = None
    model: str | None = None
    label: str | None = None
    acknowledged: bool | None = None
    since: float | None = None  # raised at or after
    until: float | None = None  # raised at or before


@dataclass(frozen=True, slots=True)
class AlertMetrics:
    total: int
    acknowledged: int
    open: int
    mean_time_to_ack_s: float | None
    max_time_to_ack_s: float | None
    oldest_open_age_s: float | None


class AlreadyAcknowledged(StoreError):
    """The alert was acknowledged before; the first acknowledgement stands."""


def _finite(value: float | None) -> float | None:
    # The ledger's canonical JSON has no NaN or infinity: such a score is recorded as null
    # rather than refusing the alert itself.
    return value if value is None or math.isfinite(value) else None


def _raised(alert_id: int, row: dict[str, Any]) -> NewAuditEntry:
    after = {
        "prediction_id": row["prediction_id"],
        "asset": row["asset"],
        "model": row["model"],
        "label": row["label"],
        "previous": row["previous"],
        "score": _finite(row["score"]),
        "raised_at": _finite(row["raised_at"]),
    }
    return NewAuditEntry("system", "system", "alert.raised", f"alert:{alert_id}", None, after)


def audit_raised(
    session: Session, gateway: str, raised: Sequence[tuple[int, dict[str, Any]]]
) -> None:
    """The ``alert.raised`` entries of the alerts just inserted ((id, the row's column values)
    each), in the insert's own transaction: an alert and its entry exist together. Raised by
    the gateway's rules, so the actor is ``system``."""
    append_entries(session, gateway, [_raised(alert_id, row) for alert_id, row in raised])


def _alert(r: AlertRow) -> Alert:
    return Alert(
        r.id,
        r.prediction_id,
        r.asset,
        r.model,
        r.label,
        r.previous,
        r.score,
        r.raised_at,
        r.acked_at,
        r.acked_by,
        r.acked_key,
        r.ack_comment,
        r.detail,
    )


class AlertRepository:
    """Synchronous: callers on the event loop use ``asyncio.to_thread``. With ``timeout_s`` the
    reads (pages, metrics) are stopped past it (QueryTimeoutError); writes never are.

    Every alert raised and every acknowledgement is an entry of the audit ledger, appended in
    the change's own transaction; ``gateway`` names the writer in those entries (the runtime
    gives its gateway id; None: ``cli@<host>``, a command's)."""

    def __init__(
        self, store: Store, timeout_s: float | None = None, gateway: str | None = None
    ) -> None:
        self._store = store
        self._timeout_s = timeout_s
        self.gateway = gateway or default_writer()

    def add_many(self, alerts: Sequence[NewAlert]) -> None:
        if not alerts:
            return
        table = AlertRow.__table__
        # RETURNING names only the rows inserted: an alert written before (a retried batch)
        # is skipped by the insert and gets no second ledger entry.
        stmt = insert_ignoring(self._store, table, ["prediction_id"]).returning(
            table.c.id, table.c.prediction_id
        )
        rows = [
            {
                "prediction_id": a.prediction_id,
                "asset": a.asset,
                "model": a.model,
                "label": a.label,
                "previous": a.previous,
                "score": a.score,
                "raised_at": a.raised_at,
            }
            for a in alerts
        ]
        by_prediction = {r["prediction_id"]: r for r in rows}
        try:
            with self._store.sessions.begin() as session:
                inserted = sorted((int(i), str(p)) for i, p in session.execute(stmt, rows))
                # One entry per alert, in id order, appended together: after an outage the
                # loss alerts of every asset come in one batch.
                audit_raised(session, self.gateway, [(i, by_prediction[p]) for i, p in inserted])
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot store {len(rows)} alerts: {exc}") from exc

    def page(self, where: AlertFilter, limit: int, before_id: int | None = None) -> list[Alert]:
        """Newest first (by id); ``before_id`` continues after the last alert of a page."""
        stmt = select(AlertRow)
        if where.asset is not None:
            stmt = stmt.where(AlertRow.asset == where.asset)
        if where.model is not None:
            stmt = stmt.where(AlertRow.model == where.model)
        if where.label is not None:
            stmt = stmt.where(AlertRow.label == where.label)
        if where.acknowledged is True:
            stmt = stmt.where(AlertRow.acked_at.is_not(None))
        elif where.acknowledged is False:
            stmt = stmt.where(AlertRow.acked_at.is_(None))
        if where.since is not None:
            stmt = stmt.where(AlertRow.raised_at >= where.since)
        if where.until is not None:
            stmt = stmt.where(AlertRow.raised_at <= where.until)
        if before_id is not None:
            stmt = stmt.where(AlertRow.id < before_id)
        stmt = stmt.order_by(AlertRow.id.desc()).limit(limit)
        try:
            with read_session(self._store, self._timeout_s) as session:
                return [_alert(r) for r in session.scalars(stmt)]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot query alerts: {exc}") from exc

    def acknowledge(
        self,
        alert_id: int,
        by: str,
        key_id: str,
        comment: str,
        *,
        actor: str | None = None,
        channel: str = "rest",
    ) -> Alert | None:
        """Mark acknowledged now; None if there is no such alert, AlreadyAcknowledged if done.

        The ``alert.acknowledged`` ledger entry (``actor``, default ``key:<key_id>``, through
        ``channel``; the comment as its reason) commits with the acknowledgement; a refused
        one (no such alert, acknowledged before) changes nothing and records nothing.
        """
        now = time.time()
        # One conditional UPDATE: of two concurrent acknowledgements exactly one wins, on SQLite
        # (no SELECT ... FOR UPDATE) as on PostgreSQL.
        stmt = (
            update(AlertRow)
            .where(AlertRow.id == alert_id, AlertRow.acked_at.is_(None))
            .values(
                acked_at=func.max(AlertRow.raised_at, now)
                if self._store.dialect == "sqlite"
                else func.greatest(AlertRow.raised_at, now),
                acked_by=by,
                acked_key=key_id,
                ack_comment=comment,
            )
        )
        try:
            with self._store.sessions.begin() as session:
                result: CursorResult[Any] = session.execute(stmt)  # type: ignore[assignment]
                changed = result.rowcount
                row = session.get(AlertRow, alert_id, populate_existing=True)
                if changed and row is not None:
                    entry = NewAuditEntry(
                        actor or f"key:{key_id}",
                        channel,
                        "alert.acknowledged",
                        f"alert:{alert_id}",
                        {"acknowledged": False},
                        {
                            "acknowledged": True,
                            "acked_by": row.acked_by,
                            "acked_at": _finite(row.acked_at),
                        },
                        comment,
                    )
                    append_entry(session, self.gateway, entry)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot acknowledge alert {alert_id}: {exc}") from exc
        if row is None:
            return None
        if not changed:
            raise AlreadyAcknowledged(f"alert {alert_id} was acknowledged by {row.acked_by}")
        return _alert(row)

    def metrics(self, since: float | None = None, until: float | None = None) -> AlertMetrics:
        """Counts and time to acknowledge over alerts raised in [since, until]."""
        tta = AlertRow.acked_at - AlertRow.raised_at
        stmt = select(
            func.count(AlertRow.id), func.count(AlertRow.acked_at), func.avg(tta), func.max(tta)
        )
        oldest = select(func.min(AlertRow.raised_at)).where(AlertRow.acked_at.is_(None))
        if since is not None:
            stmt = stmt.where(AlertRow.raised_at >= since)
            oldest = oldest.where(AlertRow.raised_at >= since)
        if until is not None:
            stmt = stmt.where(AlertRow.raised_at <= until)
            oldest = oldest.where(AlertRow.raised_at <= until)
        try:
            with read_session(self._store, self._timeout_s) as session:
                total, acked, mean, worst = session.execute(stmt).one()
                oldest_open = session.execute(oldest).scalar_one()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot compute alert metrics: {exc}") from exc
        now = time.time()
        return AlertMetrics(
            total=int(total),
            acknowledged=int(acked),
            open=int(total) - int(acked),
            mean_time_to_ack_s=None if mean is None else float(mean),
            max_time_to_ack_s=None if worst is None else float(worst),
            oldest_open_age_s=None if oldest_open is None else max(0.0, now - float(oldest_open)),
        )
