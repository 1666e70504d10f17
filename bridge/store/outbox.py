"""The transactional outbox: rows written with their prediction, claimed and removed by a relay.

Synchronous, like the other repositories: callers on the event loop use ``asyncio.to_thread``.
Order is per (destination, asset): a relay only ever takes the *oldest* row of an asset, so an
asset has at most one event in flight per destination while different assets go in parallel.
On PostgreSQL the claim holds ``FOR UPDATE SKIP LOCKED`` row locks until the rows are finished,
so several gateways can share one database without sending an event twice or out of order.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import (
    BigInteger,
    Double,
    Select,
    String,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bridge.errors import StoreError
from bridge.outbox.rules import DRIFT_RULES, EventSelector, Trigger
from bridge.types import Prediction

from .codec import prediction_from_row
from .db import Store
from .models import DeadLetterRow, OutboxAcceptedRow, OutboxRow, PredictionRow

__all__ = [
    "Budget",
    "Claim",
    "DeadLetter",
    "EnqueueResult",
    "OutboxEvent",
    "OutboxFeed",
    "OutboxRepository",
    "OutboxStats",
    "RetryUpdate",
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
    destination does not want it. A destination with event rules gives a ``selector`` (which
    predictions become events, and why) and ``render`` (the body of such an event) instead.
    ``pending`` is a running estimate of the backlog that spares a COUNT per batch (the writer
    adds, the relay subtracts and refreshes it).
    """

    destination: str
    encode: Callable[[Prediction], str | None]
    budget: Budget
    selector: EventSelector | None = None
    render: Callable[[Trigger], str] | None = None
    pending: int = 0
    added: int = 0
    refused: int = 0
    dropped: int = 0

    @property
    def wants_alerts(self) -> bool:
        """Alerts raised outside the prediction flow (drift) go to ``every`` and ``alerts``."""
        return self.selector is None or any(r in DRIFT_RULES for r in self.selector.rules)

    def events(self, predictions: Sequence[Prediction]) -> list[tuple[str, str, str]]:
        """``(asset, event_id, body)`` of the events a batch makes, inside its transaction.

        The Idempotency-Key stays the prediction id: one prediction is at most one event per
        destination (the first matching rule names it).
        """
        if self.selector is None or self.render is None:
            return [(p.asset, p.id, b) for p in predictions if (b := self.encode(p)) is not None]
        render = self.render
        return [
            (t.prediction.asset, t.prediction.id, render(t))
            for t in self.selector.select(predictions)
        ]

    def count(self, result: EnqueueResult) -> None:
        """The batch committed: count it, and keep the rule state it reached."""
        if self.selector is not None:
            self.selector.commit()
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
    next_attempt_at: float = 0.0
    # Retryable failures counted against the event, and when the first of them was (0: none).
    retries: int = 0
    first_failed_at: float = 0.0


class RetryUpdate(Protocol):
    """What the relay decided for an event that failed retryably (``bridge.outbox.policy``)."""

    @property
    def retries(self) -> int: ...
    @property
    def first_failed_at(self) -> float: ...
    @property
    def next_attempt_at(self) -> float: ...
    @property
    def dead(self) -> bool: ...
    @property
    def reason(self) -> str: ...


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
    OutboxRow.next_attempt_at,
    OutboxRow.retries,
    OutboxRow.first_failed_at,
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
        row.next_attempt_at,
        row.retries,
        row.first_failed_at,
    )


