"""Alerts in the SQL store: raised by the core's alert rule, acknowledged through the API."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Double, Index, Integer, String, Text, and_, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from bridge.errors import StoreError

from .audit import append_entries, append_entry, default_writer
from .auditchain import NewAuditEntry
from .codec import explanation_from_json
from .db import Store, read_session
from .sql import insert_ignoring
from .tables import Base, PredictionRow

__all__ = [
    "Alert",
    "AlertEvent",
    "AlertFilter",
    "AlertMetrics",
    "AlertRepository",
    "AlertRow",
    "AlertScope",
    "AlreadyAcknowledged",
    "EventCursor",
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
    # Part 9's second operator step, after the acknowledgement (revision 0014): the HMI's
    # Confirm method of the alarm (bridge.connectors.opcua._alarms).
    confirmed_at: Mapped[float | None] = mapped_column(Double)
    confirmed_by: Mapped[str | None] = mapped_column(String(200))
    confirm_comment: Mapped[str | None] = mapped_column(Text)


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
    confirmed_at: float | None = None
    confirmed_by: str | None = None
    confirm_comment: str | None = None


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


@dataclass(frozen=True, slots=True)
class AlertScope:
    """Which alerts are a classifier's alarms: per model name its fault labels (every label but
    the first, normal one), on ``assets`` (None: any asset). Drift and lost-prediction alerts
    share the table and never match a model's labels."""

    faults: dict[str, tuple[str, ...]]
    assets: tuple[str, ...] | None = None


# The three moments of an alert, in the order they happen to one alert.
EVENT_KINDS = ("raised", "acknowledged", "confirmed")


