"""HistoryRead on the prediction variables: a real PredictionServer answers a real asyncua client
from predictions stored in a real SQLite file and a real PostgreSQL schema (Part 11 raw reads
with bounds, both directions, NumValuesPerNode, continuation points; processed Average, Minimum,
Maximum, Count; the errors)."""

from __future__ import annotations

import contextlib
import math
import random
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import extensionobject_to_binary
from asyncua.ua.uaerrors import UaStatusCodeError
from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker
from stores import BACKENDS, temp_store
from support import free_port

from bridge.connectors.opcua import OpcUaServerSettings, PredictionServer
from bridge.connectors.opcua._historywire import history_data, placeholder, ticks, wire_for
from bridge.connectors.opcua.encode import encode_prediction, node_string
from bridge.store.db import Store
from bridge.store.hmihistory import StoreHmiHistory
from bridge.store.repository import PredictionRepository
from bridge.types import (
    HistoryBucket,
    HistoryKey,
    HistorySeries,
    HistoryValue,
    Prediction,
    PredictionSlot,
    Quality,
    SinkContext,
)

NS = "urn:test:history"
pytestmark = pytest.mark.asyncio(loop_scope="module")
BASE = 1_700_000_000.0  # 2023-11-14T22:13:20Z
# 256 KB messages: the server answers at most 2,048 values per HistoryRead response.
MESSAGE = 256 * 1024
PAGE = MESSAGE // 128
SLOTS = (
    PredictionSlot("table", "rul", "1.0.0", "a" * 64),
    PredictionSlot("pages", "rul", "1.0.0", "a" * 64),
    PredictionSlot("points", "rul", "1.0.0", "a" * 64),
    PredictionSlot("agg", "rul", "1.0.0", "a" * 64),
    PredictionSlot("agg", "cls", "1.0.0", "b" * 64, labels=("ok", "fault")),
    PredictionSlot("live", "rul", "1.0.0", "a" * 64),
    PredictionSlot("live", "cls", "1.0.0", "b" * 64, labels=("ok", "fault")),
)
TTR = ua.TimestampsToReturn
AVERAGE = ua.ObjectIds.AggregateFunction_Average
MINIMUM = ua.ObjectIds.AggregateFunction_Minimum
MAXIMUM = ua.ObjectIds.AggregateFunction_Maximum
COUNT = ua.ObjectIds.AggregateFunction_Count
CALCULATED, PARTIAL, DATA_VALUE = 0x1, 0x4, 0x400


def at(offset_s: float) -> datetime:
    return datetime.fromtimestamp(BASE + offset_s, UTC)


def prediction(
    asset: str,
    model: str,
    seq: int,
    offset_s: float,
    value: str | float | None,
    *,
    quality: Quality = Quality.GOOD,
    score: float | None = 0.5,
    drift: float | None = None,
) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"history/{asset}/{model}/{seq}")),
        seq=seq,
        asset=asset,
        model=model,
        version="1.0.0",
        sha256="a" * 64,
        value=value,
        score=score,
        quality=quality,
        timestamp=BASE + offset_s,
        input_age_s=0.1,
        drift_score=drift,
    )


@dataclass
class Recording:
    """The real store history, with the size of every page it was asked for and returned."""

    inner: StoreHmiHistory
    pages: list[tuple[int, int]] = field(default_factory=list)  # (limit, rows)

    async def values(
        self,
        series: HistorySeries,
        low: HistoryKey | None,
        high: HistoryKey | None,
        descending: bool,
        limit: int,
    ) -> Sequence[HistoryValue]:
        rows = await self.inner.values(series, low, high, descending, limit)
        self.pages.append((limit, len(rows)))
        return rows

    async def buckets(
        self,
        series: HistorySeries,
        origin_us: int,
        stop_us: int,
        interval_us: int,
        first: int,
        count: int,
    ) -> Sequence[HistoryBucket]:
        return await self.inner.buckets(series, origin_us, stop_us, interval_us, first, count)

    async def span(self, series: HistorySeries) -> tuple[float, float] | None:
        return await self.inner.span(series)


@dataclass
class Rig:
    server: PredictionServer
    store: Store
    history: Recording
    client: Client
    ns: int

    def node(self, asset: str, model: str, field: str) -> ua.NodeId:
        return ua.NodeId(node_string(asset, model, field), self.ns)


