"""Stored decisions for the lineage export: predictions with what the store knows of their
delivery and of the operators' actions on them, read one bounded page at a time
(``bridge.lineage`` turns them into documents and OpenLineage events).

A page costs the same few queries whatever its size: the predictions (one by id, or the next
``limit`` of a time range in (timestamp, row id) order, on the index revision 0008 added), then
their outbox rows, dead letters, labels and ledger entries, each one ``IN`` over the page's ids.
Nothing reads more than a page: a long range is walked with ``pages``, page after page.

What the store knows of delivery, and what it does not:

- an event of a durable output (MES REST, webhook, MQTT UNS or Sparkplug) is an outbox row,
  keyed by the prediction id (its Idempotency-Key), until its destination accepts it: a row
  is a fact, with the attempts and the last answer so far;
- a row rejected too often becomes a dead letter: a fact, with the destination's last answer;
- an accepted event is deleted at once (revision 0010): neither the acceptance nor the answer
  to it is kept, so no row means accepted *or* never queued (the destination's rules did not
  select the prediction, or a full outbox refused or dropped it); the store cannot tell which;
- live outputs (the gateway's OPC UA server) leave nothing per prediction in the store.

Synchronous, like the other repositories: callers on the event loop run it in a thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bridge.errors import StoreError
from bridge.types import Prediction

from .audit import AuditEntryRow, entry_of
from .auditchain import AuditEntry
from .codec import prediction_from_row
from .db import Store, read_session
from .labels import LabelRecord, LabelRepository
from .tables import DeadLetterRow, OutboxRow, PredictionRow, PredictionSequenceRow

__all__ = [
    "MAX_PAGE",
    "DeadEvent",
    "DecisionPage",
    "DecisionRepository",
    "PageKey",
    "QueuedEvent",
    "StoredDecision",
    "prediction_subject",
]

# The largest page read at once: bounds the memory of a page and the length of its IN lists
# (SQLite binds at most 32,766 parameters per statement; PostgreSQL 65,535).
MAX_PAGE = 5000

# Position of a row in the oldest-first order: (timestamp, row id). The row id breaks ties
# between predictions of the same instant, so no row is skipped or repeated across pages.
PageKey = tuple[float, int]


def prediction_subject(prediction_id: str) -> str:
    """The audit ledger's subject of entries about one prediction (operator feedback)."""
    return f"prediction:{prediction_id}"


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """An outbox row: the event waits for its destination (not accepted yet)."""

    destination: str
    event_id: str  # the Idempotency-Key
    created_at: float
    attempts: int  # rejections (non-retryable answers) so far
    retries: int  # retryable failures so far
    last_error: str  # the last answer or failure, "" when none yet
    next_attempt_at: float
    first_failed_at: float  # 0.0: no failure yet


@dataclass(frozen=True, slots=True)
class DeadEvent:
    """A dead letter: the destination rejected the event for good (until replayed)."""

    destination: str
    event_id: str
    created_at: float
    failed_at: float
    attempts: int
    last_error: str


@dataclass(frozen=True, slots=True)
class StoredDecision:
    prediction: Prediction
    mapping_revision: str | None  # None for rows stored before lineage was recorded
    queued: tuple[QueuedEvent, ...]
    dead: tuple[DeadEvent, ...]
    labels: tuple[LabelRecord, ...]  # operator feedback, oldest first
    audit: tuple[AuditEntry, ...]  # ledger entries whose subject is this prediction, by seq


@dataclass(frozen=True, slots=True)
class DecisionPage:
    items: list[StoredDecision]
    next_key: PageKey | None  # None: this was the last page


