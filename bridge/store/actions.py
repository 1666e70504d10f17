"""Write-back actions in the SQL store: each action's state (``action_state``) and the record
of its decisions (``action_events``).

A change of state, the event that caused it and its audit ledger entry commit in one
transaction: a write recorded as done is also the state the next decision is judged against,
and a fault is never stored without its event. Synchronous: callers on the event loop use
``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased

from bridge.errors import StoreError

from .audit import append_entry, default_writer
from .auditchain import NewAuditEntry
from .db import Store, read_session
from .labels import PredictionLabelRow
from .sql import insert_ignoring
from .tables import ActionEventRow, ActionStateRow

__all__ = [
    "OUTCOMES",
    "SYSTEM",
    "ActionCoverage",
    "ActionEvent",
    "ActionEventFilter",
    "ActionRepository",
    "ActionStateRecord",
    "NewActionEvent",
    "decode_value",
    "encode_value",
]

# What an event says happened; ``attempted`` is stored before the write is sent, so a write
# cut short by a crash is still on record.
OUTCOMES = (
    "refused",
    "declined",
    "shadow",
    "await_confirm",
    "confirmed",
    "expired",
    "attempted",
    "written",
    "fault",
)


SYSTEM = "system"  # the actor of the gateway's own decisions


def encode_value(value: float | int | bool | None) -> str | None:
    """JSON text of a value (a bool stays a bool, an int64 keeps its digits); None for none,
    and for a float JSON cannot hold (NaN, infinity)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return json.dumps(value)


def decode_value(text: str | None) -> float | int | bool | None:
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, bool | int | float) else None


@dataclass(frozen=True, slots=True)
class ActionStateRecord:
    """An action's stored state. ``enabled`` is False while it is faulted."""

    action: str
    asset: str
    mode: str
    definition: str
    armed_version: str | None
    armed_by: str | None
    armed_at: float | None
    fallback: str | None
    fault: str | None
    faulted_at: float | None
    enabled: bool
    last_value: float | int | bool | None
    last_time: float | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class NewActionEvent:
    event_id: str  # a UUID made by the caller: the same event is never stored twice
    at: float
    action: str
    asset: str
    outcome: str  # one of OUTCOMES
    mode: str  # the mode applied (after any fallback)
    actor: str  # ``system`` for the gateway's own decisions, else who confirmed or refused
    requested: float | int | bool | None = None
    value: float | int | bool | None = None
    read_back: float | int | bool | None = None
    prediction_id: str | None = None
    model: str | None = None
    model_version: str | None = None
    lineage: dict[str, Any] | None = None
    interlocks: Sequence[dict[str, Any]] = ()
    checks: Sequence[dict[str, Any]] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ActionEvent:
    id: int
    event_id: str
    at: float
    gateway: str
    action: str
    asset: str
    outcome: str
    mode: str
    actor: str
    requested: float | int | bool | None
    value: float | int | bool | None
    read_back: float | int | bool | None
    prediction_id: str | None
    model: str | None
    model_version: str | None
    lineage: dict[str, Any] | None
    interlocks: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    reason: str


@dataclass(frozen=True, slots=True)
class ActionEventFilter:
    action: str | None = None
    asset: str | None = None
    outcome: str | None = None
    since: float | None = None  # at or after
    until: float | None = None  # at or before


@dataclass(frozen=True, slots=True)
class ActionCoverage:
    """What the actions decided in a period (by the time of each event): ``auto`` writes the
    gateway made alone, ``confirmed`` requests a person confirmed, refusals by a person and by
    the rules, ``expired`` requests, ``overridden`` automatic writes whose prediction a person
    rejected (feedback ``reject``), ``shadow`` decisions; the mean seconds from a request for
    confirmation to a person's answer (confirmed or refused)."""

    auto: int
    confirmed: int
    refused_by_person: int
    refused_by_rules: int
    expired: int
    overridden: int
    shadow: int
    faults: int
    await_confirm: int
    answered: int
    mean_time_to_acknowledge_s: float | None


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _state(r: ActionStateRow) -> ActionStateRecord:
    return ActionStateRecord(
        r.action,
        r.asset,
        r.mode,
        r.definition,
        r.armed_version,
        r.armed_by,
        r.armed_at,
        r.fallback,
        r.fault,
        r.faulted_at,
        r.enabled,
        decode_value(r.last_value),
        r.last_time,
        r.updated_at,
    )