def settings() -> OpcUaServerSettings:
    return OpcUaServerSettings(
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}",
        namespace=NS,
        allow_anonymous=True,
        security_policies=["None"],
        max_message_size=MESSAGE,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def rig(request: pytest.FixtureRequest, tmp_path_factory: Any) -> AsyncIterator[Rig]:
    with temp_store(request.param, tmp_path_factory.mktemp("history")) as store:
        history = Recording(StoreHmiHistory(store, timeout_s=10))
        server = PredictionServer("hmi", settings(), SinkContext("gw", SLOTS, history=history))
        await server.start()
        try:
            async with Client(server._settings.endpoint, timeout=10) as client:
                ns = await client.get_namespace_index(NS)
                yield Rig(server, store, history, client, ns)
        finally:
            await server.close()


def store(rig: Rig, predictions: Sequence[Prediction]) -> None:
    PredictionRepository(rig.store).add_many(predictions)


def raw(
    start: datetime | None,
    end: datetime | None,
    n: int = 0,
    bounds: bool = False,
    modified: bool = False,
) -> ua.ReadRawModifiedDetails:
    epoch = ua.get_win_epoch()  # DateTime.MinValue: not given
    return ua.ReadRawModifiedDetails(
        IsReadModified=modified,
        StartTime=start or epoch,
        EndTime=end or epoch,
        NumValuesPerNode=n,
        ReturnBounds=bounds,
    )


def processed(
    start: datetime, end: datetime, interval_ms: float, aggregate: int
) -> ua.ReadProcessedDetails:
    return ua.ReadProcessedDetails(
        StartTime=start,
        EndTime=end,
        ProcessingInterval=interval_ms,
        AggregateType=[ua.NodeId(aggregate)],
    )


async def history_read(
    rig: Rig,
    nodeid: ua.NodeId,
    details: Any,
    point: bytes | None = None,
    *,
    release: bool = False,
    timestamps: ua.TimestampsToReturn = TTR.Both,
) -> ua.HistoryReadResult:
    params = ua.HistoryReadParameters(
        HistoryReadDetails=details,
        TimestampsToReturn=timestamps,
        # asyncua's default is True: release, read nothing.
        ReleaseContinuationPoints=release,
        NodesToRead=[ua.HistoryReadValueId(NodeId=nodeid, ContinuationPoint=point)],
    )
    (result,) = await rig.client.uaclient.history_read(params)
    return result


@dataclass
class Read:
    values: list[ua.DataValue]
    pages: list[int]  # values per response
    status: int  # of the first response


async def read_all(rig: Rig, nodeid: ua.NodeId, details: Any, max_pages: int = 200) -> Read:
    """Every page of a read, following continuation points (at most ``max_pages``)."""
    result = await history_read(rig, nodeid, details)
    status = result.StatusCode.value
    values: list[ua.DataValue] = []
    pages: list[int] = []
    for _ in range(max_pages):
        assert not result.StatusCode.is_bad(), result.StatusCode
        page = list(result.HistoryData.DataValues)
        values += page
        pages.append(len(page))
        if not result.ContinuationPoint:
            return Read(values, pages, status)
        result = await history_read(rig, nodeid, details, result.ContinuationPoint)
    raise AssertionError(f"still a continuation point after {max_pages} pages")


def shown(values: Sequence[ua.DataValue]) -> list[object]:
    """Values as (offset s) or ("FIRST"/"LAST", offset s) for a missing bound."""
    out: list[object] = []
    for dv in values:
        offset = round(dv.SourceTimestamp.timestamp() - BASE, 3)
        if dv.StatusCode.value == StatusCodes.BadBoundNotFound:
            assert dv.Value is None or dv.Value.Value is None
            out.append(("bound", offset))
        else:
            out.append(offset)
    return out


async def test_history_variables_and_capabilities(rig: Rig) -> None:
    client = rig.client
    history_access = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask
    for field_name in ("Value", "Score", "Quality", "DriftScore"):
        node = client.get_node(rig.node("live", "rul", field_name))
        for attribute in (ua.AttributeIds.AccessLevel, ua.AttributeIds.UserAccessLevel):
            dv = await node.read_attribute(attribute)
            assert dv.Value.Value == history_access, (field_name, attribute)
        assert (await node.read_attribute(ua.AttributeIds.Historizing)).Value.Value is True
    model_name = client.get_node(rig.node("live", "rul", "ModelName"))
    access = (await model_name.read_attribute(ua.AttributeIds.AccessLevel)).Value.Value
    assert access == ua.AccessLevel.CurrentRead.mask
    assert (await model_name.read_attribute(ua.AttributeIds.Historizing)).Value.Value is False
    ids = ua.ObjectIds
    capability = client.get_node(
        ua.NodeId(ids.HistoryServerCapabilities_AccessHistoryDataCapability)
    )
    assert await capability.read_value() is True
    limit = client.get_node(ua.NodeId(ids.HistoryServerCapabilities_MaxReturnDataValues))
    assert await limit.read_value() == PAGE
    insert = client.get_node(ua.NodeId(ids.HistoryServerCapabilities_InsertDataCapability))
    assert await insert.read_value() is False
    for folder in (
        ids.HistoryServerCapabilities_AggregateFunctions,
        ids.Server_ServerCapabilities_AggregateFunctions,
    ):
        children = await client.get_node(ua.NodeId(folder)).get_children(refs=ids.Organizes)
        assert {c.nodeid.Identifier for c in children} >= {AVERAGE, MINIMUM, MAXIMUM, COUNT}


