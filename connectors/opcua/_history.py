"""HistoryRead on the prediction variables (OPC UA Part 11), answered from the store.

``HistoryReader`` replaces asyncua's ``HistoryManager`` (an in-memory history fed by a
subscription of the server to itself; its continuation point is a bare timestamp, which skips
or repeats values of one instant). It answers for the Value, Score, Quality and DriftScore
variables of every prediction object from the core's ``HistoryService`` (``bridge.store.
hmihistory``), which reads the store's ``predictions`` table one page at a time:

- Raw (``ReadRawModifiedDetails``, IsReadModified false): StartTime/EndTime (DateTime.MinValue:
  not given; EndTime before StartTime: newest first), NumValuesPerNode, ReturnBounds (the value
  at or before the start and at or after the end, or a ``BadBoundNotFound`` placeholder), as
  Part 11 4.4 and 6.5.3 describe. The end of the range is excluded; equal start and end read the
  values of that instant. IsReadModified true answers empty modified data (``GoodNoData``):
  history is never modified (HistoryUpdate is refused).
- Processed (``ReadProcessedDetails``): Average, Minimum, Maximum (numbers) and Count (also
  text) per ProcessingInterval, computed by the database (see ``_processed_value`` for what is
  simplified against Part 13). Any other aggregate: ``BadAggregateNotSupported``.
- Events (``ReadEventDetails``): passed to ``events`` (the alarms' history) when one is set,
  else ``BadHistoryOperationUnsupported``.

Each value has the StatusCode the live node showed (``encode.py``) and the prediction's time as
SourceTimestamp and ServerTimestamp (the store keeps no other time). A response holds at most
``page`` values over all its nodes (``MaxReturnDataValues``); the rest follows through
continuation points. A continuation point carries the read's position ((timestamp, row id) of
the last value sent), signed with a key made at start and bound to the node and the request,
so the server keeps no state per read; a released point is refused until it expires
(``CURSOR_TTL_S``). A store error answers ``BadDataUnavailable`` for that node (logged), any
other failure ``BadInternalError``: neither reaches the session.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.server.history import HistoryManager
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from bridge.connectors.opcua._historycursor import CURSOR_TTL_S, Cursor, Cursors, fingerprint_of
from bridge.connectors.opcua._historywire import (
    TICKS_AT_EPOCH,
    Encoder,
    Wire,
    history_data,
    placeholder,
    ticks,
    wire_for,
)
from bridge.connectors.opcua.encode import FIELDS, STATUS_FOR_QUALITY, _slot_value, value_type
from bridge.errors import StoreError
from bridge.types import (
    HistoryBucket,
    HistoryField,
    HistoryKey,
    HistorySeries,
    HistoryService,
    HistoryValue,
    PredictionSlot,
)

__all__ = ["CURSOR_TTL_S", "HISTORY_FIELDS", "PAGE", "EventHistory", "HistoryReader", "page_for"]

log = structlog.get_logger(__name__)

HISTORY_FIELDS: tuple[HistoryField, ...] = ("Value", "Score", "Quality", "DriftScore")
# Values per HistoryRead response, over all its nodes: ~30 bytes each on the wire (a double
# with two timestamps), 300 KB per response; a 100,000-value read is 10 round trips.
PAGE = 10_000
# What asyncua advertises in OperationLimits/MaxNodesPerHistoryReadData.
MAX_NODES = 10_000

# The alarms' event history: (details, node, release continuation points) -> result.
EventHistory = Callable[
    [ua.ReadEventDetails, ua.HistoryReadValueId, bool], Awaitable[ua.HistoryReadResult]
]

_TTR = ua.TimestampsToReturn
_ACCESS = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask
_WIN_EPOCH = ua.get_win_epoch()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Sentinel row ids: a key (t, -1) is a pure time threshold, as low (ts >= t) or high (ts < t).
_ANY = -1
_AGGREGATES = {
    ObjectIds.AggregateFunction_Average: "average",
    ObjectIds.AggregateFunction_Minimum: "minimum",
    ObjectIds.AggregateFunction_Maximum: "maximum",
    ObjectIds.AggregateFunction_Count: "count",
}
# StatusCode bits of processed values (Part 4 7.39.1): InfoType DataValue, historian bits.
_DATA_VALUE_INFO = 0x400
_CALCULATED = 0x1
_PARTIAL = 0x4


def _code(code: int) -> ua.StatusCode:
    return ua.StatusCode(cast(Any, code))


def _result(code: int, data: Any = None, point: bytes | None = None) -> ua.HistoryReadResult:
    return ua.HistoryReadResult(
        StatusCode=_code(code), ContinuationPoint=cast(Any, point), HistoryData=data
    )


# --- time --------------------------------------------------------------------------------


def _micros(when: datetime | None) -> int | None:
    """Microseconds since the UNIX epoch (exact: datetimes resolve microseconds); None for an
    unset time (DateTime.MinValue decodes as 1601-01-01)."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when <= _WIN_EPOCH:
        return None
    return (when - _EPOCH) // timedelta(microseconds=1)