class DecisionRepository:
    """With ``timeout_s`` a page whose queries run longer is stopped (QueryTimeoutError): the
    API's reads; the CLI reads without a limit."""

    def __init__(self, store: Store, timeout_s: float | None = None) -> None:
        self._store = store
        self._timeout_s = timeout_s
        self._labels = LabelRepository(store)

    def get(self, prediction_id: str) -> StoredDecision | None:
        stmt = select(PredictionRow).where(PredictionRow.prediction_id == prediction_id)
        found = self._read(stmt, 1, f"prediction {prediction_id}")
        return found.items[0] if found.items else None

    def page(
        self, since: float | None, until: float | None, limit: int, after: PageKey | None = None
    ) -> DecisionPage:
        """At most ``limit`` decisions made in [since, until] (inclusive; None: open), oldest
        first, from after ``after`` (the previous page's ``next_key``)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"a page holds 1 to {MAX_PAGE} decisions, not {limit}")
        P = PredictionRow
        stmt = select(P)
        if since is not None:
            stmt = stmt.where(P.timestamp >= since)
        if until is not None:
            stmt = stmt.where(P.timestamp <= until)
        if after is not None:
            ts, row_id = after
            # The plain bound lets the (timestamp, id) index seek to the cursor; the OR alone
            # would scan from the start of the range to it (as in bridge.store.history).
            stmt = stmt.where(P.timestamp >= ts).where(
                or_(P.timestamp > ts, and_(P.timestamp == ts, P.id > row_id))
            )
        # One row more than asked tells whether another page exists.
        stmt = stmt.order_by(P.timestamp, P.id).limit(limit + 1)
        return self._read(stmt, limit, "decisions")

    def pages(
        self, since: float | None, until: float | None, page_size: int
    ) -> Iterator[DecisionPage]:
        """Every decision of [since, until], ``page_size`` at a time: each page is read only
        when the previous one was consumed, so a long range never sits in memory whole."""
        after: PageKey | None = None
        while True:
            page = self.page(since, until, page_size, after)
            yield page
            if page.next_key is None:
                return
            after = page.next_key

    def gateways(self) -> list[str]:
        """The gateways whose predictions the store holds (their sequence high-water marks),
        sorted; empty when none recorded one (a store written without a gateway id)."""
        stmt = select(PredictionSequenceRow.gateway_id).distinct()
        try:
            with read_session(self._store, self._timeout_s) as session:
                return sorted(str(g) for g in session.scalars(stmt))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the gateways of the store: {exc}") from exc

    def _read(self, stmt: Select[PredictionRow], limit: int, what: str) -> DecisionPage:
        try:
            with read_session(self._store, self._timeout_s) as session:
                rows = list(session.scalars(stmt))
                more = len(rows) > limit
                rows = rows[:limit]
                ids = [r.prediction_id for r in rows]
                queued, dead, audit = self._facts(session, ids)
                next_key = (rows[-1].timestamp, rows[-1].id) if more else None
                made = [(prediction_from_row(r), r.mapping_revision) for r in rows]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read {what}: {exc}") from exc
        # Labels through their repository (its own session): the one reader of that table.
        labels: dict[str, list[LabelRecord]] = {}
        for record in self._labels.of_predictions(ids):
            labels.setdefault(record.prediction_id, []).append(record)
        items = [
            StoredDecision(
                prediction=p,
                mapping_revision=revision,
                queued=tuple(queued.get(p.id, ())),
                dead=tuple(dead.get(p.id, ())),
                labels=tuple(labels.get(p.id, ())),
                audit=tuple(audit.get(p.id, ())),
            )
            for p, revision in made
        ]
        return DecisionPage(items, next_key)

    @staticmethod
    def _facts(
        session: Session, ids: Sequence[str]
    ) -> tuple[
        dict[str, list[QueuedEvent]], dict[str, list[DeadEvent]], dict[str, list[AuditEntry]]
    ]:
        """Outbox rows, dead letters and ledger entries of the predictions ``ids``: one query
        each for the whole page."""
        queued: dict[str, list[QueuedEvent]] = {}
        dead: dict[str, list[DeadEvent]] = {}
        audit: dict[str, list[AuditEntry]] = {}
        if not ids:
            return queued, dead, audit
        Q, D, A = OutboxRow, DeadLetterRow, AuditEntryRow
        outbox = select(
            Q.destination,
            Q.event_id,
            Q.created_at,
            Q.attempts,
            Q.retries,
            Q.last_error,
            Q.next_attempt_at,
            Q.first_failed_at,
        ).where(Q.event_id.in_(ids))
        for row in session.execute(outbox.order_by(Q.destination, Q.id)):
            event = QueuedEvent(*row)
            queued.setdefault(event.event_id, []).append(event)
        letters = select(
            D.destination, D.event_id, D.created_at, D.failed_at, D.attempts, D.last_error
        ).where(D.event_id.in_(ids))
        for dead_row in session.execute(letters.order_by(D.destination, D.id)):
            letter = DeadEvent(*dead_row)
            dead.setdefault(letter.event_id, []).append(letter)
        # The ledger has no index on subject: this is one scan of it per page, not one per
        # prediction.
        subjects = {prediction_subject(i): i for i in ids}
        entries = select(A).where(A.subject.in_(list(subjects))).order_by(A.seq)
        for entry_row in session.scalars(entries):
            audit.setdefault(subjects[entry_row.subject], []).append(entry_of(entry_row))
        return queued, dead, audit