# Part 11 4.4, Table 1: a historian with values at 5:00, 5:02, 5:03, 5:05 and 5:06 (here
# seconds 0, 120, 180, 300, 360), read raw; ("bound", t): no value, BadBoundNotFound at t.
M = 60
TABLE_AT = (0, 120, 180, 300, 360)
TABLE = [
    # start, end, NumValuesPerNode, ReturnBounds -> values
    (0, 5 * M, 0, True, [0, 120, 180, 300]),
    (0, 5 * M, 0, False, [0, 120, 180]),
    (1 * M, 4 * M, 0, True, [0, 120, 180, 300]),
    (1 * M, 4 * M, 0, False, [120, 180]),
    (5 * M, 0, 0, True, [300, 180, 120, 0]),
    (5 * M, 0, 0, False, [300, 180, 120]),
    (4 * M, 1 * M, 0, True, [300, 180, 120, 0]),
    (4 * M, 1 * M, 0, False, [180, 120]),
    (-1 * M, 5 * M, 0, True, [("bound", -60), 0, 120, 180, 300]),
    (-1 * M, 5 * M, 0, False, [0, 120, 180]),
    (0, 7 * M, 0, True, [0, 120, 180, 300, 360, ("bound", 420)]),
    (1 * M, None, 3, True, [0, 120, 180]),
    (1 * M, None, 3, False, [120, 180, 300]),
    (0, None, 6, False, [0, 120, 180, 300, 360]),
    (0, None, 6, True, [0, 120, 180, 300, 360]),
    (7 * M, None, 6, True, [360]),
    (7 * M, None, 6, False, []),
    (None, 6 * M, 3, True, [360, 300, 180]),
    (None, 6 * M, 3, False, [360, 300, 180]),
    (None, 6 * M, 6, True, [360, 300, 180, 120, 0]),
    (0, 5 * M, 3, True, [0, 120, 180, 300]),  # 3 per response, then the end bound
    (-1 * M, 7 * M, 2, True, [("bound", -60), 0, 120, 180, 300, 360, ("bound", 420)]),
    (3 * M, 3 * M, 0, False, [180]),  # start = end: the values of that instant
    (3 * M, 3 * M, 0, True, [180, 300]),
    (4 * M, 4 * M, 0, True, [180, 300]),
    (4 * M, 4 * M, 0, False, []),
]


def table_rows() -> list[Prediction]:
    """The values of Table 1 (written again by each test that reads them: ids are kept)."""
    return [prediction("table", "rul", i, t, float(t)) for i, t in enumerate(TABLE_AT)]


async def test_raw_reads_follow_part_11_table_1(rig: Rig) -> None:
    store(rig, table_rows())
    nodeid = rig.node("table", "rul", "Value")
    for start, end, n, bounds, expected in TABLE:
        details = raw(
            at(start) if start is not None else None,
            at(end) if end is not None else None,
            n,
            bounds,
        )
        read = await read_all(rig, nodeid, details)
        case = (start, end, n, bounds)
        assert shown(read.values) == expected, case
        if n and start is not None and end is not None:
            assert max(read.pages) <= n, case
        if not expected:
            assert read.status == StatusCodes.GoodNoData, case
        # Values carry what the node showed: the stored number, Good.
        for dv in read.values:
            if dv.StatusCode.value != StatusCodes.BadBoundNotFound:
                assert dv.StatusCode.value == StatusCodes.Good, case
                offset = dv.SourceTimestamp.timestamp() - BASE
                assert dv.Value.Value == pytest.approx(offset), case