# A stored timestamp (a double) shows as the microsecond it rounds to (encode.py); borders of a
# read are compared in those microseconds: half a microsecond away from the integer.
def _from(us: int) -> HistoryKey:
    """As low: the values at or after microsecond ``us``; as high: those before it."""
    return ((us - 0.5) / 1_000_000, _ANY)


def _past(us: int) -> HistoryKey:
    """As low: the values after microsecond ``us``; as high: those at or before it."""
    return ((us + 0.5) / 1_000_000, _ANY)


# --- values ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    slot: PredictionSlot
    series: HistorySeries


def _encoder(entry: _Entry, wire: Wire) -> Encoder:
    """HistoryValue -> DataValue bytes as the live node showed it (``encode_prediction``)."""
    field = entry.series.field
    slot = entry.slot
    vtype = (value_type(slot) if field == "Value" else FIELDS[field]).value
    good = StatusCodes.Good
    no_data = StatusCodes.BadNoData
    status_for = STATUS_FOR_QUALITY

    if field == "Value":

        def value(v: HistoryValue) -> bytes:
            shown, override = _slot_value(slot, v.value)
            status = override if override is not None else status_for[v.quality]
            if shown is None and status == good:
                status = no_data
            return wire(shown, vtype, status, ticks(v.timestamp))

        return value
    if field == "Score":

        def score(v: HistoryValue) -> bytes:
            status = status_for[v.quality] if v.value is not None else no_data
            return wire(v.value, vtype, status, ticks(v.timestamp))

        return score

    def plain(v: HistoryValue) -> bytes:
        return wire(v.value, vtype, good, ticks(v.timestamp))

    return plain


# --- raw ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Raw:
    """A raw read: from ``origin`` towards ``limit`` (None: open), forwards or backwards;
    ``per_response``: NumValuesPerNode with both times given (0: no limit); ``total``: with
    one time given, the values of the whole read."""

    forward: bool
    origin: int
    limit: int | None
    per_response: int
    total: int
    bounds: bool

    def domain(self) -> tuple[HistoryKey | None, HistoryKey | None]:
        """(low, high) keys of the values read: the start included, the end excluded (Part 11
        3.1.8), both included when start equals end."""
        o, lim = self.origin, self.limit
        if self.forward:
            if lim is None:
                return _from(o), None
            return _from(o), (_past(o) if lim == o else _from(lim))
        return (None if lim is None else _past(lim)), _past(o)


def _raw_plan(details: ua.ReadRawModifiedDetails) -> _Raw | int:
    """The read the details ask for, or the StatusCode refusing them."""
    start, end = _micros(details.StartTime), _micros(details.EndTime)
    n = int(details.NumValuesPerNode or 0)
    bounds = bool(details.ReturnBounds)
    # Part 11 6.5.3.2: two of StartTime, EndTime and NumValuesPerNode.
    if start is None and end is None:
        return StatusCodes.BadInvalidTimestampArgument
    if (start is None or end is None) and n == 0:
        return StatusCodes.BadInvalidTimestampArgument
    if start is not None and end is not None:
        return _Raw(start <= end, start, end, n, 0, bounds)
    if start is not None:
        return _Raw(True, start, None, 0, n, bounds)
    assert end is not None
    return _Raw(False, end, None, 0, n, bounds)


