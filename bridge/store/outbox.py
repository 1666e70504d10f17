"""The transactional outbox: rows written with their prediction, claimed and removed by a relay.

Synchronous, like the other repositories: callers on the event loop use ``asyncio.to_thread``.
Order is per (destination, asset): a relay only ever takes the *oldest* rows of an asset, so an
asset has at most one relay sending it per destination while different assets go in parallel.

Claims are leases, not held transactions: a claim marks its rows ``claimed_by`` (the relay) and
``lease_until`` (now + the lease) and commits at once; the events are sent outside any
transaction; accepted rows are deleted in short transactions as the replies arrive; the relay
renews its leases while a long round runs. A lease that expired (its gateway was killed or lost
the database) makes the rows claimable by any relay, and the old holder can no longer finish
them. Claims of one destination take turns (a PostgreSQL advisory lock for a few milliseconds),
so several gateways can share one database without sending an event twice (bar a lease taken
over mid-send: the same Idempotency-Key lets the destination drop it) or out of order.

Which events a prediction makes, and which lose when a destination's outbox is full, is
decided by ``bridge.outbox`` (the feed): it hands the store writer an ``OutboxHook`` that this
layer calls inside the prediction's transaction, and uses the plain row operations below
(``enqueue``, ``pending_count``, ``drop_oldest``). The store imports nothing of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Connection,
    Select,
    String,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bridge.errors import StoreError
from bridge.types import Prediction

from .audit import append_entries, default_writer
from .auditchain import NewAuditEntry
from .bulk import insert_rows
from .codec import prediction_from_row
from .db import Store
from .tables import DeadLetterRow, OutboxRow, PredictionRow

__all__ = [
    "Claim",
    "DeadLetter",
    "OnCommit",
    "OutboxEvent",
    "OutboxHook",
    "OutboxRepository",
    "OutboxStats",
    "PartOutcome",
    "RetryUpdate",
    "drop_oldest",
    "enqueue",
    "new_holder",
    "pending_count",
]

# Run by the store once the transaction it was staged in committed (never after a rollback).
OnCommit = Callable[[], None]


class OutboxHook(Protocol):
    """One destination's outbox rows for a batch of predictions (``bridge.outbox.feed``).

    ``stage`` runs inside the transaction that inserts ``predictions`` (only those new to the
    store: a retried batch passes none twice), so an event exists exactly when its prediction
    committed; it writes its rows through ``session`` and returns what to do once that
    transaction committed (keep rule state, count). A transaction that fails drops the staged
    work with it: the batch is retried and staged again from the same state.
    """

    def stage(self, session: Session, predictions: Sequence[Prediction]) -> OnCommit: ...


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
    # The relay leasing it (empty: none) and until when (revision 0010).
    claimed_by: str = ""
    lease_until: float = 0.0


class RetryUpdate(Protocol):
    """What the relay decided for an event that failed retryably (``bridge.outbox.retries``)."""

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
    OutboxRow.claimed_by,
    OutboxRow.lease_until,
)


_OUTBOX: Any = OutboxRow.__table__
# The same columns as Core columns, for the relay's hot path (claims, records): executed on a
# plain Connection, a statement skips the ORM's per-execution work (session, compile plugin,
# bulk-DML bookkeeping), a few hundred microseconds of Python each, paid on every claim and
# every record commit.
_EVENT_CORE = tuple(_OUTBOX.c[c.key] for c in _EVENT_COLUMNS)


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
        row.claimed_by,
        row.lease_until,
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


def pending_count(session: Session, destination: str) -> int:
    """Rows waiting for ``destination`` (inside the caller's transaction)."""
    stmt = select(func.count()).select_from(OutboxRow).where(OutboxRow.destination == destination)
    return int(session.execute(stmt).scalar_one())


_ENQUEUE_COLUMNS = (
    "destination",
    "asset",
    "event_id",
    "body",
    "created_at",
    "attempts",
    "next_attempt_at",
    "last_error",
    "retries",
    "first_failed_at",
    "claimed_by",
    "lease_until",
    "fence",
)


def enqueue(
    session: Session,
    destination: str,
    rows: Sequence[tuple[str, str, str]],
    fences: Mapping[str, int] | None = None,
) -> int:
    """Add ``(asset, event_id, body)`` rows, oldest first, inside the caller's transaction.
    ``fences`` gives the fencing token of an event's prediction (event id -> lease generation)
    in a fleet.

    No limit here: the caller (``bridge.outbox.feed``) decided which rows fit its budget.
    Returns how many rows were added.
    """
    fence = (fences or {}).get
    if not rows:
        return 0
    now = time.time()
    # Bulk path (bridge.store.bulk): COPY on PostgreSQL, executemany of tuples on SQLite; every
    # column given, as the ORM insert gave them (no server default decides a value).
    insert_rows(
        session,
        _OUTBOX,
        _ENQUEUE_COLUMNS,
        [
            (destination, asset, event_id, body, now, 0, 0.0, "", 0, 0.0, "", 0.0, fence(event_id))
            for asset, event_id, body in rows
        ],
    )
    return len(rows)


def drop_oldest(session: Session, destination: str, count: int) -> int:
    """Delete up to ``count`` of the oldest rows of ``destination`` that no relay is sending.

    Returns how many were deleted (fewer than ``count`` when relays hold the oldest ones).
    """
    if count <= 0:
        return 0
    oldest: Select[int] = (
        select(OutboxRow.id)
        .where(OutboxRow.destination == destination)
        .order_by(OutboxRow.id)
        .limit(count)
    )
    # An event being delivered right now is leased by a relay: leave it to that relay.
    oldest = oldest.where(or_(OutboxRow.claimed_by == "", OutboxRow.lease_until <= time.time()))
    if _dialect(session) == "postgresql":
        # A claim marking rows right now holds them for a few milliseconds: skip, never wait.
        oldest = oldest.with_for_update(skip_locked=True)
    ids = list(session.execute(oldest).scalars())
    if ids:
        session.execute(delete(OutboxRow).where(OutboxRow.id.in_(ids)))
    return len(ids)


def _dialect(db: Session | Connection) -> str:
    if isinstance(db, Connection):
        return db.dialect.name
    return db.get_bind().dialect.name


def _among(db: Session | Connection, column: Any, values: list[Any]) -> Any:
    """``column IN values`` for thousands of values, as one bound parameter.

    A plain ``IN`` renders one placeholder per value, and with a round's 10,000+ ids that
    rendering (SQLAlchemy, then psycopg splitting the query) costs more than the statement.
    """
    dialect = _dialect(db)
    if dialect == "postgresql":
        item = BigInteger() if isinstance(values[0], int) else String()
        return column == any_(bindparam(None, values, type_=ARRAY(item)))
    if dialect == "sqlite":
        table = func.json_each(bindparam(None, json.dumps(values), type_=String()))
        return column.in_(select(literal_column("value")).select_from(table))
    return column.in_(values)


def _free(when: float, holder: str) -> Any:
    """Rows a claim may take: not leased, leased by this holder, or with an expired lease."""
    c = _OUTBOX.c
    return or_(c.claimed_by == "", c.claimed_by == holder, c.lease_until <= when)


def _held_by_another(e: OutboxEvent, when: float, holder: str) -> bool:
    return e.claimed_by not in ("", holder) and e.lease_until > when


def _lock_claims(s: Connection, destination: str) -> None:
    """PostgreSQL: one claim of a destination at a time, across gateways, for the claim's few
    milliseconds (a transaction-scoped advisory lock). Claims then see each other's leases
    committed, so two relays never lease the same row and never split an asset's queue."""
    if _dialect(s) == "postgresql":
        key = func.hashtext(literal("bridge.outbox:" + destination, String()))
        s.execute(select(func.pg_advisory_xact_lock(key)))


def _lock_mine(s: Connection, ids: list[int], holder: str) -> set[int]:
    """The rows of ``ids`` still leased to ``holder``; on PostgreSQL locked (in id order) so
    that no claim takes them over between this look and the writes that follow."""
    c = _OUTBOX.c
    stmt = select(c.id).where(_among(s, c.id, ids), c.claimed_by == holder)
    if _dialect(s) == "postgresql":
        stmt = stmt.order_by(c.id).with_for_update()
    return set(s.execute(stmt).scalars())


_DEAD_LETTERS: Any = DeadLetterRow.__table__
# A failed event's new state, one statement for all the events of a settle (an executemany:
# one pipelined batch on PostgreSQL), not one UPDATE each: a flaky MES fails hundreds a second.
_REJECTED = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("b_id"))
    .values(
        claimed_by="",
        lease_until=0.0,
        attempts=bindparam("b_attempts"),
        next_attempt_at=bindparam("b_next"),
        last_error=bindparam("b_error"),
    )
)
_RETRIED = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("b_id"))
    .values(
        claimed_by="",
        lease_until=0.0,
        retries=bindparam("b_retries"),
        first_failed_at=bindparam("b_first"),
        next_attempt_at=bindparam("b_next"),
        last_error=bindparam("b_error"),
    )
)


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