def _event(r: ActionEventRow) -> ActionEvent:
    return ActionEvent(
        r.id,
        r.event_id,
        r.at,
        r.gateway,
        r.action,
        r.asset,
        r.outcome,
        r.mode,
        r.actor,
        decode_value(r.requested),
        decode_value(r.value),
        decode_value(r.read_back),
        r.prediction_id,
        r.model,
        r.model_version,
        None if r.lineage is None else json.loads(r.lineage),
        json.loads(r.interlocks),
        json.loads(r.checks),
        r.reason,
    )


def _state_row(s: ActionStateRecord) -> dict[str, Any]:
    return {
        "action": s.action,
        "asset": s.asset,
        "mode": s.mode,
        "definition": s.definition,
        "armed_version": s.armed_version,
        "armed_by": s.armed_by,
        "armed_at": s.armed_at,
        "fallback": s.fallback,
        "fault": s.fault,
        "faulted_at": s.faulted_at,
        "enabled": s.enabled,
        "last_value": encode_value(s.last_value),
        "last_time": s.last_time,
        "updated_at": s.updated_at,
    }


class ActionRepository:
    """``gateway`` names the writer of events and ledger entries (the runtime gives its gateway
    id). A change made through the store is a ledger entry whatever the gateway's ``audit:``
    says (docs/governance.md), so every entry given is appended. With ``timeout_s`` the reads
    of events are stopped past it (QueryTimeoutError), as the API's reads are."""

    def __init__(
        self,
        store: Store,
        gateway: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> None:
        self._store = store
        self._timeout_s = timeout_s
        self.gateway = gateway or default_writer()

    def states(self) -> dict[str, ActionStateRecord]:
        with read_session(self._store, None) as session:
            return {r.action: _state(r) for r in session.scalars(select(ActionStateRow))}

    def save(
        self,
        state: ActionStateRecord | None = None,
        events: Sequence[NewActionEvent] = (),
        entry: NewAuditEntry | None = None,
    ) -> None:
        """Store a state, events and a ledger entry together (each optional)."""
        try:
            with self._store.sessions.begin() as session:
                if state is not None:
                    self._put_state(session, state)
                if events:
                    stmt = insert_ignoring(self._store, ActionEventRow.__table__, ["event_id"])
                    session.execute(stmt, [self._event_row(e) for e in events])
                if entry is not None:
                    # Last, as every append: the ledger's head stays locked the shortest time.
                    append_entry(session, self.gateway, entry)
        except SQLAlchemyError as exc:
            what = state.action if state is not None else ", ".join({e.action for e in events})
            raise StoreError(f"cannot store the state of action {what}: {exc}") from exc

    def _put_state(self, session: Session, state: ActionStateRecord) -> None:
        row = _state_row(state)
        stmt = insert_ignoring(self._store, ActionStateRow.__table__, ["action"])
        inserted: CursorResult[Any] = session.execute(stmt, row)  # type: ignore[assignment]
        if inserted.rowcount == 0:
            session.execute(
                update(ActionStateRow).where(ActionStateRow.action == state.action).values(**row)
            )

    def _event_row(self, e: NewActionEvent) -> dict[str, Any]:
        return {
            "event_id": e.event_id,
            "at": e.at,
            "gateway": self.gateway,
            "action": e.action,
            "asset": e.asset,
            "outcome": e.outcome,
            "mode": e.mode,
            "requested": encode_value(e.requested),
            "value": encode_value(e.value),
            "read_back": encode_value(e.read_back),
            "prediction_id": e.prediction_id,
            "model": e.model,
            "model_version": e.model_version,
            "lineage": None if e.lineage is None else json.dumps(e.lineage, default=str),
            "interlocks": json.dumps(list(e.interlocks), default=str),
            "checks": json.dumps(list(e.checks), default=str),
            "reason": e.reason,
            "actor": e.actor[:200],
        }

    def events(
        self, where: ActionEventFilter, limit: int = 100, before_id: int | None = None
    ) -> list[ActionEvent]:
        """Newest first; ``before_id`` pages on from the last page's last id."""
        q = select(ActionEventRow)
        if where.action is not None:
            q = q.where(ActionEventRow.action == where.action)
        if where.asset is not None:
            q = q.where(ActionEventRow.asset == where.asset)
        if where.outcome is not None:
            q = q.where(ActionEventRow.outcome == where.outcome)
        if where.since is not None:
            q = q.where(ActionEventRow.at >= where.since)
        if where.until is not None:
            q = q.where(ActionEventRow.at <= where.until)
        if before_id is not None:
            q = q.where(ActionEventRow.id < before_id)
        q = q.order_by(ActionEventRow.id.desc()).limit(limit)
        with read_session(self._store, self._timeout_s) as session:
            return [_event(r) for r in session.scalars(q)]

    def write_times(self, action: str, since: float) -> list[float]:
        """Times of the writes of ``action`` at or after ``since``, oldest first (the
        writes-per-hour limit goes on across a restart)."""
        q = (
            select(ActionEventRow.at)
            .where(
                ActionEventRow.action == action,
                ActionEventRow.outcome == "written",
                ActionEventRow.at >= since,
            )
            .order_by(ActionEventRow.at)
        )
        with read_session(self._store, None) as session:
            return [float(t) for t in session.scalars(q)]

    def latest(self, outcome: str) -> dict[str, ActionEvent]:
        """The newest event of each action with ``outcome`` (e.g. its last ``written``)."""
        newest = (
            select(func.max(ActionEventRow.id))
            .where(ActionEventRow.outcome == outcome)
            .group_by(ActionEventRow.action)
        )
        q = select(ActionEventRow).where(ActionEventRow.id.in_(newest.scalar_subquery()))
        with read_session(self._store, self._timeout_s) as session:
            return {r.action: _event(r) for r in session.scalars(q)}

    def coverage(self, since: float | None = None, until: float | None = None) -> ActionCoverage:
        """Decision coverage over the events in [since, until], counted by the database."""
        E = ActionEventRow
        period: list[ColumnElement[bool]] = []
        if since is not None:
            period.append(E.at >= since)
        if until is not None:
            period.append(E.at <= until)
        auto = and_(E.outcome == "written", E.actor == SYSTEM)
        rejected = (
            select(PredictionLabelRow.id)
            .where(
                PredictionLabelRow.prediction_id == E.prediction_id,
                PredictionLabelRow.action == "reject",
            )
            .exists()
        )
        counts = select(
            _count(auto),
            _count(E.outcome == "confirmed"),
            _count(E.outcome == "declined"),
            _count(E.outcome == "refused"),
            _count(E.outcome == "expired"),
            _count(and_(auto, E.prediction_id.is_not(None), rejected)),
            _count(E.outcome == "shadow"),
            _count(E.outcome == "fault"),
            _count(E.outcome == "await_confirm"),
        ).where(*period)
        # The request a person answered is the action's last one asked before the answer: the
        # runner keeps one per action, a newer one expires the older.
        asked = aliased(ActionEventRow)
        asked_at = (
            select(func.max(asked.at))
            .where(
                asked.action == E.action,
                asked.outcome == "await_confirm",
                asked.at <= E.at,
            )
            .scalar_subquery()
        )
        # A person's answer: confirmed (even when the rules judged again then refuse the
        # write) or declined.
        answer = E.outcome.in_(("confirmed", "declined"))
        mtta = select(func.count(asked_at), func.avg(E.at - asked_at)).where(answer, *period)
        try:
            with read_session(self._store, self._timeout_s) as session:
                row = session.execute(counts).one()
                answered, mean = session.execute(mtta).one()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot compute the coverage of the actions: {exc}") from exc
        n_auto, confirmed, by_person_n, by_rules, expired, overridden, shadow, faults, asked_n = (
            int(x) for x in row
        )
        return ActionCoverage(
            auto=n_auto,
            confirmed=confirmed,
            refused_by_person=by_person_n,
            refused_by_rules=by_rules,
            expired=expired,
            overridden=overridden,
            shadow=shadow,
            faults=faults,
            await_confirm=asked_n,
            answered=int(answered),
            mean_time_to_acknowledge_s=None if mean is None else float(mean),
        )
