"""One stored prediction with its lineage: inputs (value, source time, quality), the mapping
revision and the model sha256, plus the operator feedback on it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from bridge.errors import StoreError
from bridge.types import Prediction

from .codec import prediction_from_row
from .db import Store
from .labels import LabelRecord, LabelRepository
from .tables import PredictionRow

__all__ = ["LineageRepository", "PredictionLineage"]


@dataclass(frozen=True, slots=True)
class PredictionLineage:
    prediction: Prediction
    mapping_revision: str | None  # None for rows stored before lineage was recorded
    labels: tuple[LabelRecord, ...]


class LineageRepository:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._labels = LabelRepository(store)

    def get(self, prediction_id: str) -> PredictionLineage | None:
        stmt = select(PredictionRow).where(PredictionRow.prediction_id == prediction_id)
        try:
            with self._store.sessions() as session:
                row = session.scalars(stmt).one_or_none()
                if row is None:
                    return None
                prediction, revision = prediction_from_row(row), row.mapping_revision
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read prediction {prediction_id}: {exc}") from exc
        labels = tuple(self._labels.of_predictions([prediction_id]))
        return PredictionLineage(prediction, revision, labels)
