"""Retention: old rows leave the store in small batches, so the store writer is never held up.

Each batch is one ``DELETE ... WHERE id IN (SELECT id ... ORDER BY <time> LIMIT n)`` in its own
short transaction, oldest rows first (the time column is indexed). Between two batches the
caller pauses: on SQLite (one writer at a time) that pause is the store writer's turn. A batch
of 5,000 predictions holds the write lock 100-135 ms on a 10M-row store (bench.retention, 2
shared cores), far inside the writer's 5 s busy timeout: its commits wait at most one batch. On
PostgreSQL the batches only lock the rows they delete.

What retention never deletes: outbox events not yet delivered and dead letters (their tables
are not targets at all), and the note of a delivered event whose outbox row still exists (the
relay deletes both together; without the note a crashed gateway would send it again).

Synchronous: callers on the event loop use ``asyncio.to_thread``, one batch per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError

from bridge.errors import StoreError

from .alerts import AlertRow
from .db import Store
from .labels import PredictionLabelRow
from .registry import ComparisonRow
from .tables import ActionEventRow, OutboxAcceptedRow, OutboxRow, PredictionRow

__all__ = ["HISTORY", "TARGETS", "RetentionStore", "Target"]


@dataclass(frozen=True, slots=True)
class Target:
    """One kind of row retention deletes: ``key`` names its setting (``<key>_days``), or
    ``follows`` names another target whose setting it shares."""

    key: str
    table: Any
    id_column: Any
    time_column: Any
    # Extra condition a row must meet to be deleted; called at each batch.
    where: Callable[[str], ColumnElement[bool]] | None = None
    follows: str | None = None

    @property
    def setting(self) -> str:
        return f"{self.follows or self.key}_days"


def _drift_only(drift_label: str) -> ColumnElement[bool]:
    return AlertRow.label == drift_label


def _not_drift(drift_label: str) -> ColumnElement[bool]:
    return AlertRow.label != drift_label


def _row_gone(_: str) -> ColumnElement[bool]:
    # A note whose outbox row still exists belongs to an event the relay has not yet cleared.
    return ~select(OutboxRow.id).where(OutboxRow.id == OutboxAcceptedRow.row_id).exists()


# In the order a run deletes them: history first, predictions last, so a run cut short by a
# stop (or a low disk) has removed what matters least.
TARGETS: tuple[Target, ...] = (
    Target(
        "outbox_history",
        OutboxAcceptedRow.__table__,
        OutboxAcceptedRow.row_id,
        OutboxAcceptedRow.accepted_at,
        _row_gone,
    ),
    Target("comparisons", ComparisonRow.__table__, ComparisonRow.id, ComparisonRow.timestamp),
    Target("drift", AlertRow.__table__, AlertRow.id, AlertRow.raised_at, _drift_only),
    Target("alerts", AlertRow.__table__, AlertRow.id, AlertRow.raised_at, _not_drift),
    Target(
        "labels",
        PredictionLabelRow.__table__,
        PredictionLabelRow.id,
        PredictionLabelRow.prediction_time,
    ),
    # The record of the actions' decisions is kept as long as the predictions that made them.
    Target(
        "action_events",
        ActionEventRow.__table__,
        ActionEventRow.id,
        ActionEventRow.at,
        follows="predictions",
    ),
    Target("predictions", PredictionRow.__table__, PredictionRow.id, PredictionRow.timestamp),
)
# Kept for less time while the disk is low, before any prediction is deleted.
HISTORY: frozenset[str] = frozenset({"outbox_history", "comparisons", "drift"})


class RetentionStore:
    """``drift_label``: the label of drift events in the alerts table (they have a retention
    of their own)."""

    def __init__(self, store: Store, drift_label: str) -> None:
        self._store = store
        self._drift_label = drift_label

    def delete_batch(self, target: Target, before: float, limit: int) -> int:
        """Delete up to ``limit`` of ``target``'s oldest rows older than ``before`` (epoch s);
        return how many went. Fewer than ``limit`` means none older is left."""
        oldest = select(target.id_column).where(target.time_column < before)
        if target.where is not None:
            oldest = oldest.where(target.where(self._drift_label))
        oldest = oldest.order_by(target.time_column).limit(limit)
        stmt = delete(target.table).where(target.id_column.in_(oldest.scalar_subquery()))
        try:
            with self._store.sessions.begin() as session:
                result: CursorResult[Any] = session.execute(stmt)  # type: ignore[assignment]
                return int(result.rowcount)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot delete old {target.key}: {exc}") from exc