def _dead(r: DeadLetterRow) -> DeadLetter:
    return DeadLetter(
        r.id,
        r.destination,
        r.asset,
        r.event_id,
        r.body,
        r.created_at,
        r.failed_at,
        r.attempts,
        r.last_error,
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
                    "retries": 0,
                    "first_failed_at": 0.0,
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


def _among(session: Session, column: Any, values: list[Any]) -> Any:
    """``column IN values`` for thousands of values, as one bound parameter.

    A plain ``IN`` renders one placeholder per value, and with a round's 10,000+ ids that
    rendering (SQLAlchemy, then psycopg splitting the query) costs more than the statement.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        item = BigInteger() if isinstance(values[0], int) else String()
        return column == any_(bindparam(None, values, type_=ARRAY(item)))
    if dialect == "sqlite":
        table = func.json_each(bindparam(None, json.dumps(values), type_=String()))
        return column.in_(select(literal_column("value")).select_from(table))
    return column.in_(values)


def _keep_queue_prefixes(
    s: Session, destination: str, per_asset: dict[str, list[OutboxEvent]]
) -> None:
    """Keep, per asset, the rows that are its queue's prefix and that this claim could lock.

    SKIP LOCKED may have skipped rows another gateway holds, at the head of an asset's queue or
    in its middle: sending the rows after them would overtake them. And between the window and
    the lock below, another gateway may take some of the chosen rows. So each asset keeps only
    the part of its chosen rows that is the start of its queue, then only up to the first row
    it could not lock.
    """
    last = max(q[-1].id for q in per_asset.values())
    queued: dict[str, list[int]] = {}
    for asset, row_id in s.execute(
        select(OutboxRow.asset, OutboxRow.id)
        .where(
            OutboxRow.destination == destination,
            _among(s, OutboxRow.asset, list(per_asset)),
            OutboxRow.id <= last,
        )
        .order_by(OutboxRow.id)
    ):
        queued.setdefault(asset, []).append(row_id)
    for asset in list(per_asset):
        queue, actual = per_asset[asset], queued.get(asset, [])
        same = 0
        while same < len(queue) and same < len(actual) and queue[same].id == actual[same]:
            same += 1
        if same == 0:
            del per_asset[asset]
        else:
            del queue[same:]
    if not per_asset:
        return
    chosen = [e.id for q in per_asset.values() for e in q]
    got = set(
        s.execute(
            select(OutboxRow.id)
            .where(_among(s, OutboxRow.id, chosen))
            .order_by(OutboxRow.id)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    for asset in list(per_asset):
        queue = per_asset[asset]
        cut = next((i for i, e in enumerate(queue) if e.id not in got), len(queue))
        if cut == 0:
            del per_asset[asset]
        else:
            del queue[cut:]


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
        retried: Mapping[int, RetryUpdate] | None = None,
        recorded: Sequence[int] = (),
    ) -> list[OutboxEvent]:
        """Delete accepted rows; count rejections and retryable failures; move rows rejected
        too often, or whose retries are exhausted (``retried[id].dead``), to dead letters.

        ``recorded``: accepted rows already recorded by ``OutboxRepository.record_accepted``
        (gone on SQLite; on PostgreSQL deleted here, with their notes).

        Returns the events that became dead letters. One transaction: all of it or nothing, so
        a lost connection here only means those events are sent again (same Idempotency-Key).
        """
        now = time.time()
        by_id = {e.id: e for e in self.events}
        dead: list[OutboxEvent] = []
        s = self._session
        try:
            ids = [*accepted, *recorded] if self._locked else list(accepted)
            if ids:
                s.execute(
                    delete(OutboxRow).where(_among(s, OutboxRow.id, ids)),
                    # No ORM objects to keep in sync: skip the RETURNING of every deleted id.
                    execution_options={"synchronize_session": False},
                )
            if self._locked and recorded:
                notes = list(recorded)
                s.execute(
                    delete(OutboxAcceptedRow).where(_among(s, OutboxAcceptedRow.row_id, notes)),
                    execution_options={"synchronize_session": False},
                )
            for row_id, error in rejected.items():
                event = by_id[row_id]
                attempts = event.attempts + 1
                if attempts >= dead_letter_after:
                    dead.append(event)
                    self._bury(event, now, attempts, error)
                else:
                    s.execute(
                        update(OutboxRow)
                        .where(OutboxRow.id == row_id)
                        .values(
                            attempts=attempts, next_attempt_at=now + retry_in_s, last_error=error
                        )
                    )
            for row_id, decision in (retried or {}).items():
                event = by_id[row_id]
                if decision.dead:
                    dead.append(event)
                    self._bury(event, now, decision.retries, decision.reason)
                else:
                    s.execute(
                        update(OutboxRow)
                        .where(OutboxRow.id == row_id)
                        .values(
                            retries=decision.retries,
                            first_failed_at=decision.first_failed_at,
                            next_attempt_at=decision.next_attempt_at,
                            last_error=decision.reason,
                        )
                    )
            s.commit()
        except SQLAlchemyError as exc:
            s.rollback()
            raise StoreError(f"cannot record outbox outcome: {exc}") from exc
        return dead

    def _bury(self, event: OutboxEvent, now: float, attempts: int, error: str) -> None:
        s = self._session
        s.execute(insert(DeadLetterRow).values(_dead_values(event, now, attempts, error)))
        s.execute(delete(OutboxRow).where(OutboxRow.id == event.id))

    def close(self) -> None:
        """Release whatever was not finished (rollback frees the locks) and the connection."""
        # The connection may be the one that just died; the pool discards it.
        with contextlib.suppress(SQLAlchemyError):
            self._session.close()


class OutboxRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    # -- relay ------------------------------------------------------------------------------

    def record_accepted(self, destination: str, ids: Sequence[int]) -> None:
        """Record rows their destination accepted, in a transaction of their own, at once.

        SQLite: the claim holds no lock, so the rows are deleted. PostgreSQL: the claim keeps
        them locked until its round ends, so a note is written instead (``outbox_accepted``);
        the claim deletes both, and a later claim deletes rows whose gateway died in between.
        """
        if not ids:
            return
        try:
            with self._store.sessions.begin() as s:
                if self._store.dialect == "postgresql":
                    # One statement over an array parameter: a round records thousands of
                    # rows, and a multi-row INSERT renders one placeholder set per row.
                    rows = select(
                        func.unnest(bindparam(None, list(ids), type_=ARRAY(BigInteger()))),
                        literal(destination, String()),
                        literal(time.time(), Double()),
                    )
                    s.execute(
                        insert(OutboxAcceptedRow).from_select(
                            ["row_id", "destination", "accepted_at"], rows
                        )
                    )
                else:
                    s.execute(
                        delete(OutboxRow).where(_among(s, OutboxRow.id, list(ids))),
                        execution_options={"synchronize_session": False},
                    )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record accepted outbox events: {exc}") from exc

    def _forget_accepted(self, destination: str) -> None:
        """Delete rows accepted by a claim that never finished (its gateway died): never resend."""
        with self._store.sessions.begin() as s:
            noted = select(OutboxAcceptedRow.row_id).where(
                OutboxAcceptedRow.destination == destination
            )
            if s.execute(noted.limit(1)).first() is None:
                return
            # Rows of a live claim are locked by it: skip them, it deletes them itself.
            orphans = list(
                s.execute(
                    select(OutboxRow.id)
                    .where(OutboxRow.id.in_(noted))
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if orphans:
                s.execute(delete(OutboxRow).where(OutboxRow.id.in_(orphans)))
            live = select(OutboxRow.id).where(OutboxRow.id == OutboxAcceptedRow.row_id)
            s.execute(
                delete(OutboxAcceptedRow).where(
                    OutboxAcceptedRow.destination == destination, ~live.exists()
                )
            )

    def claim(
        self, destination: str, limit: int, now: float | None = None, depth: int = 1
    ) -> Claim:
        """The oldest pending events of up to ``limit`` due assets, at most ``depth`` each.

        Each asset's events are a prefix of its queue (oldest first, starting at its head),
        so the relay can send them one after the other and keep the order.
        """
        when = time.time() if now is None else now
        locked = self._store.dialect == "postgresql"
        if locked:
            try:
                self._forget_accepted(destination)
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot claim outbox events of {destination!r}: {exc}") from exc
        session = self._store.sessions()
        try:
            events = self._scan(session, destination, limit, depth, when, locked)
            if events is None:
                events = self._heads(session, destination, limit, when, locked)
            if not locked:
                session.rollback()
        except SQLAlchemyError as exc:
            session.close()
            raise StoreError(f"cannot claim outbox events of {destination!r}: {exc}") from exc
        return Claim(session, events, locked)

    @staticmethod
    def _scan(
        s: Session, destination: str, limit: int, depth: int, when: float, locked: bool
    ) -> list[OutboxEvent] | None:
        """Fast path: the oldest rows by id (the primary key), cut into per-asset prefixes.

        Rows are inserted in delivery order, so the lowest ids of a destination hold, for every
        asset present, its oldest rows. None when that window holds nothing due (e.g. one asset
        waiting after a rejection fills it): then the slower per-asset head query decides.
        """
        dest_col: Any = OutboxRow.destination
        if not locked:
            # SQLite would filter through the (destination, asset, id) index and then sort the
            # whole backlog by id; an expression keeps it on the primary key, in order.
            dest_col = OutboxRow.destination + ""
        stmt = (
            select(*_EVENT_COLUMNS)
            .where(dest_col == destination)
            .order_by(OutboxRow.id)
            .limit(limit * depth)
        )
        if locked:
            # The window is read with SKIP LOCKED, to see past rows other gateways hold, inside
            # a savepoint whose rollback drops those locks again: only the rows chosen below
            # stay locked, so other gateways can take the assets this one leaves.
            stmt = stmt.with_for_update(skip_locked=True, of=OutboxRow)
            window = s.begin_nested()
            rows = [OutboxEvent(*row) for row in s.execute(stmt)]
            window.rollback()
        else:
            rows = [OutboxEvent(*row) for row in s.execute(stmt)]
        if not rows:
            return []
        per_asset: dict[str, list[OutboxEvent]] = {}
        blocked: set[str] = set()
        for e in rows:
            if e.asset in blocked:
                continue
            queue = per_asset.get(e.asset)
            if queue is None:
                if e.next_attempt_at > when or len(per_asset) >= limit:
                    blocked.add(e.asset)  # its head is not due (or no room): none of it
                    continue
                per_asset[e.asset] = queue = []
            if len(queue) < depth:
                queue.append(e)
            else:
                blocked.add(e.asset)
        if locked and per_asset:
            _keep_queue_prefixes(s, destination, per_asset)
        if not per_asset:
            return None if len(rows) == limit * depth else []
        return sorted((e for q in per_asset.values() for e in q), key=lambda e: e.id)

    @staticmethod
    def _heads(
        s: Session, destination: str, limit: int, when: float, locked: bool
    ) -> list[OutboxEvent]:
        """The head (oldest row) of every due asset, from an index-only GROUP BY."""
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
        if locked:
            stmt = stmt.with_for_update(skip_locked=True, of=OutboxRow)
        return [OutboxEvent(*row) for row in s.execute(stmt)]

    def stats(self, destination: str) -> OutboxStats:
        try:
            with self._store.sessions() as s:
                backlog = s.execute(
                    select(func.count())
                    .select_from(OutboxRow)
                    .where(OutboxRow.destination == destination)
                ).scalar_one()
                # The row with the lowest id is the oldest (ids grow with time; a replay gets a
                # new id and a new created_at): a primary-key walk, not a scan of created_at.
                oldest = s.execute(
                    select(OutboxRow.created_at)
                    .where(OutboxRow.destination == destination)
                    .order_by(OutboxRow.id)
                    .limit(1)
                ).scalar_one_or_none()
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

    def latest_predictions(self, pairs: Sequence[tuple[str, str]]) -> list[Prediction]:
        """The last stored prediction of each ``(asset, model)``: where event rules resume."""
        out: list[Prediction] = []
        try:
            with self._store.sessions() as s:
                for asset, model in pairs:
                    # One indexed look-up per pair (asset, timestamp): cheap on a long history.
                    row = s.scalars(
                        select(PredictionRow)
                        .where(PredictionRow.asset == asset, PredictionRow.model == model)
                        .order_by(PredictionRow.timestamp.desc(), PredictionRow.id.desc())
                        .limit(1)
                    ).first()
                    if row is not None:
                        out.append(prediction_from_row(row))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the last predictions: {exc}") from exc
        return out

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
        return self._read(stmt, _dead)

    def destinations(self) -> dict[str, OutboxStats]:
        """Stats of every destination that has pending events or dead letters in the store."""
        try:
            with self._store.sessions() as s:
                pending = s.execute(
                    select(
                        OutboxRow.destination, func.count(), func.min(OutboxRow.created_at)
                    ).group_by(OutboxRow.destination)
                ).all()
                dead = {
                    str(name): int(n)
                    for name, n in s.execute(
                        select(DeadLetterRow.destination, func.count()).group_by(
                            DeadLetterRow.destination
                        )
                    )
                }
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read outbox stats: {exc}") from exc
        out = {
            str(name): OutboxStats(int(n), None if oldest is None else float(oldest), 0)
            for name, n, oldest in pending
        }
        for name, n in dead.items():
            base = out.get(name, OutboxStats(0, None, 0))
            out[name] = OutboxStats(base.backlog, base.oldest_created_at, int(n))
        return out

    def dead_letter_page(
        self, destination: str | None, limit: int, after_id: int | None = None
    ) -> list[DeadLetter]:
        """Dead letters oldest first, starting after ``after_id`` (keyset pagination)."""
        stmt = select(DeadLetterRow).order_by(DeadLetterRow.id).limit(limit)
        if destination is not None:
            stmt = stmt.where(DeadLetterRow.destination == destination)
        if after_id is not None:
            stmt = stmt.where(DeadLetterRow.id > after_id)
        return self._read(stmt, _dead)

    def replay(
        self,
        destination: str | None = None,
        event_ids: Sequence[str] = (),
        ids: Sequence[int] = (),
    ) -> int:
        """Put dead letters back at the end of their asset's queue, attempts reset."""
        cond = self._dead_filter(destination, event_ids, ids)
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
                                "retries": 0,
                                "first_failed_at": 0.0,
                            }
                            for r in fresh
                        ],
                    )
                s.execute(delete(DeadLetterRow).where(DeadLetterRow.id.in_([r.id for r in rows])))
                return len(rows)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot replay dead letters: {exc}") from exc

    def purge(
        self,
        destination: str | None = None,
        event_ids: Sequence[str] = (),
        ids: Sequence[int] = (),
    ) -> int:
        """Delete dead letters for good."""
        cond = self._dead_filter(destination, event_ids, ids)
        try:
            with self._store.sessions.begin() as s:
                result = s.execute(delete(DeadLetterRow).where(*cond))
                return int(getattr(result, "rowcount", 0) or 0)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot purge dead letters: {exc}") from exc

    @staticmethod
    def _dead_filter(
        destination: str | None, event_ids: Sequence[str], ids: Sequence[int] = ()
    ) -> list[Any]:
        cond: list[Any] = []
        if ids:
            cond.append(DeadLetterRow.id.in_(list(ids)))
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
