"""Backfill: after a reconnect, read the outage gap of each tag from the server's history.

For every tag with a gap (the last value the gateway saw before the loss, the first one after
it), the tags whose ``AccessLevel`` has the HistoryRead bit are read with HistoryRead
(ReadRawModifiedDetails) over the open interval between the two, oldest first, following
continuation points, within the mapping's budget (values per tag, values per reconnect, gap
length, time). What is read becomes ``TagSample(historical=True)`` in time order, to be handed
on *before* the live values, so the windows get every sample in order.

A server without history, a node that does not historize, or a history read that fails is not
an error of the source: those tags simply keep their gap; the log says how much was filled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError

from bridge.connectors.opcua.config import BackfillSettings
from bridge.types import TagSample

__all__ = ["BackfillReport", "Gap", "read_gaps"]

log = structlog.get_logger(__name__)

_HISTORY_READ = 1 << ua.AccessLevel.HistoryRead.value

# (handle, DataValue, received time) -> the tag's sample; the source's conversion.
SampleMaker = Callable[[int, ua.DataValue, float], TagSample]


@dataclass(frozen=True, slots=True)
class Gap:
    """One tag's outage: values strictly after ``after`` and strictly before ``before`` (epoch
    seconds of the source timestamps) are missing."""

    handle: int
    node: ua.NodeId
    after: float
    before: float


@dataclass(slots=True)
class BackfillReport:
    tags: int = 0  # tags with a gap
    historized: int = 0  # of those, tags whose server keeps history
    values: int = 0
    truncated: list[int] = field(default_factory=list)  # handles cut by a budget
    failed: dict[int, str] = field(default_factory=dict)  # handle -> status of a failed read
    timed_out: bool = False


async def read_gaps(
    client: Client,
    gaps: Sequence[Gap],
    settings: BackfillSettings,
    timeout_s: float,
    sample: SampleMaker,
) -> tuple[list[TagSample], BackfillReport]:
    """The historical samples of ``gaps`` (per tag in time order) and what was done."""
    report = BackfillReport(tags=len(gaps))
    out: list[TagSample] = []
    if not gaps:
        return out, report
    try:
        async with asyncio.timeout(settings.max_duration_s):
            readable = await _historized(client, gaps, timeout_s)
            report.historized = len(readable)
            await _read(client, readable, settings, timeout_s, sample, out, report)
    except TimeoutError:
        report.timed_out = True
    return out, report


async def _historized(client: Client, gaps: Sequence[Gap], timeout_s: float) -> list[Gap]:
    """The gaps whose node's AccessLevel has HistoryRead (one batched Read)."""
    nodes = [g.node for g in gaps]
    async with asyncio.timeout(timeout_s):
        levels = await client.uaclient.read_attributes(nodes, AttributeIds.AccessLevel)
    keep = []
    for gap, dv in zip(gaps, levels, strict=True):
        raw: Any = dv.Value.Value if dv.Value is not None else None
        if isinstance(raw, int) and raw & _HISTORY_READ:
            keep.append(gap)
    return keep


async def _read(
    client: Client,
    gaps: list[Gap],
    settings: BackfillSettings,
    timeout_s: float,
    sample: SampleMaker,
    out: list[TagSample],
    report: BackfillReport,
) -> None:
    budget = settings.max_values
    # Tags are read in groups that share one interval request shape: each node has its own
    # interval, so a request carries one ReadRawModifiedDetails; group by identical intervals
    # (after a whole-session loss that is every tag of the session), else one node per call.
    groups: dict[tuple[float, float], list[Gap]] = {}
    for gap in gaps:
        # Servers read [start, end] inclusive: start 1 us after the value seen live (OPC UA
        # times have 100 ns steps), so the budget is not spent on it.
        start = max(gap.after + 1e-6, gap.before - settings.max_gap_s)
        groups.setdefault((start, gap.before), []).append(gap)
    for (start, end), members in groups.items():
        for first in range(0, len(members), settings.nodes_per_call):
            if budget <= 0:
                report.truncated.extend(g.handle for g in members[first:])
                break
            chunk = members[first : first + settings.nodes_per_call]
            got = await _read_chunk(client, chunk, start, end, settings, budget, timeout_s, report)
            received = time.time()
            for gap, values in zip(chunk, got, strict=True):
                for dv in values:
                    s = sample(gap.handle, dv, received)
                    t = s.source_time if s.source_time is not None else s.server_time
                    # Servers may include the bounds (or values stamped at them): the gap is
                    # open on both sides, those values were seen live.
                    if t is None or not gap.after < t < gap.before:
                        continue
                    s.historical = True
                    out.append(s)
                    report.values += 1
                    budget -= 1


