"""The transactional outbox: rows written with their prediction, claimed and removed by a relay.

Synchronous, like the other repositories: callers on the event loop use ``asyncio.to_thread``.
Order is per (destination, asset): a relay only ever takes the *oldest* row of an asset, so an
asset has at most one event in flight per destination while different assets go in parallel.
On PostgreSQL the claim holds ``FOR UPDATE SKIP LOCKED`` row locks until the rows are finished,
so several gateways can share one database without sending an event twice or out of order.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bridge.errors import StoreError
from bridge.types import Prediction

from .db import Store
from .models import DeadLetterRow, OutboxRow

__all__ = [
    "Budget",
    "Claim",
    "DeadLetter",
    "EnqueueResult",
    "OutboxEvent",
    "OutboxFeed",
    "OutboxRepository",
    "OutboxStats",
    "WhenFull",
    "enqueue",
]

WhenFull = Literal["refuse-new", "drop-oldest"]


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``max_pending`` rows per destination; ``when_full`` says which events lose."""

    max_pending: int
    when_full: WhenFull = "refuse-new"


@dataclass(slots=True)
class OutboxFeed:
    """What the store writer needs to fill one destination's outbox, and what it counted.

    ``encode`` turns a prediction into the JSON body for this destination, or None when the
    destination does not want it. ``pending`` is a running estimate of the backlog that spares
    a COUNT per batch (the writer adds, the relay subtracts and refreshes it).
    """

    destination: str
    encode: Callable[[Prediction], str | None]
    budget: Budget
    pending: int = 0
    added: int = 0
    refused: int = 0
    dropped: int = 0

    def count(self, result: EnqueueResult) -> None:
        self.pending = max(0, self.pending + result.added - result.dropped)
        self.added += result.added
        self.refused += result.refused
        self.dropped += result.dropped


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    destination: str
    asset: str
    event_id: str
    body: str
    created_at: float
    attempts: int
    last_error: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    destination: str
    asset: str
    event_id: str
    body: str
    created_at: float
    failed_at: float
    attempts: int
    last_error: str


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    added: int
    refused: int
    dropped: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    backlog: int
    oldest_created_at: float | None
    dead_letters: int


_EVENT_COLUMNS = (
    OutboxRow.id,
    OutboxRow.destination,
    OutboxRow.asset,
    OutboxRow.event_id,
    OutboxRow.body,
    OutboxRow.created_at,
    OutboxRow.attempts,
    OutboxRow.last_error,
)


def _event(row: OutboxRow) -> OutboxEvent:
    return OutboxEvent(
        row.id,
        row.destination,
        row.asset,
        row.event_id,
        row.body,
        row.created_at,
        row.attempts,
        row.last_error,
    )


def _pending_count(session: Session, destination: str) -> int:
    stmt = select(func.count()).select_from(OutboxRow).where(OutboxRow.destination == destination)
    return int(session.execute(stmt).scalar_one())


def enqueue(
    session: Session,
    destination: str,
    events: Sequence[tuple[str, str, str]],
    budget: Budget,
    pending: int,
) -> EnqueueResult:
    """Add ``(asset, event_id, body)`` rows inside the caller's transaction.

    ``pending`` is the caller's count of rows already waiting; it is only trusted far from the
    limit (it is re-counted exactly here once the batch could reach the budget).
    """
    if not events:
        return EnqueueResult(0, 0, 0)
    if pending + len(events) > budget.max_pending:
        pending = _pending_count(session, destination)
    room = max(0, budget.max_pending - pending)
    refused = dropped = 0
    chosen = list(events)
    if len(chosen) > room:
        excess = len(chosen) - room
        if budget.when_full == "refuse-new":
            chosen, refused = chosen[:room], excess
        else:
            # The batch is newer than every stored row: drop stored rows first, then the
            # batch's own oldest if the batch alone is over the budget.
            if len(chosen) > budget.max_pending:
                dropped += len(chosen) - budget.max_pending
                chosen = chosen[len(chosen) - budget.max_pending :]
            dropped += _drop_oldest(session, destination, len(chosen) - room)
    if chosen:
        now = time.time()
        session.execute(
            insert(OutboxRow),
            [
                {
                    "destination": destination,
                    "asset": asset,
                    "event_id": event_id,
                    "body": body,
                    "created_at": now,
                    "attempts": 0,
                    "next_attempt_at": 0.0,
                    "last_error": "",
                }
                for asset, event_id, body in chosen
            ],
        )
    return EnqueueResult(len(chosen), refused, dropped)