@dataclass(frozen=True, slots=True)
class EventCursor:
    """Where a page of alert events ended: the last event's time, alert id and kind."""

    time: float
    alert_id: int
    kind: int  # index in EVENT_KINDS


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One moment of an alert (``kind``: raised, acknowledged or confirmed) at ``time``, with
    the version and explanation reason of the prediction that raised it while that prediction
    is still stored (retention may have removed it)."""

    kind: str
    time: float
    alert: Alert
    version: str | None
    reason: str

    @property
    def cursor(self) -> EventCursor:
        return EventCursor(self.time, self.alert.id, EVENT_KINDS.index(self.kind))


# Prediction ids per IN list of a look-up.
_IN_CHUNK = 500

_TIME_OF = {
    "raised": AlertRow.raised_at,
    "acknowledged": AlertRow.acked_at,
    "confirmed": AlertRow.confirmed_at,
}


def _order(c: EventCursor) -> tuple[float, int, int]:
    return (c.time, c.alert_id, c.kind)


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
        r.confirmed_at,
        r.confirmed_by,
        r.confirm_comment,
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
        key_id: str | None,
        comment: str,
        *,
        actor: str | None = None,
        channel: str = "rest",
    ) -> Alert | None:
        """Mark acknowledged now; None if there is no such alert, AlreadyAcknowledged if done.

        The ``alert.acknowledged`` ledger entry (``actor``, default ``key:<key_id>``, through
        ``channel``; the comment as its reason) commits with the acknowledgement; a refused
        one (no such alert, acknowledged before) changes nothing and records nothing.
        ``key_id`` None: not through an API key (an HMI's Acknowledge method; give ``actor``).
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

    def confirm(
        self, alert_id: int, by: str, comment: str, *, actor: str, channel: str
    ) -> tuple[Alert | None, bool]:
        """Mark an acknowledged alert confirmed now (Part 9's step after the acknowledgement:
        the operator has dealt with it). Returns the alert as it is afterwards (None: no such
        alert) and whether this call confirmed it; when it did not, the alert was not
        acknowledged yet (``acked_at`` None) or was confirmed before (``confirmed_by``).

        The ``alert.confirmed`` ledger entry commits with the change, as for ``acknowledge``.
        """
        now = time.time()
        stmt = (
            update(AlertRow)
            .where(
                AlertRow.id == alert_id,
                AlertRow.acked_at.is_not(None),
                AlertRow.confirmed_at.is_(None),
            )
            .values(
                confirmed_at=func.max(AlertRow.acked_at, now)
                if self._store.dialect == "sqlite"
                else func.greatest(AlertRow.acked_at, now),
                confirmed_by=by,
                confirm_comment=comment,
            )
        )
        try:
            with self._store.sessions.begin() as session:
                result: CursorResult[Any] = session.execute(stmt)  # type: ignore[assignment]
                changed = bool(result.rowcount)
                row = session.get(AlertRow, alert_id, populate_existing=True)
                if changed and row is not None:
                    entry = NewAuditEntry(
                        actor,
                        channel,
                        "alert.confirmed",
                        f"alert:{alert_id}",
                        {"confirmed": False},
                        {
                            "confirmed": True,
                            "confirmed_by": row.confirmed_by,
                            "confirmed_at": _finite(row.confirmed_at),
                        },
                        comment,
                    )
                    append_entry(session, self.gateway, entry)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot confirm alert {alert_id}: {exc}") from exc
        return (None if row is None else _alert(row)), changed

    def of_predictions(self, prediction_ids: Sequence[str]) -> list[Alert]:
        """The alerts raised by these predictions (at most one each), in id order."""
        out: list[Alert] = []
        ids = list(dict.fromkeys(prediction_ids))
        try:
            with read_session(self._store, self._timeout_s) as session:
                # Bounded IN lists: SQLite's default limit is 32,766 parameters.
                for start in range(0, len(ids), _IN_CHUNK):
                    chunk = ids[start : start + _IN_CHUNK]
                    stmt = select(AlertRow).where(AlertRow.prediction_id.in_(chunk))
                    out.extend(_alert(r) for r in session.scalars(stmt))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read alerts by prediction: {exc}") from exc
        return sorted(out, key=lambda a: a.id)

    def raised_after(self, alert_id: int, limit: int) -> list[Alert]:
        """Alerts with an id above ``alert_id`` (raised later), oldest first, at most ``limit``:
        whoever follows the table reads on from the last id it saw."""
        stmt = select(AlertRow).where(AlertRow.id > alert_id).order_by(AlertRow.id).limit(limit)
        try:
            with read_session(self._store, self._timeout_s) as session:
                return [_alert(r) for r in session.scalars(stmt)]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read new alerts: {exc}") from exc

    def last_id(self) -> int:
        """The highest alert id so far (0: none)."""
        try:
            with read_session(self._store, self._timeout_s) as session:
                return int(session.execute(select(func.max(AlertRow.id))).scalar_one() or 0)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the last alert id: {exc}") from exc

    def raising(self, prediction_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """(model version, explanation reason) of these predictions, for those still stored."""
        out: dict[str, tuple[str, str]] = {}
        ids = list(dict.fromkeys(prediction_ids))
        try:
            with read_session(self._store, self._timeout_s) as session:
                for start in range(0, len(ids), _IN_CHUNK):
                    stmt = select(
                        PredictionRow.prediction_id,
                        PredictionRow.version,
                        PredictionRow.explanation_json,
                    ).where(PredictionRow.prediction_id.in_(ids[start : start + _IN_CHUNK]))
                    for pid, version, explanation in session.execute(stmt):
                        reason = explanation_from_json(explanation)
                        out[pid] = (version, reason.reason if reason is not None else "")
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the raising predictions: {exc}") from exc
        return out

    def newest(self, scope: AlertScope) -> list[Alert]:
        """The newest alert of each (asset, model) in ``scope``: one query per model."""
        out: list[Alert] = []
        try:
            with read_session(self._store, self._timeout_s) as session:
                for model, faults in sorted(scope.faults.items()):
                    if not faults:
                        continue
                    ids = (
                        select(func.max(AlertRow.id))
                        .where(AlertRow.model == model, AlertRow.label.in_(faults))
                        .group_by(AlertRow.asset)
                    )
                    if scope.assets is not None:
                        ids = ids.where(AlertRow.asset.in_(scope.assets))
                    rows = session.scalars(select(AlertRow).where(AlertRow.id.in_(ids)))
                    out.extend(_alert(r) for r in rows)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the newest alerts: {exc}") from exc
        return sorted(out, key=lambda a: a.id)

    def events(
        self,
        scope: AlertScope,
        since: float | None,
        until: float | None,
        limit: int,
        *,
        after: EventCursor | None = None,
        newest_first: bool = False,
    ) -> list[AlertEvent]:
        """The moments (raised, acknowledged, confirmed) of the alerts in ``scope`` that fall in
        [since, until], oldest first (``newest_first``: the other way), at most ``limit``,
        continuing after the cursor of a previous page's last event.

        One keyset query per kind, each reading at most ``limit`` rows through its own time
        column, merged here: a page costs three bounded reads however long the history is.
        """
        if not scope.faults or limit <= 0:
            return []
        merged: list[AlertEvent] = []
        try:
            with read_session(self._store, self._timeout_s) as session:
                for kind in EVENT_KINDS:
                    stmt = self._kind_query(scope, kind, since, until, after, newest_first)
                    for row, version, explanation in session.execute(stmt.limit(limit)):
                        column = _TIME_OF[kind]
                        reason = explanation_from_json(explanation)
                        merged.append(
                            AlertEvent(
                                kind,
                                float(getattr(row, column.key)),
                                _alert(row),
                                version,
                                reason.reason if reason is not None else "",
                            )
                        )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read alert events: {exc}") from exc
        merged.sort(key=lambda e: _order(e.cursor), reverse=newest_first)
        return merged[:limit]

    def _kind_query(
        self,
        scope: AlertScope,
        kind: str,
        since: float | None,
        until: float | None,
        after: EventCursor | None,
        newest_first: bool,
    ) -> Any:
        at = _TIME_OF[kind]
        rank = EVENT_KINDS.index(kind)
        labels = [
            and_(AlertRow.model == model, AlertRow.label.in_(faults))
            for model, faults in sorted(scope.faults.items())
            if faults
        ]
        stmt = (
            select(AlertRow, PredictionRow.version, PredictionRow.explanation_json)
            .outerjoin(PredictionRow, PredictionRow.prediction_id == AlertRow.prediction_id)
            .where(at.is_not(None), or_(*labels))
        )
        if scope.assets is not None:
            stmt = stmt.where(AlertRow.asset.in_(scope.assets))
        if since is not None:
            stmt = stmt.where(at >= since)
        if until is not None:
            stmt = stmt.where(at <= until)
        if after is not None:
            # Strictly after the cursor in (time, id, kind) order (before it, newest first).
            if newest_first:
                beyond, id_beyond = at < after.time, AlertRow.id < after.alert_id
                later = rank < after.kind
            else:
                beyond, id_beyond = at > after.time, AlertRow.id > after.alert_id
                later = rank > after.kind
            terms = [beyond, and_(at == after.time, id_beyond)]
            if later:
                terms.append(and_(at == after.time, AlertRow.id == after.alert_id))
            stmt = stmt.where(or_(*terms))
        if newest_first:
            return stmt.order_by(at.desc(), AlertRow.id.desc())
        return stmt.order_by(at, AlertRow.id)

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
