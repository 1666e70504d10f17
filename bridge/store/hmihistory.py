"""History of the HMI server's prediction variables (Value, Score, Quality, DriftScore) from the
``predictions`` table, for OPC UA HistoryRead (``bridge.types.HistoryService``).

Raw values are read one page at a time by keyset on (timestamp, id), in either direction:
a page never holds more rows than asked for, and rows of one instant are never skipped or
repeated across pages. Processed values (Average, Minimum, Maximum, Count per interval) are
computed by the database, one row per interval that has values (GROUP BY the interval number,
integer arithmetic on microseconds: the same interval borders on SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, and_, case, cast, func, literal, or_, select
from sqlalchemy.exc import SQLAlchemyError

from bridge.errors import StoreError
from bridge.types import HistoryBucket, HistoryKey, HistorySeries, HistoryValue, Quality

from .db import Store, read_session
from .tables import PredictionRow

__all__ = ["StoreHmiHistory"]

_P = PredictionRow
_QUALITIES = {q.label: q for q in Quality}
_GOOD = Quality.GOOD.label


def _value_columns(series: HistorySeries) -> tuple[Any, ...]:
    """The columns a value of the series is read from (Value: text, then number)."""
    field = series.field
    if field == "Value":
        return (_P.value_text, _P.value_num)
    if field == "Score":
        return (_P.score,)
    if field == "DriftScore":
        return (_P.drift_score,)
    return (_P.quality,)


def _of(series: HistorySeries) -> list[ColumnElement[bool]]:
    """The rows that are values of the series. A prediction without a drift score did not
    change the live DriftScore node, so it is no value of its history either."""
    where = [_P.asset == series.asset, _P.model == series.model]
    if series.field == "DriftScore":
        where.append(_P.drift_score.is_not(None))
    return where


def _good(series: HistorySeries) -> ColumnElement[bool] | None:
    """Which values the live node shows Good (``connectors/opcua/encode.py``): Value and Score
    carry the prediction's quality and are BadNoData without a value (a regressor's Value is
    BadTypeMismatch with a text); Quality and DriftScore are always Good. None: all."""
    field = series.field
    if field == "Value":
        present = (
            or_(_P.value_text.is_not(None), _P.value_num.is_not(None))
            if series.text
            else _P.value_num.is_not(None)
        )
        return and_(_P.quality == _GOOD, present)
    if field == "Score":
        return and_(_P.quality == _GOOD, _P.score.is_not(None))
    return None


def _number(series: HistorySeries) -> Any:
    """The numeric column averaged and compared, or None (text: Count only)."""
    if series.field == "Value":
        return None if series.text else _P.value_num
    if series.field == "Score":
        return _P.score
    if series.field == "DriftScore":
        return _P.drift_score
    return None


def _at_or_after(key: HistoryKey) -> ColumnElement[bool]:
    ts, row_id = key
    # The plain bound on timestamp lets the index seek; the OR alone would scan to the key.
    return and_(_P.timestamp >= ts, or_(_P.timestamp > ts, _P.id >= row_id))


def _at_or_before(key: HistoryKey) -> ColumnElement[bool]:
    ts, row_id = key
    return and_(_P.timestamp <= ts, or_(_P.timestamp < ts, _P.id <= row_id))


def _micros() -> ColumnElement[int]:
    # Timestamps are epoch seconds as doubles (exact to the microsecond): rounded to integer
    # microseconds, interval numbers are integer divisions, exact on both databases.
    return cast(func.round(_P.timestamp * 1_000_000), BigInteger)


class StoreHmiHistory:
    """``HistoryService`` over the store. Each read runs in a worker thread, stopped past
    ``timeout_s`` (the API's ``query_timeout_s``); errors are ``StoreError``."""

    def __init__(self, store: Store, timeout_s: float | None = None) -> None:
        self._store = store
        self._timeout_s = timeout_s

    async def values(
        self,
        series: HistorySeries,
        low: HistoryKey | None,
        high: HistoryKey | None,
        descending: bool,
        limit: int,
    ) -> Sequence[HistoryValue]:
        return await asyncio.to_thread(self.values_now, series, low, high, descending, limit)

    async def buckets(
        self,
        series: HistorySeries,
        origin_us: int,
        stop_us: int,
        interval_us: int,
        first: int,
        count: int,
    ) -> Sequence[HistoryBucket]:
        return await asyncio.to_thread(
            self.buckets_now, series, origin_us, stop_us, interval_us, first, count
        )

    async def span(self, series: HistorySeries) -> tuple[float, float] | None:
        return await asyncio.to_thread(self.span_now, series)

    def values_now(
        self,
        series: HistorySeries,
        low: HistoryKey | None,
        high: HistoryKey | None,
        descending: bool,
        limit: int,
    ) -> list[HistoryValue]:
        """``values`` in the calling thread."""
        if limit <= 0:
            return []
        columns = _value_columns(series)
        stmt = select(_P.timestamp, _P.id, _P.quality, *columns).where(*_of(series))
        if low is not None:
            stmt = stmt.where(_at_or_after(low))
        if high is not None:
            stmt = stmt.where(_at_or_before(high))
        if descending:
            stmt = stmt.order_by(_P.timestamp.desc(), _P.id.desc())
        else:
            stmt = stmt.order_by(_P.timestamp, _P.id)
        rows = self._run(stmt.limit(limit), "history values")
        qualities = _QUALITIES
        bad = Quality.BAD
        if series.field == "Value":
            return [
                HistoryValue(ts, rid, text if text is not None else num, qualities.get(q, bad))
                for ts, rid, q, text, num in rows
            ]
        return [HistoryValue(ts, rid, v, qualities.get(q, bad)) for ts, rid, q, v in rows]

    def buckets_now(
        self,
        series: HistorySeries,
        origin_us: int,
        stop_us: int,
        interval_us: int,
        first: int,
        count: int,
    ) -> list[HistoryBucket]:
        """``buckets`` in the calling thread."""
        if count <= 0 or interval_us <= 0:
            return []
        micros = _micros()
        origin = literal(origin_us, BigInteger)
        width = literal(interval_us, BigInteger)
        where = _of(series)
        if stop_us >= origin_us:
            lo_us = origin_us + first * interval_us
            hi_us = min(origin_us + (first + count) * interval_us, stop_us)
            number = (micros - origin) // width
            # lo_us <= micros < hi_us, as bounds on the indexed column (see _threshold).
            where += [_P.timestamp >= _threshold(lo_us), _P.timestamp < _threshold(hi_us)]
        else:
            hi_us = origin_us - first * interval_us
            lo_us = max(origin_us - (first + count) * interval_us, stop_us)
            number = (origin - micros) // width
            # lo_us < micros <= hi_us
            where += [_P.timestamp >= _threshold(lo_us + 1), _P.timestamp < _threshold(hi_us + 1)]
        good = _good(series)
        num = _number(series)
        # A subquery: grouping by the interval number's expression itself would repeat its
        # bound parameters, which PostgreSQL does not see as the same expression.
        inner: list[Any] = [
            number.label("n"),
            (case((good, 1), else_=0) if good is not None else literal(1)).label("good"),
        ]
        if num is not None:
            inner.append(num.label("x"))
        sub = select(*inner).where(*where).subquery()
        aggregates: list[Any] = [sub.c.n, func.sum(sub.c.good), func.count()]
        if num is not None:
            x = case((sub.c.good == 1, sub.c.x)) if good is not None else sub.c.x
            aggregates += [func.avg(x), func.min(x), func.max(x)]
        stmt = select(*aggregates).group_by(sub.c.n).order_by(sub.c.n)
        out: list[HistoryBucket] = []
        for row in self._run(stmt, "history intervals"):
            index, good_n, total = int(row[0]), int(row[1] or 0), int(row[2])
            # A value a half microsecond from a border may round across it: not ours.
            if not first <= index < first + count:
                continue
            stats = (
                (_float(row[3]), _float(row[4]), _float(row[5]))
                if num is not None
                else (None, None, None)
            )
            out.append(HistoryBucket(index, good_n, total - good_n, *stats))
        return out

    def span_now(self, series: HistorySeries) -> tuple[float, float] | None:
        """``span`` in the calling thread."""
        stmt = select(func.min(_P.timestamp), func.max(_P.timestamp)).where(*_of(series))
        rows = self._run(stmt, "history span")
        oldest, newest = rows[0] if rows else (None, None)
        if oldest is None or newest is None:
            return None
        return float(oldest), float(newest)

    def _run(self, stmt: Any, what: str) -> list[Any]:
        try:
            with read_session(self._store, self._timeout_s) as session:
                return list(session.execute(stmt).all())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read {what}: {exc}") from exc


def _threshold(us: int) -> float:
    """The timestamp below which a row's rounded microsecond is below ``us``: half a
    microsecond earlier (a double near today's epoch resolves ~0.24 µs)."""
    return (us - 0.5) / 1_000_000


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
