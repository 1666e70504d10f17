"""Operator feedback on predictions (acknowledge / confirm / reject) with who and when, and the
metrics built from it. Synchronous: callers on the event loop use ``asyncio.to_thread``.

- mean time to acknowledge: over predictions that got any feedback, the mean of (first
  feedback time - prediction time);
- autonomous decision coverage: over Good predictions with a value made in the period, the
  share that no operator rejected (a reject is an override of the model's decision).

Each answer is an entry of the audit ledger (``operator.acknowledged``, ``operator.confirmed``,
``operator.rejected``, subject ``prediction:<id>``, the comment as its reason), appended in the
label's own transaction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Double, Index, Integer, String, Text, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from bridge.errors import StoreError
from bridge.types import Feedback

from .audit import append_entry, default_writer
from .auditchain import NewAuditEntry
from .db import Store
from .tables import Base, PredictionRow

__all__ = [
    "FEEDBACK_ACTIONS",
    "FeedbackMetrics",
    "LabelRecord",
    "LabelRepository",
    "PredictionLabelRow",
    "feedback_actor",
]

# A label's action as the ledger's action.
FEEDBACK_ACTIONS = {
    "acknowledge": "operator.acknowledged",
    "confirm": "operator.confirmed",
    "reject": "operator.rejected",
}


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


def feedback_actor(feedback: Feedback) -> tuple[str, str]:
    """(actor, channel) of the ledger for feedback that says only where it came from: an API
    key's ``key:<id>`` through ``rest``, otherwise ``<channel>:<by>`` (``opcua:<user>``, the
    name the OPC UA session logged in with, ``anonymous`` without one)."""
    if feedback.channel == "rest" and feedback.key_id:
        return f"key:{feedback.key_id}", "rest"
    return f"{feedback.channel}:{feedback.by or 'anonymous'}", feedback.channel


def _judged(value: str | float | None) -> str | float | None:
    # The ledger's canonical JSON has no NaN or infinity: such a value is recorded as null
    # rather than refusing the operator's answer.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class LabelRepository:
    """``gateway`` names the writer of the ledger entries (the runtime and its REST API give
    the gateway id; None: ``cli@<host>``)."""

    def __init__(self, store: Store, gateway: str | None = None) -> None:
        self._store = store
        self.gateway = gateway if gateway is not None else default_writer()

    def add(
        self,
        feedback: Feedback,
        at: float | None = None,
        *,
        actor: str | None = None,
        channel: str | None = None,
    ) -> LabelRecord:
        """Store an operator's answer with its ledger entry, by ``actor`` through ``channel``
        (None: ``feedback_actor``; the REST API gives its key and whether the call came from
        the console)."""
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
                who, how = feedback_actor(feedback)
                after: dict[str, Any] = {
                    "action": feedback.action,
                    "asset": feedback.asset,
                    "model": feedback.model,
                    "value": _judged(feedback.value),
                    "by": feedback.by,
                    "comment": feedback.comment,
                }
                if feedback.key_id is not None:
                    after["key_id"] = feedback.key_id
                entry = NewAuditEntry(
                    actor or who,
                    channel or how,
                    FEEDBACK_ACTIONS.get(feedback.action, f"operator.{feedback.action}"),
                    f"prediction:{feedback.prediction_id}",
                    None,
                    after,
                    feedback.comment,
                )
                append_entry(session, self.gateway, entry)
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
