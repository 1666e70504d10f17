"""Aggregates behind the anonymised insights (``GET /api/v1/insights``): counts per model,
label and calendar period, computed by the database so a year of predictions is never read
row by row. Every figure comes with the number of distinct assets behind it, which the API's
k-anonymity rule needs; with ``by_asset`` the rows are per asset as well (the API hashes the
names and never returns them).

Periods are UTC and calendar-aligned: hours and days from the epoch, weeks from Monday
1970-01-05. A row's ``bucket`` is the number of periods from that origin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, case, cast, func, literal_column, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from bridge.errors import StoreError

from .alerts import AlertRow
from .db import Store, read_session
from .tables import PredictionRow

__all__ = [
    "DRIFT_LABEL",
    "GATEWAY_LABELS",
    "PERIODS",
    "AlertPeriod",
    "InsightRepository",
    "InsightWindow",
    "LabelPeriod",
    "ModelPeriod",
]

# Seconds per period, and the first boundary of each (the epoch was a Thursday).
PERIODS = {"hour": (3600, 0), "day": (86400, 0), "week": (7 * 86400, 4 * 86400)}

# The alert label of a drift crossing (bridge.drift.events.DRIFT_LABEL: the store may not
# import it; a test checks they agree). Drift alerts are counted as drift events.
DRIFT_LABEL = "drift"
# Alerts about the gateway itself, not a plant asset (its disk, its files): never insights.
# bridge.runtime.retention.DISK_LOW_LABEL and bridge.runtime.integrity.ARTIFACT_LABEL.
GATEWAY_LABELS = ("disk_low", "artifact_changed")


@dataclass(frozen=True, slots=True)
class InsightWindow:
    """[since, until) cut into periods of ``width_s`` counted from ``origin_s``; ``model`` None:
    every model."""

    since: float
    until: float
    width_s: int
    origin_s: int
    model: str | None = None

    @classmethod
    def of(cls, period: str, since: float, until: float, model: str | None = None) -> InsightWindow:
        width, origin = PERIODS[period]
        return cls(since, until, width, origin, model)

    def start_of(self, bucket: int) -> float:
        return float(self.origin_s + bucket * self.width_s)


@dataclass(frozen=True, slots=True)
class ModelPeriod:
    """One model in one period (``asset`` set only by ``by_asset`` queries)."""

    bucket: int
    model: str
    asset: str | None
    assets: int  # distinct assets with predictions
    predictions: int
    good: int  # of those, made from Good inputs
    drift_checks: int  # of those, carrying the drift monitor's score
    drift_events: int  # drift alerts raised
    drifted_assets: int  # distinct assets that raised them


@dataclass(frozen=True, slots=True)
class LabelPeriod:
    """One label a classifier predicted in one period."""

    bucket: int
    model: str
    label: str
    asset: str | None
    assets: int
    predictions: int


@dataclass(frozen=True, slots=True)
class AlertPeriod:
    """Alerts of one model and label raised in one period, and how fast they were
    acknowledged (``ack_seconds``: the sum over the acknowledged ones)."""

    bucket: int
    model: str
    label: str
    asset: str | None
    assets: int
    raised: int
    acknowledged: int
    ack_seconds: float

    @property
    def mean_time_to_ack_s(self) -> float | None:
        return self.ack_seconds / self.acknowledged if self.acknowledged else None


class InsightRepository:
    """Synchronous, read only: callers on the event loop use the API's query threads. With
    ``timeout_s`` a query running longer is stopped (QueryTimeoutError)."""

    def __init__(self, store: Store, timeout_s: float | None = None) -> None:
        self._store = store
        self._timeout_s = timeout_s

    def _bucket(self, column: Any, w: InsightWindow) -> ColumnElement[int]:
        # Literal numbers (the server's own, never a client's): bound parameters would make
        # the GROUP BY expression differ from the selected one on PostgreSQL.
        origin = literal_column(str(int(w.origin_s)), Integer)
        width = literal_column(str(int(w.width_s)), Integer)
        offset = (column - origin) / width
        if self._store.dialect == "sqlite":
            # CAST truncates toward zero: the floor for times after the origin (the API
            # refuses earlier ones).
            return cast(offset, Integer)
        return cast(func.floor(offset), BigInteger)

    def model_periods(
        self, w: InsightWindow, by_asset: bool = False, limit: int | None = None
    ) -> list[ModelPeriod]:
        """At most ``limit`` rows (None: all); the caller asks for one more than it serves."""
        P = PredictionRow
        bucket = self._bucket(P.timestamp, w).label("bucket")
        keys: list[Any] = [bucket, P.model] + ([P.asset] if by_asset else [])
        made = select(
            *keys,
            func.count(func.distinct(P.asset)),
            func.count(P.id),
            func.sum(case((P.quality == "Good", 1), else_=0)),
            func.count(P.drift_score),
        ).where(P.timestamp >= w.since, P.timestamp < w.until)
        A = AlertRow
        drift_bucket = self._bucket(A.raised_at, w).label("bucket")
        drift_keys: list[Any] = [drift_bucket, A.model] + ([A.asset] if by_asset else [])
        drifted = select(*drift_keys, func.count(A.id), func.count(func.distinct(A.asset))).where(
            A.label == DRIFT_LABEL, A.raised_at >= w.since, A.raised_at < w.until
        )
        if w.model is not None:
            made = made.where(P.model == w.model)
            drifted = drifted.where(A.model == w.model)
        rows = self._read(made.group_by(*keys).limit(limit), "prediction counts")
        drift = {
            tuple(r[:-2]): (int(r[-2]), int(r[-1]))
            for r in self._read(drifted.group_by(*drift_keys), "drift events")
        }
        out = []
        for r in rows:
            key = tuple(r[: len(keys)])
            events, drifting = drift.get(key, (0, 0))
            n_assets, n, good, checks = r[len(keys) :]
            out.append(
                ModelPeriod(
                    bucket=int(r[0]),
                    model=str(r[1]),
                    asset=str(r[2]) if by_asset else None,
                    assets=int(n_assets),
                    predictions=int(n),
                    good=int(good or 0),
                    drift_checks=int(checks),
                    drift_events=events,
                    drifted_assets=drifting,
                )
            )
        return out

    def label_periods(
        self, w: InsightWindow, by_asset: bool = False, limit: int | None = None
    ) -> list[LabelPeriod]:
        """Predictions with a class label (a classifier's, with a value): regressors' numbers
        and predictions without a value are counted in ``model_periods`` only."""
        P = PredictionRow
        bucket = self._bucket(P.timestamp, w).label("bucket")
        keys: list[Any] = [bucket, P.model, P.value_text] + ([P.asset] if by_asset else [])
        stmt = select(*keys, func.count(func.distinct(P.asset)), func.count(P.id)).where(
            P.timestamp >= w.since, P.timestamp < w.until, P.value_text.is_not(None)
        )
        if w.model is not None:
            stmt = stmt.where(P.model == w.model)
        return [
            LabelPeriod(
                bucket=int(r[0]),
                model=str(r[1]),
                label=str(r[2]),
                asset=str(r[3]) if by_asset else None,
                assets=int(r[-2]),
                predictions=int(r[-1]),
            )
            for r in self._read(stmt.group_by(*keys).limit(limit), "label counts")
        ]

    def alert_periods(
        self, w: InsightWindow, by_asset: bool = False, limit: int | None = None
    ) -> list[AlertPeriod]:
        """Alerts by the period they were raised in; drift alerts (counted as drift events)
        and the gateway's own alerts are not among them."""
        A = AlertRow
        bucket = self._bucket(A.raised_at, w).label("bucket")
        keys: list[Any] = [bucket, A.model, A.label] + ([A.asset] if by_asset else [])
        stmt = select(
            *keys,
            func.count(func.distinct(A.asset)),
            func.count(A.id),
            func.count(A.acked_at),
            func.sum(A.acked_at - A.raised_at),
        ).where(
            A.raised_at >= w.since,
            A.raised_at < w.until,
            A.label.not_in((DRIFT_LABEL, *GATEWAY_LABELS)),
        )
        if w.model is not None:
            stmt = stmt.where(A.model == w.model)
        return [
            AlertPeriod(
                bucket=int(r[0]),
                model=str(r[1]),
                label=str(r[2]),
                asset=str(r[3]) if by_asset else None,
                assets=int(r[-4]),
                raised=int(r[-3]),
                acknowledged=int(r[-2]),
                ack_seconds=float(r[-1] or 0.0),
            )
            for r in self._read(stmt.group_by(*keys).limit(limit), "alert counts")
        ]

    def _read(self, stmt: Any, what: str) -> Sequence[Any]:
        try:
            with read_session(self._store, self._timeout_s) as session:
                return list(session.execute(stmt))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot compute insights ({what}): {exc}") from exc