async def test_pages_never_skip_or_repeat_values_of_one_instant(rig: Rig) -> None:
    # 20,000 values, 2,500 per timestamp: every page boundary falls inside an instant.
    rows = [
        prediction("pages", "rul", i, float(i // 2500), float(i), score=i / 20_000)
        for i in range(20_000)
    ]
    for at_once in range(0, len(rows), 5000):
        store(rig, rows[at_once : at_once + 5000])
    nodeid = rig.node("pages", "rul", "Value")
    start, end = at(0), at(10)
    rig.history.pages.clear()
    read = await read_all(rig, nodeid, raw(start, end))
    assert [dv.Value.Value for dv in read.values] == [float(i) for i in range(20_000)]
    # At most one page in the server: the responses and every store query are bounded.
    assert max(read.pages) == PAGE and len(read.pages) == -(-20_000 // PAGE)
    assert rig.history.pages and max(rows_ for _, rows_ in rig.history.pages) <= PAGE + 1
    assert max(limit for limit, _ in rig.history.pages) <= PAGE + 1
    # Backwards, NumValuesPerNode 777 per response: the same values, newest first.
    read = await read_all(rig, nodeid, raw(end, at(-1), 777))
    assert [dv.Value.Value for dv in read.values] == [float(i) for i in reversed(range(20_000))]
    assert set(read.pages[:-1]) == {777}


async def test_num_values_per_node_and_one_time_reads(rig: Rig) -> None:
    store(rig, [prediction("points", "rul", i, i, float(i)) for i in range(50)])
    nodeid = rig.node("points", "rul", "Value")
    first = await history_read(rig, nodeid, raw(at(0), at(50), 20))
    assert len(first.HistoryData.DataValues) == 20 and first.ContinuationPoint
    # One time and NumValuesPerNode: that many values, and the read is complete.
    forward = await history_read(rig, nodeid, raw(at(10), None, 5))
    assert [dv.Value.Value for dv in forward.HistoryData.DataValues] == [10, 11, 12, 13, 14]
    assert not forward.ContinuationPoint
    backward = await history_read(rig, nodeid, raw(None, at(10), 3))
    assert [dv.Value.Value for dv in backward.HistoryData.DataValues] == [10, 9, 8]
    # Two of the three parameters are required (Part 11 6.5.3.1).
    for details in (raw(None, None, 5), raw(at(0), None, 0), raw(None, at(5), 0)):
        result = await history_read(rig, nodeid, details)
        assert result.StatusCode.value == StatusCodes.BadInvalidTimestampArgument
    # History is never modified: a modified read is empty; bounds are refused there.
    modified = await history_read(rig, nodeid, raw(at(0), at(50), modified=True))
    assert modified.StatusCode.value == StatusCodes.GoodNoData
    assert isinstance(modified.HistoryData, ua.HistoryModifiedData)
    assert modified.HistoryData.DataValues == []
    bounded = await history_read(rig, nodeid, raw(at(0), at(50), bounds=True, modified=True))
    assert bounded.StatusCode.value == StatusCodes.BadInvalidArgument


async def test_continuation_points_are_released_and_checked(rig: Rig) -> None:
    store(rig, [prediction("points", "rul", 100 + i, 100 + i, float(i)) for i in range(10)])
    nodeid = rig.node("points", "rul", "Value")
    details = raw(at(100), at(110), 4)
    first = await history_read(rig, nodeid, details)
    point = first.ContinuationPoint
    assert point
    # A point can be used again (a reply lost on the way) until it is released.
    again = await history_read(rig, nodeid, details, point)
    same = await history_read(rig, nodeid, details, point)
    assert [dv.Value.Value for dv in again.HistoryData.DataValues] == [4.0, 5.0, 6.0, 7.0]
    assert [dv.Value.Value for dv in same.HistoryData.DataValues] == [4.0, 5.0, 6.0, 7.0]
    released = await history_read(rig, nodeid, details, point, release=True)
    assert released.StatusCode.value == StatusCodes.Good
    # No data (a null ExtensionObject) and no point.
    assert not getattr(released.HistoryData, "DataValues", None)
    assert not released.ContinuationPoint
    refused = await history_read(rig, nodeid, details, point)
    assert refused.StatusCode.value == StatusCodes.BadContinuationPointInvalid
    # Another point of the same read still goes on.
    assert again.ContinuationPoint
    last = await history_read(rig, nodeid, details, again.ContinuationPoint)
    assert [dv.Value.Value for dv in last.HistoryData.DataValues] == [8.0, 9.0]
    assert not last.ContinuationPoint
    # Forged, for another node or another request: refused.
    fresh = (await history_read(rig, nodeid, details)).ContinuationPoint
    forged = fresh[:-1] + bytes([fresh[-1] ^ 1])
    cases = [
        (nodeid, details, forged),
        (nodeid, details, b"\x01" * 8),
        (rig.node("points", "rul", "Score"), details, fresh),
        (nodeid, raw(at(100), at(110), 5), fresh),
    ]
    for node, other, cp in cases:
        result = await history_read(rig, node, other, cp)
        assert result.StatusCode.value == StatusCodes.BadContinuationPointInvalid


def _interval_rows() -> list[Prediction]:
    """Values over 0..60 s for intervals of 10 s: [20, 30) empty, [40, 50) only Bad values,
    mixed qualities elsewhere, some exactly on interval borders."""
    spec = [
        (0.0, 4.0, Quality.GOOD),
        (3.5, 8.0, Quality.GOOD),
        (9.999, 1.0, Quality.UNCERTAIN),
        (10.0, 10.0, Quality.GOOD),  # on a border: in [10, 20)
        (15.0, -2.5, Quality.GOOD),
        (15.0, 7.25, Quality.GOOD),
        (19.5, None, Quality.GOOD),  # no value: BadNoData on the node
        (30.0, 3.0, Quality.GOOD),
        (41.0, 100.0, Quality.BAD),
        (44.0, 50.0, Quality.BAD),
        (50.0, 6.0, Quality.GOOD),
        (55.0, 8.0, Quality.UNCERTAIN),
        (58.0, 9.5, Quality.GOOD),
    ]
    out = []
    for i, (t, value, quality) in enumerate(spec):
        label = None if value is None else ("fault" if value > 5 else "ok")
        out.append(prediction("agg", "rul", i, t, value, quality=quality, score=value))
        out.append(prediction("agg", "cls", i, t, label, quality=quality, drift=value))
    return out


def _expected(
    rows: Sequence[Prediction], start: float, end: float, step: float, aggregate: int
) -> list[tuple[float, float | int | None, int]]:
    """(interval start offset, value, StatusCode) computed in Python from the rows written:
    Good values only; Uncertain when the interval also had others; BadNoData without Good
    ones; Count 0 inside the data, BadNoData outside it; the last interval Partial."""
    rul = [p for p in rows if p.model == "rul"]
    first, last = min(p.timestamp for p in rul) - BASE, max(p.timestamp for p in rul) - BASE
    out: list[tuple[float, float | int | None, int]] = []
    t0 = start
    while t0 < end:
        t1 = min(t0 + step, end)
        inside = [p for p in rul if t0 <= p.timestamp - BASE < t1]
        good = [float(p.value) for p in inside if p.quality == Quality.GOOD and p.value is not None]  # type: ignore[arg-type]
        others = len(inside) - len(good)
        partial = PARTIAL if t1 - t0 < step else 0
        base = StatusCodes.Good if others == 0 else StatusCodes.UncertainDataSubNormal
        if aggregate == COUNT:
            if t1 <= first or t0 > last or (not good and others):
                out.append((t0, None, StatusCodes.BadNoData))
            else:
                out.append((t0, len(good), base | DATA_VALUE | CALCULATED | partial))
        elif not good:
            out.append((t0, None, StatusCodes.BadNoData))
        elif aggregate == AVERAGE:
            out.append((t0, sum(good) / len(good), base | DATA_VALUE | CALCULATED | partial))
        else:
            pick = min(good) if aggregate == MINIMUM else max(good)
            out.append((t0, pick, base | DATA_VALUE | partial))
        t0 += step
    return out


async def test_processed_aggregates_match_python_over_the_rows(rig: Rig) -> None:
    rows = _interval_rows()
    store(rig, rows)
    value = rig.node("agg", "rul", "Value")
    # -10 s: an interval before the data; 65 s: the last interval is 5 s (Partial).
    start, end = -10.0, 65.0
    for aggregate in (AVERAGE, MINIMUM, MAXIMUM, COUNT):
        read = await read_all(rig, value, processed(at(start), at(end), 10_000, aggregate))
        got = [
            (
                round(dv.SourceTimestamp.timestamp() - BASE, 3),
                dv.Value.Value if dv.Value is not None else None,
                dv.StatusCode.value,
            )
            for dv in read.values
        ]
        want = _expected(rows, start, end, 10.0, aggregate)
        assert [(t, s) for t, _, s in got] == [(t, s) for t, _, s in want], aggregate
        for (_, g, _), (_, w, _) in zip(got, want, strict=True):
            assert g == (pytest.approx(w) if isinstance(w, float) else w), aggregate
    # Count also for text: the classifier's label Value counts its Good values.
    labels = await read_all(
        rig, rig.node("agg", "cls", "Value"), processed(at(start), at(end), 10_000, COUNT)
    )
    assert [dv.Value.Value for dv in labels.values] == [w for _, w, _ in want]
    # The whole range in one interval (ProcessingInterval 0), and read backwards.
    whole = await read_all(rig, value, processed(at(0), at(60), 0, COUNT))
    assert [dv.Value.Value for dv in whole.values] == [8]
    backwards = await read_all(rig, value, processed(at(60), at(0), 20_000, MAXIMUM))
    # (40, 60], (20, 40], (0, 20]: each interval holds its later end, not its earlier one.
    assert [dv.Value.Value for dv in backwards.values] == [9.5, 3.0, 10.0]
    assert [dv.SourceTimestamp for dv in backwards.values] == [at(60), at(40), at(20)]


async def test_processed_reads_page_and_refuse_what_is_not_supported(rig: Rig) -> None:
    store(rig, _interval_rows())
    value = rig.node("agg", "rul", "Value")
    # 10,000 intervals of 10 ms: pages of at most PAGE intervals through continuation points.
    read = await read_all(rig, value, processed(at(0), at(100), 10, AVERAGE))
    assert len(read.values) == 10_000 and max(read.pages) == PAGE
    interpolative = await history_read(
        rig, value, processed(at(0), at(60), 10_000, ua.ObjectIds.AggregateFunction_Interpolative)
    )
    assert interpolative.StatusCode.value == StatusCodes.BadAggregateNotSupported
    quality = rig.node("agg", "rul", "Quality")
    text = await history_read(rig, quality, processed(at(0), at(60), 10_000, AVERAGE))
    assert text.StatusCode.value == StatusCodes.BadAggregateNotSupported
    count = await history_read(rig, quality, processed(at(0), at(60), 10_000, COUNT))
    assert [dv.Value.Value for dv in count.HistoryData.DataValues] == [3, 4, 0, 1, 2, 3]
    same = await history_read(rig, value, processed(at(5), at(5), 1000, AVERAGE))
    assert same.StatusCode.value == StatusCodes.BadInvalidArgument


async def test_values_show_what_the_live_node_showed(rig: Rig) -> None:
    """Each field's history holds, per prediction, the value, StatusCode and SourceTimestamp
    the live node got for it (encode_prediction), for both a regressor and a classifier."""
    written = [
        prediction("live", "rul", 0, 0.0, 1.5, score=0.2, drift=0.1),
        prediction("live", "rul", 1, 1.0, 2.5, quality=Quality.UNCERTAIN, score=None),
        prediction("live", "rul", 2, 2.0, None, quality=Quality.BAD, score=0.9, drift=0.3),
        prediction("live", "rul", 3, 3.0, "text", score=0.4),  # BadTypeMismatch on a Double
        prediction("live", "cls", 0, 0.0, "fault", score=0.8),
        prediction("live", "cls", 1, 1.0, 1.0, quality=Quality.UNCERTAIN),  # index: a label
        prediction("live", "cls", 2, 2.0, None, quality=Quality.BAD, drift=0.2),
    ]
    store(rig, written)
    now = datetime.now(UTC)
    for slot in (s for s in SLOTS if s.asset == "live"):
        mine = [p for p in written if p.model == slot.model]
        for field_name in ("Value", "Score", "Quality", "DriftScore"):
            read = await read_all(rig, rig.node("live", slot.model, field_name), raw(at(0), at(9)))
            live = [
                encode_prediction(slot, p, now)[field_name]
                for p in mine
                if field_name in encode_prediction(slot, p, now)
            ]
            assert len(read.values) == len(live), (slot.model, field_name)
            for got, want in zip(read.values, live, strict=True):
                assert got.StatusCode.value == want.StatusCode.value, (slot.model, field_name)
                assert got.SourceTimestamp == want.SourceTimestamp
                assert (got.Value.Value if got.Value else None) == want.Value.Value
                # The store keeps one time: the prediction's, also as ServerTimestamp.
                assert got.ServerTimestamp == got.SourceTimestamp


async def test_timestamps_to_return(rig: Rig) -> None:
    store(rig, table_rows())
    nodeid = rig.node("table", "rul", "Value")
    details = raw(at(0), at(400))
    source = await history_read(rig, nodeid, details, timestamps=TTR.Source)
    server = await history_read(rig, nodeid, details, timestamps=TTR.Server)
    assert source.HistoryData.DataValues and server.HistoryData.DataValues
    assert all(dv.ServerTimestamp is None for dv in source.HistoryData.DataValues)
    assert all(dv.SourceTimestamp is None for dv in server.HistoryData.DataValues)
    assert [dv.ServerTimestamp for dv in server.HistoryData.DataValues] == [at(t) for t in TABLE_AT]
    # Part 4 5.10.3.2: Neither is not valid for HistoryRead (a service fault).
    with pytest.raises(UaStatusCodeError) as refused:
        await history_read(rig, nodeid, details, timestamps=TTR.Neither)
    assert refused.value.code == StatusCodes.BadTimestampsToReturnInvalid


async def test_nodes_without_history_and_other_reads(rig: Rig) -> None:
    store(rig, table_rows())
    details = raw(at(0), at(400))
    model_name = await history_read(rig, rig.node("live", "rul", "ModelName"), details)
    assert model_name.StatusCode.value == StatusCodes.BadNotReadable
    unknown = await history_read(rig, ua.NodeId("Predictions.nope.rul.Value", rig.ns), details)
    assert unknown.StatusCode.value == StatusCodes.BadNodeIdUnknown
    value = rig.node("live", "rul", "Value")
    at_time = await history_read(rig, value, ua.ReadAtTimeDetails(ReqTimes=[at(1)]))
    assert at_time.StatusCode.value == StatusCodes.BadHistoryOperationUnsupported
    events = ua.ReadEventDetails(StartTime=at(0), EndTime=at(400), NumValuesPerNode=10)
    event_read = await history_read(rig, value, events)
    assert event_read.StatusCode.value == StatusCodes.BadHistoryOperationUnsupported
    # Several nodes in one request: each gets its own result.
    params = ua.HistoryReadParameters(
        HistoryReadDetails=details,
        TimestampsToReturn=TTR.Source,
        ReleaseContinuationPoints=False,
        NodesToRead=[
            ua.HistoryReadValueId(NodeId=rig.node("table", "rul", "Value")),
            ua.HistoryReadValueId(NodeId=rig.node("table", "rul", "ModelName")),
            ua.HistoryReadValueId(NodeId=rig.node("table", "rul", "Quality")),
        ],
    )
    results = await rig.client.uaclient.history_read(params)
    assert [r.StatusCode.value for r in results] == [0, StatusCodes.BadNotReadable, 0]
    assert [dv.Value.Value for dv in results[2].HistoryData.DataValues] == ["Good"] * 5


@contextlib.contextmanager
def dead_store() -> Iterator[Store]:
    """A store whose PostgreSQL is not there (nothing listens on the port)."""
    engine = create_engine(f"postgresql+psycopg://root@127.0.0.1:{free_port()}/test")
    try:
        yield Store(engine, sessionmaker(engine))
    finally:
        engine.dispose()


async def test_a_store_that_is_down_answers_bad_not_a_crash(tmp_path: Path) -> None:
    slot = PredictionSlot("P1", "rul", "1.0.0", "a" * 64)
    with dead_store() as down:
        history = StoreHmiHistory(down, timeout_s=2)
        server = PredictionServer("hmi", settings(), SinkContext("gw", (slot,), history=history))
        await server.start()
        try:
            async with Client(server._settings.endpoint, timeout=10) as client:
                ns = await client.get_namespace_index(NS)
                nodeid = ua.NodeId(node_string("P1", "rul", "Value"), ns)
                for details in (raw(at(0), at(10)), processed(at(0), at(10), 1000, COUNT)):
                    params = ua.HistoryReadParameters(
                        HistoryReadDetails=details,
                        TimestampsToReturn=TTR.Both,
                        ReleaseContinuationPoints=False,
                        NodesToRead=[ua.HistoryReadValueId(NodeId=nodeid)],
                    )
                    (result,) = await client.uaclient.history_read(params)
                    assert result.StatusCode.value == StatusCodes.BadDataUnavailable
                # The session and the server go on.
                node = client.get_node(nodeid)
                live = await node.read_data_value(raise_on_bad_status=False)
                assert live.StatusCode.value == StatusCodes.BadWaitingForInitialData
            assert server.health().state == "ok"
        finally:
            await server.close()


async def test_without_a_history_service_nothing_has_history() -> None:
    slot = PredictionSlot("P1", "rul", "1.0.0", "a" * 64)
    server = PredictionServer("hmi", settings(), SinkContext("gw", (slot,)))
    await server.start()
    try:
        async with Client(server._settings.endpoint, timeout=10) as client:
            ns = await client.get_namespace_index(NS)
            node = client.get_node(ua.NodeId(node_string("P1", "rul", "Value"), ns))
            access = (await node.read_attribute(ua.AttributeIds.AccessLevel)).Value.Value
            assert access == ua.AccessLevel.CurrentRead.mask
            result = await node.history_read(raw(at(0), at(10)))
            assert result.StatusCode.value == StatusCodes.BadNotReadable
            flag = ua.NodeId(ua.ObjectIds.HistoryServerCapabilities_AccessHistoryDataCapability)
            assert await client.get_node(flag).read_value() is False
    finally:
        await server.close()


async def test_values_are_encoded_as_asyncua_encodes_them() -> None:
    """The server writes the DataValues of a HistoryRead itself (asyncua's encoder was most of
    its time): the same bytes as asyncua's HistoryData, for every value kind and timestamp
    choice, and the same microsecond as the live node's ``datetime.fromtimestamp``."""
    rng = random.Random(20)
    stamps = [BASE + rng.random() * 1e6 for _ in range(2000)]
    stamps += [BASE + k / 1e6 + 0.5e-6 for k in range(50)]  # half microseconds
    stamps += [0.000001, 86400.25, 4_102_444_800.999999]
    for ts in stamps:
        assert ticks(ts) == ua.datetime_to_win_epoch(datetime.fromtimestamp(ts, UTC)), ts
    kinds = [
        (1.25, ua.VariantType.Double, StatusCodes.Good),
        (-0.0, ua.VariantType.Double, StatusCodes.UncertainLastUsableValue),
        (math.inf, ua.VariantType.Double, StatusCodes.Good),
        (None, ua.VariantType.Double, StatusCodes.BadNoData),
        ("fault", ua.VariantType.String, StatusCodes.Good),
        ("Lagerschaden außen", ua.VariantType.String, StatusCodes.BadNoCommunication),
        ("", ua.VariantType.String, StatusCodes.Good),
        # Processed values: Count (Int32) and historian bits on the StatusCode.
        (7, ua.VariantType.Int32, StatusCodes.Good | DATA_VALUE | CALCULATED | PARTIAL),
        (2.5, ua.VariantType.Double, StatusCodes.UncertainDataSubNormal | DATA_VALUE),
    ]
    for timestamps in (TTR.Source, TTR.Server, TTR.Both):
        wire = wire_for(timestamps)
        ours = [
            wire(value, vtype.value, status, ticks(ts))
            for (value, vtype, status), ts in zip(kinds, stamps, strict=False)
        ]
        ours.append(placeholder(1_700_000_000_000_001, wire))
        theirs = []
        for (value, vtype, status), ts in zip(kinds, stamps, strict=False):
            when = datetime.fromtimestamp(ts, UTC)
            theirs.append(
                ua.DataValue(
                    ua.Variant(value, vtype) if value is not None else ua.Variant(),
                    StatusCode=ua.StatusCode(status),
                    SourceTimestamp=when if timestamps != TTR.Server else None,
                    ServerTimestamp=when if timestamps != TTR.Source else None,
                )
            )
        bound = datetime(2023, 11, 14, 22, 13, 20, 1, tzinfo=UTC)
        theirs.append(
            ua.DataValue(
                StatusCode=ua.StatusCode(StatusCodes.BadBoundNotFound),
                SourceTimestamp=bound if timestamps != TTR.Server else None,
                ServerTimestamp=bound if timestamps != TTR.Source else None,
            )
        )
        expected = extensionobject_to_binary(ua.HistoryData(DataValues=theirs))
        assert extensionobject_to_binary(history_data(ours)) == expected, timestamps
    assert extensionobject_to_binary(history_data([])) == extensionobject_to_binary(
        ua.HistoryData(DataValues=[])
    )


async def test_history_pages_read_the_asset_model_index(tmp_path: Path) -> None:
    """A page (either direction) seeks revision 0015's (asset, model, timestamp, id) index and
    reads in its order: no sort of the asset's rows, no visit of its other models' rows."""
    with temp_store("sqlite", tmp_path) as store:
        PredictionRepository(store).add_many(
            [prediction("P1", m, i, i, float(i)) for m in ("rul", "cls") for i in range(50)]
        )
        history = StoreHmiHistory(store)
        statements: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, sql: str, params: Any, *args: Any) -> None:
            statements.append((sql, params))

        event.listen(store.engine, "before_cursor_execute", capture)
        try:
            series = HistorySeries("P1", "rul", "Value")
            forward = history.values_now(series, (BASE + 5, -1), (BASE + 40, -1), False, 10)
            backward = history.values_now(series, (BASE + 5, -1), (BASE + 40, -1), True, 10)
        finally:
            event.remove(store.engine, "before_cursor_execute", capture)
        assert [v.value for v in forward] == [float(i) for i in range(5, 15)]
        assert [v.value for v in backward] == [float(i) for i in range(39, 29, -1)]
        for sql, params in statements[-2:]:
            with store.engine.connect() as conn:
                plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
            detail = " ".join(str(row[-1]) for row in plan)
            assert "USING INDEX ix_predictions_asset_model_timestamp" in detail, detail
            assert "TEMP B-TREE" not in detail, detail