def _drop_oldest(session: Session, destination: str, count: int) -> int:
    if count <= 0:
        return 0
    oldest: Select[int] = (
        select(OutboxRow.id)
        .where(OutboxRow.destination == destination)
        .order_by(OutboxRow.id)
        .limit(count)
    )
    if session.get_bind().dialect.name == "postgresql":
        # An event being delivered right now is locked by the relay: skip it, never wait.
        oldest = oldest.with_for_update(skip_locked=True)
    ids = list(session.execute(oldest).scalars())
    if ids:
        session.execute(delete(OutboxRow).where(OutboxRow.id.in_(ids)))
    return len(ids)


def _dead_values(event: OutboxEvent, now: float, attempts: int, error: str) -> dict[str, Any]:
    return {
        "destination": event.destination,
        "asset": event.asset,
        "event_id": event.event_id,
        "body": event.body,
        "created_at": event.created_at,
        "failed_at": now,
        "attempts": attempts,
        "last_error": error,
    }


class Claim:
    """Head events taken by a relay; ``finish`` records the outcome, ``close`` releases the rest.

    On PostgreSQL the rows stay locked (``FOR UPDATE SKIP LOCKED``) until ``finish``/``close``;
    SQLite has one writer per file anyway, so its claim is a plain read.
    """

    def __init__(self, session: Session, events: list[OutboxEvent], locked: bool) -> None:
        self.events = events
        self._session = session
        self._locked = locked

    def finish(
        self,
        accepted: Sequence[int],
        rejected: dict[int, str],
        dead_letter_after: int,
        retry_in_s: float,
    ) -> list[OutboxEvent]:
        """Delete accepted rows; count rejections; move rows rejected too often to dead letters.

        Returns the events that became dead letters. One transaction: all of it or nothing, so
        a lost connection here only means those events are sent again (same Idempotency-Key).
        """
        now = time.time()
        by_id = {e.id: e for e in self.events}
        dead: list[OutboxEvent] = []
        s = self._session
        try:
            if accepted:
                s.execute(delete(OutboxRow).where(OutboxRow.id.in_(list(accepted))))
            for row_id, error in rejected.items():
                event = by_id[row_id]
                attempts = event.attempts + 1
                if attempts >= dead_letter_after:
                    dead.append(event)
                    s.execute(
                        insert(DeadLetterRow).values(_dead_values(event, now, attempts, error))
                    )
                    s.execute(delete(OutboxRow).where(OutboxRow.id == row_id))
                else:
                    s.execute(
                        update(OutboxRow)
                        .where(OutboxRow.id == row_id)
                        .values(
                            attempts=attempts, next_attempt_at=now + retry_in_s, last_error=error
                        )
                    )
            s.commit()
        except SQLAlchemyError as exc:
            s.rollback()
            raise StoreError(f"cannot record outbox outcome: {exc}") from exc
        return dead

    def close(self) -> None:
        """Release whatever was not finished (rollback frees the locks) and the connection."""
        # The connection may be the one that just died; the pool discards it.
        with contextlib.suppress(SQLAlchemyError):
            self._session.close()


class OutboxRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    # -- relay ------------------------------------------------------------------------------

    def claim(self, destination: str, limit: int, now: float | None = None) -> Claim:
        """The oldest pending event of up to ``limit`` assets that are due, oldest first."""
        when = time.time() if now is None else now
        # The head (oldest row) of every asset, from an index-only GROUP BY: cheap even with a
        # backlog of millions, unlike a per-row "no earlier row" test.
        heads = (
            select(func.min(OutboxRow.id).label("head"))
            .where(OutboxRow.destination == destination)
            .group_by(OutboxRow.asset)
            .subquery()
        )
        # Plain columns, not ORM objects: building thousands of entities costs more than the query.
        stmt = (
            select(*_EVENT_COLUMNS)
            .join(heads, OutboxRow.id == heads.c.head)
            .where(OutboxRow.next_attempt_at <= when)
            .order_by(OutboxRow.id)
            .limit(limit)
        )
        locked = self._store.dialect == "postgresql"
        if locked:
            stmt = stmt.with_for_update(skip_locked=True, of=OutboxRow)
        session = self._store.sessions()
        try:
            events = [OutboxEvent(*row) for row in session.execute(stmt)]
            if not locked:
                session.rollback()
        except SQLAlchemyError as exc:
            session.close()
            raise StoreError(f"cannot claim outbox events of {destination!r}: {exc}") from exc
        return Claim(session, events, locked)

    def stats(self, destination: str) -> OutboxStats:
        try:
            with self._store.sessions() as s:
                backlog, oldest = s.execute(
                    select(func.count(), func.min(OutboxRow.created_at)).where(
                        OutboxRow.destination == destination
                    )
                ).one()
                dead = s.execute(
                    select(func.count())
                    .select_from(DeadLetterRow)
                    .where(DeadLetterRow.destination == destination)
                ).scalar_one()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read outbox stats of {destination!r}: {exc}") from exc
        return OutboxStats(int(backlog), None if oldest is None else float(oldest), int(dead))

    def pending_count(self, destination: str) -> int:
        try:
            with self._store.sessions() as s:
                return _pending_count(s, destination)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot count outbox of {destination!r}: {exc}") from exc

    # -- operators (CLI, API) -------------------------------------------------------------

    def pending(self, destination: str | None = None, limit: int = 100) -> list[OutboxEvent]:
        stmt = select(OutboxRow).order_by(OutboxRow.id).limit(limit)
        if destination is not None:
            stmt = stmt.where(OutboxRow.destination == destination)
        return self._read(stmt, _event)

    def dead_letters(self, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        stmt = select(DeadLetterRow).order_by(DeadLetterRow.id).limit(limit)
        if destination is not None:
            stmt = stmt.where(DeadLetterRow.destination == destination)
        return self._read(
            stmt,
            lambda r: DeadLetter(
                r.id,
                r.destination,
                r.asset,
                r.event_id,
                r.body,
                r.created_at,
                r.failed_at,
                r.attempts,
                r.last_error,
            ),
        )

    def replay(self, destination: str | None = None, event_ids: Sequence[str] = ()) -> int:
        """Put dead letters back at the end of their asset's queue, attempts reset."""
        cond = self._dead_filter(destination, event_ids)
        try:
            with self._store.sessions.begin() as s:
                rows = list(
                    s.scalars(select(DeadLetterRow).where(*cond).order_by(DeadLetterRow.id))
                )
                if not rows:
                    return 0
                now = time.time()
                # A replayed event may already be back in the outbox (replayed twice): keep one.
                queued = {
                    (dest, key)
                    for dest, key in s.execute(
                        select(OutboxRow.destination, OutboxRow.event_id).where(
                            OutboxRow.event_id.in_([r.event_id for r in rows])
                        )
                    )
                }
                fresh = [r for r in rows if (r.destination, r.event_id) not in queued]
                if fresh:
                    s.execute(
                        insert(OutboxRow),
                        [
                            {
                                "destination": r.destination,
                                "asset": r.asset,
                                "event_id": r.event_id,
                                "body": r.body,
                                "created_at": now,
                                "attempts": 0,
                                "next_attempt_at": 0.0,
                                "last_error": "",
                            }
                            for r in fresh
                        ],
                    )
                s.execute(delete(DeadLetterRow).where(DeadLetterRow.id.in_([r.id for r in rows])))
                return len(rows)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot replay dead letters: {exc}") from exc

    def purge(self, destination: str | None = None, event_ids: Sequence[str] = ()) -> int:
        """Delete dead letters for good."""
        cond = self._dead_filter(destination, event_ids)
        try:
            with self._store.sessions.begin() as s:
                result = s.execute(delete(DeadLetterRow).where(*cond))
                return int(getattr(result, "rowcount", 0) or 0)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot purge dead letters: {exc}") from exc

    @staticmethod
    def _dead_filter(destination: str | None, event_ids: Sequence[str]) -> list[Any]:
        cond: list[Any] = []
        if destination is not None:
            cond.append(DeadLetterRow.destination == destination)
        if event_ids:
            cond.append(DeadLetterRow.event_id.in_(list(event_ids)))
        return cond

    def _read(self, stmt: Any, convert: Any) -> list[Any]:
        try:
            with self._store.sessions() as s:
                return [convert(row) for row in s.scalars(stmt)]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the outbox: {exc}") from exc