async def _read_chunk(
    client: Client,
    chunk: list[Gap],
    start: float,
    end: float,
    settings: BackfillSettings,
    budget: int,
    timeout_s: float,
    report: BackfillReport,
) -> list[list[ua.DataValue]]:
    """Raw history of ``chunk`` over [start, end], following continuation points while the
    per-tag and per-reconnect budgets allow; unfinished continuation points are released."""
    per_tag = settings.max_values_per_tag
    details = ua.ReadRawModifiedDetails()
    details.IsReadModified = False
    details.StartTime = _datetime(start)
    details.EndTime = _datetime(end)
    # Per response: at most a tag's share of the reconnect budget, so one call cannot overshoot
    # it much; the rest comes page by page through continuation points.
    details.NumValuesPerNode = max(1, min(settings.values_per_call, per_tag, budget // len(chunk)))
    details.ReturnBounds = False
    values: list[list[ua.DataValue]] = [[] for _ in chunk]
    points: dict[int, bytes] = {}  # position in chunk -> continuation point
    pending = list(range(len(chunk)))
    while pending:
        params = ua.HistoryReadParameters()
        params.HistoryReadDetails = details
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        params.ReleaseContinuationPoints = False
        params.NodesToRead = [
            ua.HistoryReadValueId(NodeId=chunk[i].node, ContinuationPoint=points.get(i))
            for i in pending
        ]
        try:
            async with asyncio.timeout(timeout_s):
                results = await client.uaclient.history_read(params)
        except UaError as exc:  # the whole request refused (e.g. BadHistoryOperationUnsupported)
            for i in pending:
                report.failed[chunk[i].handle] = type(exc).__name__
            return values
        following: list[int] = []
        for i, result in zip(pending, results, strict=True):
            if not result.StatusCode.is_good():
                report.failed[chunk[i].handle] = result.StatusCode.name
                points.pop(i, None)
                continue
            data = getattr(result.HistoryData, "DataValues", None) or []
            values[i].extend(data)
            point = result.ContinuationPoint
            # A page without values is no progress (a server may hand the same continuation
            # point for every page, node-opcua does: comparing points would stop early).
            if point and data:
                if len(values[i]) >= per_tag or budget - sum(map(len, values)) <= 0:
                    report.truncated.append(chunk[i].handle)
                    points[i] = point
                    continue
                points[i] = point
                following.append(i)
            elif point:
                points[i] = point  # no progress: released below, the rest stays a hole
                report.truncated.append(chunk[i].handle)
            else:
                points.pop(i, None)
                if len(data) >= details.NumValuesPerNode:
                    # As many as asked for and no continuation point: some servers (asyncua's
                    # own history) cut there without one. More may be left: say so.
                    report.truncated.append(chunk[i].handle)
        for i in [i for i in points if i not in following]:
            # Budget reached (or no progress) with values left: free its continuation point.
            await _release(client, details, chunk[i].node, points.pop(i), timeout_s)
        pending = following
    # The last page may go past a tag's budget: keep its oldest values.
    return [v[:per_tag] for v in values]


async def _release(
    client: Client,
    details: ua.ReadRawModifiedDetails,
    node: ua.NodeId,
    point: bytes,
    timeout_s: float,
) -> None:
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = details
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    params.ReleaseContinuationPoints = True
    params.NodesToRead = [ua.HistoryReadValueId(NodeId=node, ContinuationPoint=point)]
    try:
        async with asyncio.timeout(timeout_s):
            await client.uaclient.history_read(params)
    except (TimeoutError, UaError) as exc:  # the server frees it at session end anyway
        log.debug("continuation_point_not_released", error=repr(exc))


def _datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
