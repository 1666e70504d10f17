"""Predictions as they are added, in row order: what a fleet's HMI mirror reads of the assets
other gateways serve (``bridge.fleet.mirror``)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from bridge.errors import StoreError
from bridge.types import Prediction

from .codec import prediction_from_row
from .db import Store
from .tables import PredictionRow

__all__ = ["RecentPredictions"]


class RecentPredictions:
    def __init__(self, store: Store) -> None:
        self._store = store

    def last_id(self) -> int:
        try:
            with self._store.sessions() as s:
                return int(s.execute(select(func.max(PredictionRow.id))).scalar_one() or 0)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the last prediction row: {exc}") from exc

    def after(self, row_id: int, limit: int) -> list[tuple[int, Prediction]]:
        """Up to ``limit`` predictions stored after row ``row_id``, oldest first."""
        stmt = (
            select(PredictionRow)
            .where(PredictionRow.id > row_id)
            .order_by(PredictionRow.id)
            .limit(limit)
        )
        try:
            with self._store.sessions() as s:
                return [(r.id, prediction_from_row(r)) for r in s.scalars(stmt)]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read recent predictions: {exc}") from exc