@dataclass(frozen=True, slots=True)
class PartOutcome:
    """What came of some of a claim's events (``Claim.finish`` with ``part``), for
    ``OutboxRepository.finish_parts``."""

    claim: Claim
    events: Sequence[OutboxEvent]
    accepted: Sequence[int]
    rejected: dict[int, str]
    dead_letter_after: int
    retry_in_s: float
    retried: Mapping[int, RetryUpdate] | None


class Claim:
    """Head events leased by a relay; ``finish`` records the outcome, ``close`` releases the rest.

    No transaction stays open while the events are sent: the claim committed its leases
    (``claimed_by``, ``lease_until``) at once, and ``finish`` is a short transaction of its own.
    A lease that expired and was taken by another relay is no longer this claim's: ``finish``
    touches only the rows still leased to its holder (the other relay sends them again, with
    the same Idempotency-Key).

    ``finish(..., part=...)`` settles some events early (an asset whose send failed, so that
    its retry is scheduled and its lease released at once, not when the whole claim is done);
    later calls and ``close`` leave those rows alone: by then a newer claim of the same holder
    may have leased them again.
    """

    def __init__(self, store: Store, holder: str, events: list[OutboxEvent]) -> None:
        self.events = events
        self._store = store
        self._holder = holder
        self._open = bool(events)
        self._settled: set[int] = set()  # ids settled by a ``finish(part=...)``

    def finish(
        self,
        accepted: Sequence[int],
        rejected: dict[int, str],
        dead_letter_after: int,
        retry_in_s: float,
        retried: Mapping[int, RetryUpdate] | None = None,
        part: Sequence[OutboxEvent] | None = None,
    ) -> list[OutboxEvent]:
        """Delete accepted rows; count rejections and retryable failures; move rows rejected
        too often, or whose retries are exhausted (``retried[id].dead``), to dead letters;
        release the leases of the rest (of ``part`` only, when given: the claim stays open).

        Returns the events that became dead letters. One transaction: all of it or nothing, so
        a lost connection here only means those events are sent again (same Idempotency-Key).
        """
        events = [e for e in (self.events if part is None else part) if e.id not in self._settled]
        if not events:
            if part is None:
                self._open = False
            return []
        try:
            with self._store.engine.begin() as s:
                dead = self._finish_in(
                    s, events, accepted, rejected, dead_letter_after, retry_in_s, retried
                )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record outbox outcome: {exc}") from exc
        self._finished(events, part is not None)
        return dead

    def _finished(self, events: list[OutboxEvent], part: bool) -> None:
        if part:
            self._settled.update(e.id for e in events)
        else:
            self._open = False

    def _finish_in(
        self,
        s: Connection,
        events: list[OutboxEvent],
        accepted: Sequence[int],
        rejected: dict[int, str],
        dead_letter_after: int,
        retry_in_s: float,
        retried: Mapping[int, RetryUpdate] | None,
        mine: set[int] | None = None,
    ) -> list[OutboxEvent]:
        """``finish`` inside the transaction ``s``; ``mine``: the rows of ``events`` still
        leased to this holder, when the caller already locked them."""
        now = time.time()
        dead: list[OutboxEvent] = []
        if mine is None:
            mine = _lock_mine(s, [e.id for e in events], self._holder)
        done = set(accepted)
        gone = [i for i in accepted if i in mine]
        released: list[int] = []  # not sent (behind a failure): only their leases go
        counted: list[dict[str, Any]] = []  # rejected, to be sent again after a pause
        retrying: list[dict[str, Any]] = []  # failed retryably, sent again after a backoff
        buried: list[dict[str, Any]] = []  # their dead letters
        for e in events:
            if e.id not in mine or e.id in done:
                continue
            error = rejected.get(e.id)
            decision = (retried or {}).get(e.id)
            if error is not None:
                attempts = e.attempts + 1
                if attempts >= dead_letter_after:
                    dead.append(e)
                    buried.append(_dead_values(e, now, attempts, error))
                    continue
                counted.append(
                    {"b_id": e.id, "b_attempts": attempts, "b_next": now + retry_in_s}
                    | {"b_error": error}
                )
            elif decision is not None:
                if decision.dead:
                    dead.append(e)
                    buried.append(_dead_values(e, now, decision.retries, decision.reason))
                    continue
                retrying.append(
                    {"b_id": e.id, "b_retries": decision.retries, "b_error": decision.reason}
                    | {"b_first": decision.first_failed_at, "b_next": decision.next_attempt_at}
                )
            else:
                released.append(e.id)
        c = _OUTBOX.c
        if gone or dead:
            s.execute(delete(_OUTBOX).where(_among(s, c.id, gone + [e.id for e in dead])))
        if buried:
            s.execute(insert(_DEAD_LETTERS), buried)
        if counted:
            s.execute(_REJECTED, counted)
        if retrying:
            s.execute(_RETRIED, retrying)
        if released:
            # One statement for all of them, not one each: a failed lane leaves up to
            # ``per_asset`` events behind it.
            s.execute(
                update(_OUTBOX)
                .where(_among(s, c.id, released))
                .values(claimed_by="", lease_until=0.0)
            )
        return dead

    def all_recorded(self) -> None:
        """Every event was accepted and its deletion committed (``record_accepted``): nothing
        is left to finish or release, so no transaction is spent on it."""
        self._open = False

    def close(self) -> None:
        """Release the leases of a claim that did not finish (best effort: they expire anyway)."""
        if not self._open:
            return
        self._open = False
        ids = [e.id for e in self.events if e.id not in self._settled]
        if not ids:
            return
        c = _OUTBOX.c
        with contextlib.suppress(SQLAlchemyError), self._store.engine.begin() as s:
            s.execute(
                update(_OUTBOX)
                .where(_among(s, c.id, ids), c.claimed_by == self._holder)
                .values(claimed_by="", lease_until=0.0)
            )


