"""Synchronous repositories: callers on the event loop wrap them in ``asyncio.to_thread``."""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from bridge.errors import StoreError
from bridge.types import Prediction

from .codec import prediction_from_row, prediction_to_values
from .db import Store
from .models import ModelRow, PredictionRow
from .outbox import EnqueueResult, OutboxFeed, enqueue
from .sequences import record_sequences

__all__ = ["ModelRecord", "ModelRepository", "PredictionRepository"]


@dataclass(frozen=True, slots=True)
class ModelRecord:
    name: str
    version: str
    sha256: str
    path: str
    loaded_at: float


def _insert_ignoring(store: Store, table: Any, keys: list[str]) -> Any:
    """INSERT that skips rows whose ``keys`` already exist (SQLite and PostgreSQL)."""
    if store.dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
    if store.dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
    return insert(table)


class PredictionRepository:
    def __init__(
        self, store: Store, mapping_revision: str | None = None, gateway_id: str | None = None
    ) -> None:
        self._store = store
        # Lineage: every row names the mapping (file hash) it was made under.
        self._revision = mapping_revision
        # With a gateway id, each batch also raises its sequence high-water marks (a restart
        # goes on from them: bridge.store.sequences).
        self._gateway_id = gateway_id

    def add_many(
        self, predictions: Sequence[Prediction], outbox: Sequence[OutboxFeed] = ()
    ) -> None:
        """Insert a batch and its outbox rows in one transaction.

        Predictions already stored (same id) are skipped, and so are their outbox rows: a batch
        retried after a commit whose reply was lost queues nothing twice.
        """
        if not predictions:
            return
        stmt = _insert_ignoring(self._store, PredictionRow.__table__, ["prediction_id"])
        rows = [prediction_to_values(p) for p in predictions]
        for row in rows:
            row["mapping_revision"] = self._revision
        results: list[tuple[OutboxFeed, EnqueueResult]] = []
        try:
            with self._store.sessions.begin() as session:
                if self._gateway_id is not None:
                    record_sequences(session, self._store.dialect, self._gateway_id, predictions)
                if not outbox:
                    session.execute(stmt, rows)
                else:
                    returning = stmt.returning(PredictionRow.prediction_id)
                    new_ids = set(session.execute(returning, rows).scalars())
                    fresh = [p for p in predictions if p.id in new_ids]
                    for feed in outbox:
                        # Event rules run here, so an event exists iff its prediction committed.
                        events = feed.events(fresh)
                        results.append(
                            (
                                feed,
                                enqueue(
                                    session, feed.destination, events, feed.budget, feed.pending
                                ),
                            )
                        )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot store {len(rows)} predictions: {exc}") from exc
        # Counted only once committed: a failed batch is retried and would count twice.
        for feed, result in results:
            feed.count(result)

    def query(
        self,
        asset: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[Prediction]:
        """Newest first; ``since`` and ``until`` (epoch seconds) are inclusive."""
        stmt = select(PredictionRow)
        if asset is not None:
            stmt = stmt.where(PredictionRow.asset == asset)
        if since is not None:
            stmt = stmt.where(PredictionRow.timestamp >= since)
        if until is not None:
            stmt = stmt.where(PredictionRow.timestamp <= until)
        stmt = stmt.order_by(PredictionRow.timestamp.desc(), PredictionRow.id.desc()).limit(limit)
        try:
            with self._store.sessions() as session:
                return [prediction_from_row(row) for row in session.scalars(stmt)]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot query predictions: {exc}") from exc

    def latest(self, asset: str | None = None) -> list[Prediction]:
        """The newest prediction of every (asset, model), ordered by asset then model."""
        rank = (
            func.row_number()
            .over(
                partition_by=(PredictionRow.asset, PredictionRow.model),
                order_by=(PredictionRow.timestamp.desc(), PredictionRow.id.desc()),
            )
            .label("rank")
        )
        inner = select(PredictionRow.id, rank)
        if asset is not None:
            inner = inner.where(PredictionRow.asset == asset)
        ranked = inner.subquery()
        stmt = (
            select(PredictionRow)
            .join(ranked, ranked.c.id == PredictionRow.id)
            .where(ranked.c.rank == 1)
            .order_by(PredictionRow.asset, PredictionRow.model)
        )
        try:
            with self._store.sessions() as session:
                return [prediction_from_row(row) for row in session.scalars(stmt)]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot query latest predictions: {exc}") from exc


class ModelRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    def record_loaded(self, name: str, version: str, sha256: str, path: str) -> None:
        """Remember that a model was loaded now; loading it again only moves ``loaded_at``.

        One upsert statement: gateways sharing a database load the same model at the same
        moment, and a select-then-insert would make one of them fail on the unique key.
        """
        now = time.time()
        dialect = postgresql if self._store.dialect == "postgresql" else sqlite
        stmt = dialect.insert(ModelRow).values(
            name=name, version=version, sha256=sha256, path=path, loaded_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["name", "version", "sha256"],
            set_={"path": stmt.excluded.path, "loaded_at": stmt.excluded.loaded_at},
        )
        try:
            with self._store.sessions.begin() as session:
                session.execute(stmt)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record model {name} {version}: {exc}") from exc

    def list(self) -> builtins.list[ModelRecord]:
        """Every model ever loaded, most recently loaded first."""
        stmt = select(ModelRow).order_by(ModelRow.loaded_at.desc(), ModelRow.id.desc())
        try:
            with self._store.sessions() as session:
                return [
                    ModelRecord(r.name, r.version, r.sha256, r.path, r.loaded_at)
                    for r in session.scalars(stmt)
                ]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot list models: {exc}") from exc