# --- processed ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Processed:
    aggregate: str
    origin: int
    stop: int
    width: int
    intervals: int

    def interval(self, k: int) -> tuple[int, int]:
        """(start, end) of interval ``k`` in reading order (backwards: start > end)."""
        if self.stop > self.origin:
            t0 = self.origin + k * self.width
            return t0, min(t0 + self.width, self.stop)
        t0 = self.origin - k * self.width
        return t0, max(t0 - self.width, self.stop)


def _processed_plan(
    details: ua.ReadProcessedDetails, aggregate: ua.NodeId, series: HistorySeries
) -> _Processed | int:
    start, end = _micros(details.StartTime), _micros(details.EndTime)
    if start is None or end is None:
        return StatusCodes.BadInvalidTimestampArgument
    if start == end:
        return StatusCodes.BadInvalidArgument
    identifier: Any = aggregate.Identifier
    ns0 = aggregate.NamespaceIndex == 0 and isinstance(identifier, int)
    name = _AGGREGATES.get(identifier) if ns0 else None
    numeric = series.field in ("Score", "DriftScore") or (
        series.field == "Value" and not series.text
    )
    if name is None or (name != "count" and not numeric):
        return StatusCodes.BadAggregateNotSupported
    interval_ms = float(details.ProcessingInterval or 0.0)
    if not math.isfinite(interval_ms) or interval_ms < 0:
        return StatusCodes.BadInvalidArgument
    span = abs(end - start)
    # ProcessingInterval 0: one interval over the whole range (Part 11 6.5.4.1).
    width = round(interval_ms * 1000) if interval_ms > 0 else span
    if width <= 0:
        return StatusCodes.BadInvalidArgument
    return _Processed(name, start, end, width, -(-span // width))


def _processed_value(
    plan: _Processed,
    k: int,
    bucket: HistoryBucket | None,
    span: tuple[int, int] | None,
) -> tuple[Any, ua.VariantType, int]:
    """(value, type, StatusCode) of interval ``k``.

    Simplified against Part 13 (documented in the README): only Good values are aggregated
    (the prediction's quality Good and a value); an interval that also held other values is
    ``UncertainDataSubNormal`` (PercentDataGood 100), one without Good values ``BadNoData``.
    Average and Count are Calculated, Minimum and Maximum Raw (at the interval's start time);
    a last interval shorter than ProcessingInterval is Partial. Count is 0 (Good) for an empty
    interval inside the node's data, ``BadNoData`` before its first or after its last value.
    """
    t0, t1 = plan.interval(k)
    partial = _PARTIAL if abs(t1 - t0) < plan.width else 0
    good = bucket.good if bucket is not None else 0
    other = bucket.other if bucket is not None else 0
    base = StatusCodes.Good if other == 0 else StatusCodes.UncertainDataSubNormal
    if plan.aggregate == "count":
        low, high = min(t0, t1), max(t0, t1)
        # [low, high) forwards, (low, high] backwards: outside the node's data or not.
        outside = (
            span is None
            or (high <= span[0] if t1 > t0 else high < span[0])
            or (low > span[1] if t1 > t0 else low >= span[1])
        )
        if outside or (good == 0 and other > 0):
            return None, ua.VariantType.Int32, StatusCodes.BadNoData
        return good, ua.VariantType.Int32, base | _DATA_VALUE_INFO | _CALCULATED | partial
    if bucket is None or good == 0:
        return None, ua.VariantType.Double, StatusCodes.BadNoData
    if plan.aggregate == "average":
        value, bits = bucket.average, _CALCULATED
    elif plan.aggregate == "minimum":
        value, bits = bucket.minimum, 0
    else:
        value, bits = bucket.maximum, 0
    return value, ua.VariantType.Double, base | _DATA_VALUE_INFO | bits | partial


# --- the manager -------------------------------------------------------------------------


class HistoryReader(HistoryManager):
    """asyncua's ``HistoryManager`` slot (``iserver.history_manager``), answering HistoryRead
    from ``service`` (None: no variable has history). ``historize`` gives a slot's variables
    history; ``events`` (the alarms' event history) may be set at any time."""

    def __init__(
        self,
        server: Server,
        service: HistoryService | None,
        *,
        page: int = PAGE,
        ttl_s: float = CURSOR_TTL_S,
    ) -> None:
        super().__init__(server.iserver)
        self._aspace = server.iserver.aspace
        self._service = service
        self.page = page
        self.events: EventHistory | None = None
        self._entries: dict[ua.NodeId, _Entry] = {}
        self._cursors = Cursors(ttl_s)
        self.counters = {"reads": 0, "values": 0, "store_errors": 0, "errors": 0}

    async def install(self, server: Server) -> None:
        """Answer the server's HistoryRead from now on and say so in HistoryServerCapabilities
        (and list the aggregates in both AggregateFunctions folders)."""
        server.iserver.history_manager = self
        has = self._service is not None
        capabilities: list[tuple[int, Any, ua.VariantType]] = [
            (ObjectIds.HistoryServerCapabilities_AccessHistoryDataCapability, has, _B),
            (ObjectIds.HistoryServerCapabilities_AccessHistoryEventsCapability, False, _B),
            (ObjectIds.HistoryServerCapabilities_MaxReturnDataValues, self.page, _U32),
            (ObjectIds.HistoryServerCapabilities_ServerTimestampSupported, has, _B),
        ]
        capabilities += [(i, False, _B) for i in _NOT_SUPPORTED]
        for identifier, value, vtype in capabilities:
            await self._write(_ns0(identifier), ua.Variant(value, vtype))
        if not has:
            return
        for folder in (
            ObjectIds.HistoryServerCapabilities_AggregateFunctions,
            ObjectIds.Server_ServerCapabilities_AggregateFunctions,
        ):
            node = server.get_node(_ns0(folder))
            for aggregate in _AGGREGATES:
                await node.add_reference(_ns0(aggregate), ObjectIds.Organizes)

    async def historize(self, slot: PredictionSlot, ids: Mapping[str, ua.NodeId]) -> None:
        """Give the slot's Value, Score, Quality and DriftScore history: AccessLevel and
        UserAccessLevel CurrentRead|HistoryRead, Historizing true, HistoryRead answered.
        Without a history service nothing changes (the variables stay CurrentRead only)."""
        if self._service is None:
            return
        access = ua.Variant(_ACCESS, ua.VariantType.Byte)
        for field in HISTORY_FIELDS:
            nodeid = ids.get(field)
            if nodeid is None:
                continue
            await self._write(nodeid, access, AttributeIds.AccessLevel)
            await self._write(nodeid, access, AttributeIds.UserAccessLevel)
            await self._write(nodeid, ua.Variant(True, _B), AttributeIds.Historizing)
            series = HistorySeries(slot.asset, slot.model, field, bool(slot.labels))
            self._entries[nodeid] = _Entry(slot, series)

    async def serve_events(self, events: EventHistory) -> None:
        """Pass ReadEventDetails to ``events`` and advertise AccessHistoryEventsCapability."""
        self.events = events
        node = _ns0(ObjectIds.HistoryServerCapabilities_AccessHistoryEventsCapability)
        await self._write(node, ua.Variant(True, _B))

    async def _write(
        self, nodeid: ua.NodeId, value: ua.Variant, attribute: Any = AttributeIds.Value
    ) -> None:
        # The address space's own call: the server's wrapper drops the StatusCode.
        status = await self._aspace.write_attribute_value(nodeid, attribute, ua.DataValue(value))
        status.check()

    async def read_history(self, params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        nodes: Sequence[ua.HistoryReadValueId] = params.NodesToRead or []
        if not nodes:
            raise ServiceError(StatusCodes.BadNothingToDo)
        if len(nodes) > MAX_NODES:
            raise ServiceError(StatusCodes.BadTooManyOperations)
        details = params.HistoryReadDetails
        release = bool(params.ReleaseContinuationPoints)
        if isinstance(details, ua.ReadEventDetails):
            return [await self._events(details, node, release) for node in nodes]
        # Part 4 5.10.3.2: Neither is not valid for HistoryRead.
        if params.TimestampsToReturn not in (_TTR.Source, _TTR.Server, _TTR.Both):
            raise ServiceError(StatusCodes.BadTimestampsToReturnInvalid)
        aggregates: list[ua.NodeId | None] = [None] * len(nodes)
        if isinstance(details, ua.ReadProcessedDetails):
            if len(details.AggregateType or []) != len(nodes):
                raise ServiceError(StatusCodes.BadAggregateListMismatch)
            aggregates = list(details.AggregateType)
        self.counters["reads"] += 1
        room = [self.page]  # values left for this response, over all its nodes
        results = []
        for node, aggregate in zip(nodes, aggregates, strict=True):
            results.append(await self._guarded(details, node, aggregate, params, room))
        return results

    async def _events(
        self, details: ua.ReadEventDetails, node: ua.HistoryReadValueId, release: bool
    ) -> ua.HistoryReadResult:
        events = self.events
        if events is None:
            return _result(StatusCodes.BadHistoryOperationUnsupported)
        try:
            return await events(details, node, release)
        except Exception:
            self.counters["errors"] += 1
            log.exception("history_events_failed", node=node.NodeId.to_string())
            return _result(StatusCodes.BadInternalError)

    async def _guarded(
        self,
        details: Any,
        node: ua.HistoryReadValueId,
        aggregate: ua.NodeId | None,
        params: ua.HistoryReadParameters,
        room: list[int],
    ) -> ua.HistoryReadResult:
        try:
            return await self._read(details, node, aggregate, params, room)
        except StoreError as exc:
            # The archive is offline for now (Part 11: Bad_DataUnavailable); the HMI retries.
            self.counters["store_errors"] += 1
            log.warning("history_store_error", node=node.NodeId.to_string(), error=str(exc))
            return _result(StatusCodes.BadDataUnavailable)
        except Exception:
            self.counters["errors"] += 1
            log.exception("history_read_failed", node=node.NodeId.to_string())
            return _result(StatusCodes.BadInternalError)

    async def _read(
        self,
        details: Any,
        node: ua.HistoryReadValueId,
        aggregate: ua.NodeId | None,
        params: ua.HistoryReadParameters,
        room: list[int],
    ) -> ua.HistoryReadResult:
        nodeid = node.NodeId
        if nodeid not in self._aspace:
            self._entries.pop(nodeid, None)  # a slot a reload removed
            return _result(StatusCodes.BadNodeIdUnknown)
        if isinstance(details, ua.ReadAtTimeDetails | ua.ReadAnnotationDataDetails):
            return _result(StatusCodes.BadHistoryOperationUnsupported)
        if not isinstance(details, ua.ReadRawModifiedDetails | ua.ReadProcessedDetails):
            return _result(StatusCodes.BadHistoryOperationInvalid)
        entry = self._entries.get(nodeid)
        service = self._service
        if entry is None or service is None:
            # The node's AccessLevel has no HistoryRead (what node-opcua and the OPC
            # Foundation's .NET stack answer too).
            return _result(StatusCodes.BadNotReadable)
        fingerprint = fingerprint_of(nodeid, details, aggregate)
        cursor = Cursor()
        point = node.ContinuationPoint
        if point:
            opened = self._cursors.open(point, fingerprint)
            if opened is None:
                return _result(StatusCodes.BadContinuationPointInvalid)
            if params.ReleaseContinuationPoints:
                self._cursors.release(point)
                return _result(StatusCodes.Good)
            cursor = opened
        elif params.ReleaseContinuationPoints:
            return _result(StatusCodes.Good)
        timestamps = params.TimestampsToReturn
        if isinstance(details, ua.ReadRawModifiedDetails):
            plan = _raw_plan(details)
            if isinstance(plan, int):
                return _result(plan)
            if details.IsReadModified:
                if details.ReturnBounds:  # Part 11 6.5.3.3
                    return _result(StatusCodes.BadInvalidArgument)
                return _result(StatusCodes.GoodNoData, ua.HistoryModifiedData())
            parts, after = await self._raw(service, entry, plan, cursor, room[0], timestamps)
        else:
            assert aggregate is not None
            processed = _processed_plan(details, aggregate, entry.series)
            if isinstance(processed, int):
                return _result(processed)
            parts, after = await self._processed(
                service, entry, processed, cursor, room[0], timestamps
            )
        count = len(parts)
        room[0] -= count
        self.counters["values"] += count
        next_point = self._cursors.issue(fingerprint, after) if after is not None else None
        # Part 11 6.3: nothing in the range at all.
        code = StatusCodes.GoodNoData if not count and not point and not next_point else 0
        return _result(code, history_data(parts), next_point)

    async def _raw(
        self,
        service: HistoryService,
        entry: _Entry,
        plan: _Raw,
        cursor: Cursor,
        room: int,
        timestamps: ua.TimestampsToReturn,
    ) -> tuple[list[bytes], Cursor | None]:
        """One page of a raw read, encoded: at most ``room`` values (and NumValuesPerNode),
        then the cursor to go on from (None: the read is complete)."""
        cap = room
        if plan.per_response:
            cap = min(cap, plan.per_response)
        if plan.total:
            cap = min(cap, plan.total - cursor.count)
        series = entry.series
        wire = wire_for(timestamps)
        encode = _encoder(entry, wire)
        out: list[bytes] = []
        started = cursor.started or not plan.bounds
        done, key = cursor.done, cursor.key
        if not started and len(out) < cap:
            at_origin, bound = await self._start_bound(service, series, plan)
            if bound is not None:
                out.append(encode(bound))
            elif not at_origin:
                out.append(placeholder(plan.origin, wire))
            started = True
        if started and not done and len(out) < cap:
            want = cap - len(out)
            low, high = plan.domain()
            if key is not None:  # after the last value sent, in reading order
                if plan.forward:
                    low = (key[0], key[1] + 1)
                else:
                    high = (key[0], key[1] - 1)
            # One more than wanted tells whether the read goes on.
            rows = await service.values(series, low, high, not plan.forward, want + 1)
            done = len(rows) <= want
            rows = rows[:want]
            # ~2 µs a value: a 10,000-value page in a worker thread, so the loop (live values,
            # other clients) is held at most a GIL switch interval at a time, not ~20 ms.
            out += await asyncio.to_thread(list, map(encode, rows))
            if rows:
                key = (rows[-1].timestamp, rows[-1].row_id)
        finished = False
        if done:
            if plan.bounds and plan.limit is not None:
                if len(out) < cap:
                    bound = await self._end_bound(service, series, plan)
                    out.append(
                        encode(bound) if bound is not None else placeholder(plan.limit, wire)
                    )
                    finished = True
            else:
                finished = True
        count = cursor.count + len(out)
        if finished or (plan.total and count >= plan.total):
            return out, None
        return out, Cursor(started, done, key, count)

    async def _start_bound(
        self, service: HistoryService, series: HistorySeries, plan: _Raw
    ) -> tuple[bool, HistoryValue | None]:
        """(a value is at the start itself, the bound to send before the values): the value
        at or before the start (forwards; at or after it backwards). One at the start is the
        first value read, so nothing is sent before it (Part 11 3.1.3)."""
        o = plan.origin
        if plan.forward:
            found = await service.values(series, None, _past(o), True, 1)
            at_origin = bool(found) and found[0].timestamp >= _from(o)[0]
        else:
            found = await service.values(series, _from(o), None, False, 1)
            at_origin = bool(found) and found[0].timestamp < _past(o)[0]
        if at_origin or not found:
            return at_origin, None
        return False, found[0]

    async def _end_bound(
        self, service: HistoryService, series: HistorySeries, plan: _Raw
    ) -> HistoryValue | None:
        """The first value beyond the read's end: at or after it (forwards; before it
        backwards); after it when start equals end."""
        lim = plan.limit
        assert lim is not None
        if plan.forward:
            low = _past(lim) if lim == plan.origin else _from(lim)
            found = await service.values(series, low, None, False, 1)
        else:
            found = await service.values(series, None, _past(lim), True, 1)
        return found[0] if found else None

    async def _processed(
        self,
        service: HistoryService,
        entry: _Entry,
        plan: _Processed,
        cursor: Cursor,
        room: int,
        timestamps: ua.TimestampsToReturn,
    ) -> tuple[list[bytes], Cursor | None]:
        """One page of a processed read, encoded: at most ``room`` intervals."""
        first = cursor.count
        count = min(plan.intervals - first, room)
        if count <= 0:
            return [], (cursor if first < plan.intervals else None)
        series = entry.series
        found = await service.buckets(series, plan.origin, plan.stop, plan.width, first, count)
        span: tuple[int, int] | None = None
        if plan.aggregate == "count":
            stored = await service.span(series)
            if stored is not None:
                span = (round(stored[0] * 1_000_000), round(stored[1] * 1_000_000))
        wire = wire_for(timestamps)
        buckets = {b.index: b for b in found}
        # Up to 10,000 intervals: encoded in a worker thread, as raw values are.
        out = await asyncio.to_thread(_intervals, plan, first, count, buckets, span, wire)
        after = first + count
        return out, (replace(cursor, count=after) if after < plan.intervals else None)


def _intervals(
    plan: _Processed,
    first: int,
    count: int,
    buckets: Mapping[int, HistoryBucket],
    span: tuple[int, int] | None,
    wire: Wire,
) -> list[bytes]:
    """Intervals ``first`` .. ``first + count - 1`` as DataValues (timestamp: their start)."""
    out = []
    for k in range(first, first + count):
        value, vtype, code = _processed_value(plan, k, buckets.get(k), span)
        ticks = plan.interval(k)[0] * 10 + TICKS_AT_EPOCH
        out.append(wire(value, vtype.value, code, ticks))
    return out


_B = ua.VariantType.Boolean
_U32 = ua.VariantType.UInt32
# Writing history (and annotations) is refused: HistoryUpdate is not allowed to anyone.
_NOT_SUPPORTED = (
    ObjectIds.HistoryServerCapabilities_InsertDataCapability,
    ObjectIds.HistoryServerCapabilities_ReplaceDataCapability,
    ObjectIds.HistoryServerCapabilities_UpdateDataCapability,
    ObjectIds.HistoryServerCapabilities_DeleteRawCapability,
    ObjectIds.HistoryServerCapabilities_DeleteAtTimeCapability,
    ObjectIds.HistoryServerCapabilities_InsertAnnotationCapability,
    ObjectIds.HistoryServerCapabilities_InsertEventCapability,
    ObjectIds.HistoryServerCapabilities_ReplaceEventCapability,
    ObjectIds.HistoryServerCapabilities_UpdateEventCapability,
    ObjectIds.HistoryServerCapabilities_DeleteEventCapability,
)


def _ns0(identifier: int) -> ua.NodeId:
    return ua.NodeId(cast(Any, identifier), cast(Any, 0))


def page_for(max_message_size: int) -> int:
    """Values per response for the server's message size: up to ``PAGE``, at most one per
    128 bytes (a DataValue with two timestamps and a label of up to ~100 characters)."""
    return max(100, min(PAGE, max_message_size // 128))