def new_holder() -> str:
    """A relay's name in ``claimed_by``: the host, the process and a random part (restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:200]


# Ids named in a ledger entry of a replay or purge: the count says how many there were in all.
_AUDIT_IDS = 100


def _audit_dead_letters(
    session: Session,
    gateway: str,
    action: str,
    rows: Sequence[tuple[int, str, str]],
    actor: str,
    channel: str,
    requeued: set[int] | None = None,
) -> None:
    """One ``deadletter.*`` ledger entry per destination among ``rows`` ((id, destination,
    event id) of the dead letters acted on), in the caller's transaction. ``requeued``: of a
    replay, the ids put back in the outbox (the others were queued already)."""
    by_destination: dict[str, list[tuple[int, str]]] = {}
    for row_id, destination, event_id in sorted(rows):
        by_destination.setdefault(destination, []).append((row_id, event_id))
    made: list[NewAuditEntry] = []
    for destination, acted in sorted(by_destination.items()):
        # Bounded: a purge of 100,000 dead letters is one entry, not a megabyte of ids.
        after: dict[str, Any] = {
            "count": len(acted),
            "ids": [i for i, _ in acted[:_AUDIT_IDS]],
            "event_ids": [e for _, e in acted[:_AUDIT_IDS]],
        }
        if requeued is not None:
            after["requeued"] = sum(1 for i, _ in acted if i in requeued)
        made.append(NewAuditEntry(actor, channel, action, f"outbox:{destination}", None, after))
    append_entries(session, gateway, made)


class OutboxRepository:
    """``holder`` names this gateway in the leases it takes: the runtime gives its gateway id, so
    a restarted gateway takes back at once the leases its previous run left (gateways sharing a
    database have distinct ids). Without one, a name unique to this repository is made up.

    ``gateway`` names the writer of the audit ledger entries of replays and purges (None:
    ``cli@<host>``, a command's)."""

    def __init__(self, store: Store, holder: str | None = None, gateway: str | None = None) -> None:
        self._store = store
        self.holder = holder or new_holder()
        self.gateway = gateway or default_writer()

    # -- relay ------------------------------------------------------------------------------

    def record_accepted(self, destination: str, ids: Sequence[int]) -> None:
        """Delete rows their destination accepted, in a short transaction of their own, at once.

        Only rows still leased to this holder: a row whose lease another relay took over is
        that relay's to send (again) and delete.
        """
        if not ids:
            return
        c = _OUTBOX.c
        stmt = delete(_OUTBOX).where(c.destination == destination, c.claimed_by == self.holder)
        try:
            # A Core connection, no Session: this commit runs for every few events sent.
            with self._store.engine.connect() as conn:
                if conn.dialect.name == "postgresql":
                    # One statement is atomic on its own: autocommit spares the BEGIN and
                    # COMMIT round trips around it (the DELETE is durable when it returns).
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.execute(stmt.where(_among(conn, c.id, list(ids))))
                conn.commit()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record accepted outbox events: {exc}") from exc

    def finish_parts(self, parts: Sequence[PartOutcome]) -> list[list[OutboxEvent]]:
        """``Claim.finish(..., part=...)`` of several claims' parts in one transaction (lanes of
        a relay that failed at about the same time): the dead letters of each part, in order.
        All of it or nothing, like ``finish``."""
        todo = [(p, [e for e in p.events if e.id not in p.claim._settled]) for p in parts]
        dead: list[list[OutboxEvent]] = []
        try:
            with self._store.engine.begin() as s:
                ids = [e.id for _, events in todo for e in events]
                # Every part's rows locked at once, in id order (PostgreSQL): part by part,
                # the locks of two transactions could cross.
                mine = _lock_mine(s, ids, self.holder) if ids else set()
                for p, events in todo:
                    dead.append(
                        p.claim._finish_in(
                            s,
                            events,
                            p.accepted,
                            p.rejected,
                            p.dead_letter_after,
                            p.retry_in_s,
                            p.retried,
                            mine,
                        )
                        if events
                        else []
                    )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record outbox outcome: {exc}") from exc
        for p, events in todo:
            p.claim._finished(events, True)
        return dead

    def renew(self, destination: str, lease_s: float) -> int:
        """Extend every lease this holder has on ``destination`` (a long round is still going).

        Returns how many rows it still holds; rows another relay took over are not touched.
        """
        try:
            with self._store.sessions.begin() as s:
                result = s.execute(
                    update(OutboxRow)
                    .where(
                        OutboxRow.destination == destination, OutboxRow.claimed_by == self.holder
                    )
                    .values(lease_until=time.time() + lease_s)
                )
                return int(getattr(result, "rowcount", 0) or 0)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot renew outbox leases of {destination!r}: {exc}") from exc

    def claim(
        self,
        destination: str,
        limit: int,
        now: float | None = None,
        depth: int = 1,
        lease_s: float = 30.0,
        skip: Collection[str] = (),
    ) -> Claim:
        """Lease the oldest pending events of up to ``limit`` due assets, at most ``depth`` each.

        Each asset's events are a prefix of its queue (oldest first, starting at its head),
        so the relay can send them one after the other and keep the order. An asset whose
        head (or an earlier row) another relay holds an unexpired lease on is left out; rows
        whose lease expired (their relay died or lost the store) are free again. The leases
        are committed before this returns: nothing stays open while the events are sent.

        ``skip``: assets this holder is still sending (an earlier claim of its own, in flight
        or waiting for its outcome to be recorded): none of their rows is taken, so their
        later events never overtake them.
        """
        when = time.time() if now is None else now
        busy = list(skip)
        try:
            # A Core connection, no Session: a relay claims tens of times a second.
            with self._store.engine.begin() as s:
                _lock_claims(s, destination)
                events = self._scan(s, destination, limit, depth, when, self.holder, busy)
                if events is None:
                    events = self._heads(s, destination, limit, when, self.holder, busy)
                if events:
                    s.execute(
                        update(_OUTBOX)
                        .where(_among(s, _OUTBOX.c.id, [e.id for e in events]))
                        .values(claimed_by=self.holder, lease_until=when + lease_s)
                    )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot claim outbox events of {destination!r}: {exc}") from exc
        return Claim(self._store, self.holder, events)

    @staticmethod
    def _scan(
        s: Connection,
        destination: str,
        limit: int,
        depth: int,
        when: float,
        holder: str,
        busy: list[str],
    ) -> list[OutboxEvent] | None:
        """Fast path: the oldest rows by id (the primary key), cut into per-asset prefixes.

        Rows are inserted in delivery order, so the lowest ids of a destination hold, for every
        asset present, its oldest rows, all of them up to the window's end: an asset's rows in
        the window are the start of its queue. None when that window holds nothing to take
        (e.g. one asset waiting after a rejection, or leased by another relay, fills it): then
        the slower per-asset head query decides.
        """
        c = _OUTBOX.c
        dest_col: Any = c.destination
        if _dialect(s) == "sqlite":
            # SQLite would filter through the (destination, asset, id) index and then sort the
            # whole backlog by id; an expression keeps it on the primary key, in order.
            dest_col = c.destination + ""
        stmt = select(*_EVENT_CORE).where(dest_col == destination)
        if busy:
            # Out of the window, so rows in flight (the lowest ids) do not fill it.
            stmt = stmt.where(~_among(s, c.asset, busy))
        stmt = stmt.order_by(c.id).limit(limit * depth)
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
            if len(queue) >= depth or _held_by_another(e, when, holder):
                # Another relay holds this row: the asset's later rows must not overtake it.
                blocked.add(e.asset)
                if not queue:
                    del per_asset[e.asset]
                continue
            queue.append(e)
        if not per_asset:
            return None if len(rows) == limit * depth else []
        return sorted((e for q in per_asset.values() for e in q), key=lambda e: e.id)

    @staticmethod
    def _heads(
        s: Connection, destination: str, limit: int, when: float, holder: str, busy: list[str]
    ) -> list[OutboxEvent]:
        """The head (oldest row) of every due asset no other relay holds, from an index-only
        GROUP BY."""
        c = _OUTBOX.c
        heads = (
            select(func.min(c.id).label("head"))
            .where(c.destination == destination)
            .group_by(c.asset)
            .subquery()
        )
        # Plain columns, not ORM objects: building thousands of entities costs more than the query.
        stmt = (
            select(*_EVENT_CORE)
            .join(heads, c.id == heads.c.head)
            .where(c.next_attempt_at <= when, _free(when, holder))
            .order_by(c.id)
            .limit(limit)
        )
        if busy:
            stmt = stmt.where(~_among(s, c.asset, busy))
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
                return pending_count(s, destination)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot count outbox of {destination!r}: {exc}") from exc

    def latest_predictions(self, pairs: Sequence[tuple[str, str]]) -> list[Prediction]:
        """The last stored live prediction of each ``(asset, model)``: where event rules,
        alerts and alarms resume (a historical one, made for the past, is no state of now)."""
        out: list[Prediction] = []
        try:
            with self._store.sessions() as s:
                for asset, model in pairs:
                    # One indexed look-up per pair (asset, timestamp): cheap on a long history.
                    row = s.scalars(
                        select(PredictionRow)
                        .where(
                            PredictionRow.asset == asset,
                            PredictionRow.model == model,
                            PredictionRow.historical.is_(False),
                        )
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
        *,
        actor: str = "system",
        channel: str = "system",
    ) -> int:
        """Put dead letters back at the end of their asset's queue, attempts reset.

        A ``deadletter.replayed`` ledger entry per destination (by ``actor`` through
        ``channel``) commits with it; nothing replayed, nothing recorded.
        """
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
                _audit_dead_letters(
                    s,
                    self.gateway,
                    "deadletter.replayed",
                    [(r.id, r.destination, r.event_id) for r in rows],
                    actor,
                    channel,
                    {r.id for r in fresh},
                )
                return len(rows)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot replay dead letters: {exc}") from exc

    def purge(
        self,
        destination: str | None = None,
        event_ids: Sequence[str] = (),
        ids: Sequence[int] = (),
        *,
        actor: str = "system",
        channel: str = "system",
    ) -> int:
        """Delete dead letters for good, with a ``deadletter.purged`` ledger entry per
        destination (by ``actor`` through ``channel``) in the same transaction."""
        cond = self._dead_filter(destination, event_ids, ids)
        c = DeadLetterRow
        try:
            with self._store.sessions.begin() as s:
                # RETURNING: the rows this very statement deleted, which the entry names.
                gone = s.execute(delete(c).where(*cond).returning(c.id, c.destination, c.event_id))
                rows = [(int(i), str(d), str(e)) for i, d, e in gone]
                if rows:
                    _audit_dead_letters(s, self.gateway, "deadletter.purged", rows, actor, channel)
                return len(rows)
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
