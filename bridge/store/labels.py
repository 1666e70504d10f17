"""Operator feedback on predictions (acknowledge / confirm / reject) with who and when, and the
metrics built from it. Synchronous: callers on the event loop use ``asyncio.to_thread``.

- mean time to acknowledge: over predictions that got any feedback, the mean of (first
  feedback time - prediction time);
- autonomous decision coverage: over Good predictions with a value made in the period, the
  share that no operator rejected (a reject is an override of the model's decision).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Double, Index, Integer, String, Text, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from bridge.errors import StoreError
from bridge.types import Feedback

from .db import Store
from .tables import Base, PredictionRow

__all__ = ["FeedbackMetrics", "LabelRecord", "LabelRepository", "PredictionLabelRow"]


class PredictionLabelRow(Base):
    __tablename__ = "prediction_labels"
    __table_args__ = (
        Index("ix_prediction_labels_prediction", "prediction_id"),
        Index("ix_prediction_labels_ptime", "prediction_time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(String(36))
    asset: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(16))
    value: Mapped[str | None] = mapped_column(Text)
    by: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str | None] = mapped_column(String(12))
    comment: Mapped[str] = mapped_column(Text)
    prediction_time: Mapped[float] = mapped_column(Double)
    at: Mapped[float] = mapped_column(Double)


@dataclass(frozen=True, slots=True)
class LabelRecord:
    id: int
    prediction_id: str
    asset: str
    model: str
    action: str
    value: str | None
    by: str
    channel: str
    key_id: str | None
    comment: str
    prediction_time: float
    at: float


@dataclass(frozen=True, slots=True)
class FeedbackMetrics:
    predictions: int  # Good predictions with a value in the period
    with_feedback: int
    acknowledged: int
    confirmed: int
    rejected: int
    mean_time_to_acknowledge_s: float | None
    autonomous_decision_coverage: float | None


def _record(r: PredictionLabelRow) -> LabelRecord:
    return LabelRecord(
        r.id,
        r.prediction_id,
        r.asset,
        r.model,
        r.action,
        r.value,
        r.by,
        r.channel,
        r.key_id,
        r.comment,
        r.prediction_time,
        r.at,
    )


class LabelRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    def add(self, feedback: Feedback, at: float | None = None) -> LabelRecord:
        value = None if feedback.value is None else str(feedback.value)
        row = PredictionLabelRow(
            prediction_id=feedback.prediction_id,
            asset=feedback.asset,
            model=feedback.model,
            action=feedback.action,
            value=value,
            by=feedback.by,
            channel=feedback.channel,
            key_id=feedback.key_id,
            comment=feedback.comment,
            prediction_time=feedback.prediction_time,
            # Feedback cannot come before the prediction (clock steps between hosts).
            at=max(time.time() if at is None else at, feedback.prediction_time),
        )
        try:
            with self._store.sessions.begin() as session:
                session.add(row)
                session.flush()
                return _record(row)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot store feedback on {feedback.prediction_id}: {exc}") from exc

    def of_predictions(self, prediction_ids: Sequence[str]) -> list[LabelRecord]:
        if not prediction_ids:
            return []
        stmt = (
            select(PredictionLabelRow)
            .where(PredictionLabelRow.prediction_id.in_(list(prediction_ids)))
            .order_by(PredictionLabelRow.id)
        )
        try:
            with self._store.sessions() as session:
                return [_record(r) for r in session.scalars(stmt)]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read feedback: {exc}") from exc

    def metrics(self, since: float | None = None, until: float | None = None) -> FeedbackMetrics:
        """Over predictions made in [since, until] (by prediction time)."""
        L = PredictionLabelRow
        first = select(
            L.prediction_id,
            func.min(L.at).label("first_at"),
            func.min(L.prediction_time).label("ptime"),
        )
        per_action = select(L.action, func.count(func.distinct(L.prediction_id)))
        made = select(func.count(PredictionRow.id)).where(
            PredictionRow.quality == "Good",
            (PredictionRow.value_text.is_not(None)) | (PredictionRow.value_num.is_not(None)),
        )
        if since is not None:
            first = first.where(L.prediction_time >= since)
            per_action = per_action.where(L.prediction_time >= since)
            made = made.where(PredictionRow.timestamp >= since)
        if until is not None:
            first = first.where(L.prediction_time <= until)
            per_action = per_action.where(L.prediction_time <= until)
            made = made.where(PredictionRow.timestamp <= until)
        firsts = first.group_by(L.prediction_id).subquery()
        tta = select(func.count(), func.avg(firsts.c.first_at - firsts.c.ptime))
        try:
            with self._store.sessions() as session:
                with_feedback, mean_tta = session.execute(tta).one()
                counts = {a: n for a, n in session.execute(per_action.group_by(L.action))}
                decisions = int(session.execute(made).scalar_one())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot compute feedback metrics: {exc}") from exc
        rejected = int(counts.get("reject", 0))
        coverage = None
        if decisions:
            coverage = max(0.0, (decisions - rejected) / decisions)
        return FeedbackMetrics(
            predictions=decisions,
            with_feedback=int(with_feedback),
            acknowledged=int(counts.get("acknowledge", 0)),
            confirmed=int(counts.get("confirm", 0)),
            rejected=rejected,
            mean_time_to_acknowledge_s=None if mean_tta is None else float(mean_tta),
            autonomous_decision_coverage=coverage,
        )
