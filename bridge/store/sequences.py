"""Sequence numbers that survive restarts: the highest committed ``seq`` per gateway, asset and
model, kept in the transaction that stores the predictions.

Only committed predictions count: one shown on the HMI but lost in a crash before its commit
may have its number given again after the restart (to a prediction with another id, since the
id also carries the start's boot id), while the MES, which sees committed predictions only,
never sees a number twice or going back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bridge.errors import StoreError
from bridge.types import Prediction

from .bulk import upsert_max
from .db import Store
from .tables import PredictionRow, PredictionSequenceRow

__all__ = ["SequenceRepository", "record_sequences"]

_TABLE: Any = PredictionSequenceRow.__table__


def record_sequences(
    session: Session, dialect: str, gateway_id: str, predictions: Sequence[Prediction]
) -> None:
    """Raise each (asset, model)'s high-water mark to the batch's highest ``seq``."""
    highest: dict[tuple[str, str], int] = {}
    for p in predictions:
        key = (p.asset, p.model)
        if p.seq > highest.get(key, 0):
            highest[key] = p.seq
    if not highest:
        return
    rows = [(gateway_id, asset, model, seq) for (asset, model), seq in sorted(highest.items())]
    # Bulk path (bridge.store.bulk): COPY + one INSERT ... SELECT on PostgreSQL, executemany
    # on SQLite; sorted, so two writers lock the rows in the same order.
    upsert_max(session, _TABLE, ("gateway_id", "asset", "model"), "last_seq", rows)


class SequenceRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    def last(self, gateway_id: str, model: str) -> dict[str, int]:
        """Asset -> highest committed ``seq`` of ``gateway_id`` for ``model``.

        A gateway with no numbers recorded yet (a store from before revision 0009) goes on from
        the highest stored ``seq`` of each asset instead: one scan of the model's predictions,
        at its first start after the upgrade only.
        """
        own = select(PredictionSequenceRow.asset, PredictionSequenceRow.last_seq).where(
            PredictionSequenceRow.gateway_id == gateway_id, PredictionSequenceRow.model == model
        )
        stored = (
            select(PredictionRow.asset, func.max(PredictionRow.seq))
            .where(PredictionRow.model == model)
            .group_by(PredictionRow.asset)
        )
        try:
            with self._store.sessions() as session:
                found = {asset: int(seq) for asset, seq in session.execute(own)}
                if not found:
                    found = {asset: int(seq) for asset, seq in session.execute(stored)}
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the sequence numbers of {model}: {exc}") from exc
        return found
