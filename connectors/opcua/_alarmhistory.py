"""Events history of the prediction alarms (HistoryRead with ``ReadEventDetails``, Part 11
6.5.2), read from the store's alerts: each alert's raise, acknowledgement and confirmation,
as the events the alarm reported live (same event type, EventIds and fields).

Asked of an alarm or its prediction object: that asset+model's; of an asset folder: its
models'; of the Predictions folder or the Server object: every classifier's. The answer holds
the client's select clauses (asyncua's ``Event.to_event_fields``) for the events that pass its
where clause (asyncua's evaluator), oldest first, or newest first when EndTime is before
StartTime (or only EndTime is given). ``NumValuesPerNode`` (0: no limit) caps a response at
``PAGE`` events at most; the rest follows through continuation points, each the position of
the page's last event (the store reads three bounded pages per call, never the whole range).

Not stored, so not in the history: when an alarm went inactive (the alert table keeps no
clearing), comments other than the acknowledgement's and confirmation's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes

from bridge.connectors.opcua._alarmevents import build_event
from bridge.connectors.opcua._alarmnodes import AlarmIds, source_name
from bridge.connectors.opcua._alarmstate import AlertInfo, Snapshot, event_id, message
from bridge.connectors.opcua._eventfilter import SubtypeWhereClause
from bridge.errors import BridgeError
from bridge.types import AlarmEvent, AlarmService

__all__ = ["PAGE", "AlarmHistory", "Scope"]

log = structlog.get_logger(__name__)

# Events per response at most (an event with every field is ~1 KB on the wire).
PAGE = 1000
_WIN_EPOCH = ua.get_win_epoch()


@dataclass(frozen=True, slots=True)
class Scope:
    """The alarms a node's events history covers: per model its fault labels, on ``assets``
    (None: any)."""

    faults: Mapping[str, tuple[str, ...]]
    assets: tuple[str, ...] | None


Describe = Callable[[str, str], tuple[AlarmIds, int]]  # (asset, model) -> ids, severity


def _epoch(when: datetime | None) -> float | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return None if when <= _WIN_EPOCH else when.timestamp()


def _result(code: int, events: list[ua.HistoryEventFieldList] | None = None) -> Any:
    result = ua.HistoryReadResult()
    result.StatusCode = ua.StatusCode(cast(Any, code))
    if events is not None:
        result.HistoryData = ua.HistoryEvent(Events=events)
    return result


def snapshot(event: AlarmEvent, severity: int) -> Snapshot:
    """The alarm as a stored moment shows it: raised (active, unacknowledged), acknowledged
    (unconfirmed) or confirmed. Whether it was still active then is not stored (None)."""
    r = event.record
    alert = AlertInfo(
        r.prediction_id, r.label, r.previous, r.raised_at, r.version or "", r.reason, r.alert_id
    )
    kind = event.kind
    acked = kind != "raised"
    confirmed = kind != "acknowledged"
    if kind == "confirmed":
        user, comment = r.confirmed_by or "", r.confirm_comment or ""
    elif kind == "acknowledged":
        user, comment = r.acked_by or "", r.ack_comment or ""
    else:
        user, comment = "", ""
    return Snapshot(
        kind=kind,
        event_id=event_id(r.prediction_id, kind),
        time=event.time,
        active=True if kind == "raised" else None,
        acked=acked,
        confirmed=confirmed,
        retain=True if kind != "confirmed" else None,
        severity=severity,
        message=message(r.asset, r.model, alert),
        comment=comment,
        user=user,
        alert=alert,
        active_since=r.raised_at,
        acked_at=r.acked_at if acked else None,
        confirmed_at=r.confirmed_at if kind == "confirmed" else None,
    )


class AlarmHistory:
    def __init__(
        self,
        server: Server,
        service: AlarmService,
        scope_of: Callable[[ua.NodeId], Scope | None],
        describe: Describe,
    ) -> None:
        self._server = server
        self._service = service
        self._scope_of = scope_of
        self._describe = describe
        self.counters = {"event_reads": 0, "events": 0}

    async def read(
        self, details: ua.ReadEventDetails, node: ua.HistoryReadValueId, release: bool
    ) -> Any:
        """One node's answer (``bridge.connectors.opcua._history.EventHistory``)."""
        scope = self._scope_of(node.NodeId)
        if scope is None:
            return _result(StatusCodes.BadNotReadable)
        point = bytes(node.ContinuationPoint) if node.ContinuationPoint else None
        if release:  # nothing is kept per read: there is nothing to release
            return _result(StatusCodes.Good)
        start, end = _epoch(details.StartTime), _epoch(details.EndTime)
        n = int(details.NumValuesPerNode or 0)
        if start is None and end is None and n == 0:
            return _result(StatusCodes.BadInvalidTimestampArgument)
        newest_first = (start is None and end is not None) or (
            start is not None and end is not None and end < start
        )
        since, until = (end, start) if newest_first and start is not None else (start, end)
        page = min(n, PAGE) if n else PAGE
        self.counters["event_reads"] += 1
        try:
            found = await self._service.events(
                scope.faults,
                scope.assets,
                since,
                until,
                page + 1,
                after=point,
                newest_first=newest_first,
            )
        except ValueError:
            return _result(StatusCodes.BadContinuationPointInvalid)
        except BridgeError as exc:
            log.warning("alarm_history_store_error", error=str(exc))
            return _result(StatusCodes.BadDataUnavailable)
        more = len(found) > page
        found = found[:page]
        evfilter = details.Filter or ua.EventFilter()
        clause = evfilter.WhereClause or ua.ContentFilter()
        where = SubtypeWhereClause(log, self._server.iserver.aspace, clause)
        now = datetime.now(UTC)
        out: list[ua.HistoryEventFieldList] = []
        for event in found:
            ids, severity = self._describe(event.record.asset, event.record.model)
            name = source_name(event.record.asset, event.record.model)
            ev = build_event(ids, name, snapshot(event, severity), now)
            if clause.Elements and not where.eval(ev):
                continue
            fields = ua.HistoryEventFieldList()
            fields.EventFields = ev.to_event_fields(evfilter.SelectClauses or [])
            out.append(fields)
        self.counters["events"] += len(out)
        result = _result(StatusCodes.Good, out)
        if more and found:
            result.ContinuationPoint = found[-1].cursor
        elif not out and point is None:
            result.StatusCode = ua.StatusCode(cast(Any, StatusCodes.GoodNoData))
        return result


def scope_for(
    faults_by_slot: Mapping[tuple[str, str], tuple[str, ...]],
    assets: Sequence[str] | None,
    models: Sequence[str] | None = None,
) -> Scope:
    """The scope of some slots: their models' fault labels, on ``assets``."""
    faults: dict[str, tuple[str, ...]] = {}
    for (asset, model), labels in faults_by_slot.items():
        if assets is not None and asset not in assets:
            continue
        if models is not None and model not in models:
            continue
        faults[model] = tuple(sorted(set(faults.get(model, ())) | set(labels)))
    return Scope(faults, None if assets is None else tuple(assets))
