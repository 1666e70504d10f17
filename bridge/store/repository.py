"""Synchronous repositories: callers on the event loop wrap them in ``asyncio.to_thread``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bridge.errors import StoreError
from bridge.types import Prediction

from .bulk import KeyConflict, insert_fresh, insert_new
from .codec import PREDICTION_COLUMNS, prediction_row
from .db import Store
from .leases import refuse_stale
from .outbox import OnCommit, OutboxHook
from .sequences import record_sequences
from .tables import PredictionRow

__all__ = ["PredictionRepository"]


class PredictionRepository:
    def __init__(
        self, store: Store, mapping_revision: str | None = None, gateway_id: str | None = None
    ) -> None:
        self._store = store
        # Lineage: every row names the mapping (file hash) it was made under.
        self.mapping_revision = mapping_revision
        # With a gateway id, each batch also raises its sequence high-water marks (a restart
        # goes on from them: bridge.store.sequences).
        self._gateway_id = gateway_id
        # Fleet: predictions carry fencing tokens; a stale one is refused (bridge.store.leases).
        self.fenced = False
        self.refused: list[Prediction] = []

    def add_many(self, predictions: Sequence[Prediction], outbox: Sequence[OutboxHook] = ()) -> int:
        """Insert a batch and its outbox rows in one transaction; returns how many were
        refused as stale (their asset's lease changed hands: ``refused`` holds the last ones).

        Predictions already stored (same id) are skipped, and so are their outbox rows: a batch
        retried after a commit whose reply was lost queues nothing twice.
        """
        if not predictions:
            return 0
        revision = self.mapping_revision
        rows = [prediction_row(p, revision) for p in predictions]
        try:
            on_commit, refused = self._write(predictions, rows, outbox, replay=False)
        except KeyConflict:
            # Some are stored already (a replayed batch): that transaction was rolled back,
            # this one skips them and stages events only for the others.
            on_commit, refused = self._write(predictions, rows, outbox, replay=True)
        # Only once committed: a failed batch is retried and would count twice.
        for done in on_commit:
            done()
        self.refused = refused
        return len(refused)

    def _write(
        self,
        predictions: Sequence[Prediction],
        rows: list[tuple[Any, ...]],
        outbox: Sequence[OutboxHook],
        *,
        replay: bool,
    ) -> tuple[list[OnCommit], list[Prediction]]:
        """One transaction of the batch. Without ``replay`` every prediction must be new (the
        plain insert, the fast one; ``KeyConflict`` otherwise); with it, stored ones are
        skipped (ON CONFLICT DO NOTHING, returning the ids it inserted)."""
        table: Any = PredictionRow.__table__
        try:
            with self._store.sessions.begin() as session:
                refused: list[Prediction] = []
                if self.fenced and self._gateway_id is not None:
                    kept, refused = refuse_stale(session, self._gateway_id, predictions)
                    if refused:
                        gone = {p.id for p in refused}
                        rows = [r for r in rows if r[0] not in gone]
                        predictions = kept
                        if not predictions:
                            return [], refused
                if self._gateway_id is not None:
                    record_sequences(session, self._store.dialect, self._gateway_id, predictions)
                # Bulk paths (bridge.store.bulk): COPY on PostgreSQL, executemany or multi-row
                # VALUES on SQLite.
                fresh = predictions
                if not replay:
                    insert_fresh(session, table, PREDICTION_COLUMNS, rows, "prediction_id")
                else:
                    new_ids = insert_new(session, table, PREDICTION_COLUMNS, rows, "prediction_id")
                    if len(new_ids) != len(predictions):
                        stored = set(new_ids)
                        fresh = [p for p in predictions if p.id in stored]
                # Event rules run here, so an event exists iff its prediction committed.
                return [hook.stage(session, fresh) for hook in outbox], refused
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot store {len(rows)} predictions: {exc}") from exc
