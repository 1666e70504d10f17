"""The alarms' events: made from a ``Snapshot`` (``_alarmstate``), reported on every notifier
above the alarm, kept while retained for ConditionRefresh, and written to the alarm's own
variables (an HMI that reads the condition rather than subscribing sees the same state).

asyncua 2.1 delivers an event only to monitored items on the node it is emitted from (no
walk up the HasNotifier tree), so each notifier gets its own copy. Its ConditionRefresh replays
``SubscriptionService._conditions``, one event per ConditionId with the emitting node it had,
so a subscription on the asset folder would get nothing of an event last emitted on the Server
object: ``Events.refresh`` replaces that method and replays every retained alarm on every
notifier a subscription watches, each item's between its own RefreshStart and RefreshEnd.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from asyncua import ua
from asyncua.common.event_objects import OffNormalAlarm
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from bridge.connectors.opcua._alarmnodes import ALARM, AlarmIds
from bridge.connectors.opcua._alarmstate import Snapshot
from bridge.connectors.opcua.convert import make_node_id

__all__ = ["Events", "build_event"]

log = structlog.get_logger(__name__)

_GOOD = ua.StatusCode(cast(Any, StatusCodes.Good))
_CLASS = make_node_id(ObjectIds.MaintenanceConditionClassType, 0)
_CLASS_NAME = ua.LocalizedText("Maintenance")
_STATES = {
    "ActiveState": ("Active", "Inactive"),
    "AckedState": ("Acknowledged", "Unacknowledged"),
    "ConfirmedState": ("Confirmed", "Unconfirmed"),
}
_S = ua.VariantType


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(cast(Any, code))


def _when(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def build_event(ids: AlarmIds, source_name: str, snap: Snapshot, now: datetime) -> Any:
    """The OffNormalAlarmType event of one snapshot, with the ConditionId (``NodeId``) and the
    gateway's own fields ``PredictionId`` and ``ModelVersion``. A state that is not known
    (``None``: events history does not store when an alarm went inactive) is left null."""
    make: Any = OffNormalAlarm  # untyped in asyncua
    ev: Any = make(sourcenode=ids.source, message=snap.message, severity=snap.severity)
    ev.add_property("NodeId", ids.alarm, _S.NodeId)
    ev.add_property("PredictionId", snap.alert.prediction_id, _S.String)
    ev.add_property("ModelVersion", snap.alert.version, _S.String)
    ev.EventId = snap.event_id
    ev.SourceName = source_name
    ev.Time = _when(snap.time)
    ev.ReceiveTime = now
    ev.ConditionName = ALARM
    ev.ConditionClassId = _CLASS
    ev.ConditionClassName = _CLASS_NAME
    ev.BranchId = ua.NodeId()  # null: the condition itself, there are no branches
    ev.Retain = snap.retain
    ev.EnabledState = ua.LocalizedText("Enabled")
    setattr(ev, "EnabledState/Id", True)
    ev.Quality = _GOOD
    ev.LastSeverity = snap.severity
    ev.Comment = ua.LocalizedText(snap.comment)
    ev.ClientUserId = snap.user
    ev.InputNode = ids.value
    ev.NormalState = ids.normal
    ev.SuppressedOrShelved = False
    times = {
        "ActiveState": snap.active_since,
        "AckedState": snap.acked_at,
        "ConfirmedState": snap.confirmed_at,
    }
    for state, value in (
        ("ActiveState", snap.active),
        ("AckedState", snap.acked),
        ("ConfirmedState", snap.confirmed),
    ):
        true, false = _STATES[state]
        setattr(ev, state, None if value is None else ua.LocalizedText(true if value else false))
        setattr(ev, f"{state}/Id", value)
        # asyncua declares these with the UtcTime NodeId, not a variant type.
        ev.data_types[f"{state}/TransitionTime"] = _S.DateTime
        setattr(ev, f"{state}/TransitionTime", _when(times[state]))
    return ev


def _fields(ids: AlarmIds, snap: Snapshot) -> list[tuple[ua.NodeId, ua.DataValue]]:
    """The alarm's variables that change with its events."""
    out: list[tuple[ua.NodeId, Any, ua.VariantType]] = [
        (ids.child("EventId"), snap.event_id, _S.ByteString),
        (ids.child("Time"), _when(snap.time), _S.DateTime),
        (ids.child("Message"), ua.LocalizedText(snap.message), _S.LocalizedText),
        (ids.child("Severity"), snap.severity, _S.UInt16),
        (ids.child("LastSeverity"), snap.severity, _S.UInt16),
        (ids.child("Retain"), snap.retain, _S.Boolean),
        (ids.child("Comment"), ua.LocalizedText(snap.comment), _S.LocalizedText),
        (ids.child("ClientUserId"), snap.user, _S.String),
        (ids.child("PredictionId"), snap.alert.prediction_id, _S.String),
        (ids.child("ModelVersion"), snap.alert.version, _S.String),
    ]
    for state, value in (
        ("ActiveState", snap.active),
        ("AckedState", snap.acked),
        ("ConfirmedState", snap.confirmed),
    ):
        true, false = _STATES[state]
        out.append((ids.child(state), ua.LocalizedText(true if value else false), _S.LocalizedText))
        out.append((ids.child(f"{state}.Id"), bool(value), _S.Boolean))
    return [(n, ua.DataValue(ua.Variant(v, t))) for n, v, t in out]


def static_fields(
    ids: AlarmIds, source_name: str, normal: str, severity: int
) -> list[tuple[ua.NodeId, ua.DataValue]]:
    """What an alarm shows before its first event (inactive, acknowledged, not retained)."""
    values: list[tuple[ua.NodeId, Any, ua.VariantType]] = [
        (ids.child("EventType"), make_node_id(ObjectIds.OffNormalAlarmType, 0), _S.NodeId),
        (ids.child("SourceNode"), ids.source, _S.NodeId),
        (ids.child("SourceName"), source_name, _S.String),
        (ids.child("ConditionName"), ALARM, _S.String),
        (ids.child("ConditionClassId"), _CLASS, _S.NodeId),
        (ids.child("ConditionClassName"), _CLASS_NAME, _S.LocalizedText),
        (ids.child("BranchId"), ua.NodeId(), _S.NodeId),
        (ids.child("Quality"), _GOOD, _S.StatusCode),
        (ids.child("EnabledState"), ua.LocalizedText("Enabled"), _S.LocalizedText),
        (ids.child("EnabledState.Id"), True, _S.Boolean),
        (ids.child("InputNode"), ids.value, _S.NodeId),
        (ids.child("NormalState"), ids.normal, _S.NodeId),
        (ids.child("NormalLabel"), normal, _S.String),
        (ids.child("SuppressedOrShelved"), False, _S.Boolean),
        (ids.child("Severity"), severity, _S.UInt16),
        (ids.child("LastSeverity"), severity, _S.UInt16),
        (ids.child("Retain"), False, _S.Boolean),
        (ids.child("ActiveState"), ua.LocalizedText("Inactive"), _S.LocalizedText),
        (ids.child("ActiveState.Id"), False, _S.Boolean),
        (ids.child("AckedState"), ua.LocalizedText("Acknowledged"), _S.LocalizedText),
        (ids.child("AckedState.Id"), True, _S.Boolean),
        (ids.child("ConfirmedState"), ua.LocalizedText("Confirmed"), _S.LocalizedText),
        (ids.child("ConfirmedState.Id"), True, _S.Boolean),
    ]
    return [(n, ua.DataValue(ua.Variant(v, t))) for n, v, t in values]


Wake = Callable[[Iterable[InternalSubscription]], None]


class Events:
    """Reports alarm events to the subscriptions of one server."""

    def __init__(self, server: Server, root: ua.NodeId, wake: Wake | None = None) -> None:
        self._server = server
        self._root = root
        self._wake = wake
        # Retained alarms' latest events (and the notifiers they go to), for ConditionRefresh.
        self._retained: dict[ua.NodeId, tuple[Any, tuple[ua.NodeId, ...]]] = {}

    def set_wake(self, wake: Wake | None) -> None:
        self._wake = wake

    async def report(self, ids: AlarmIds, snap: Snapshot, source_name: str) -> None:
        """Send the event of ``snap`` to every subscription watching a notifier above it."""
        ev = build_event(ids, source_name, snap, datetime.now(UTC))
        notifiers = ids.notifiers(self._root)
        if snap.retain:
            self._retained[ids.alarm] = (ev, notifiers)
        else:
            self._retained.pop(ids.alarm, None)
        service = self._server.iserver.subscription_service
        woken: list[InternalSubscription] = []
        for isub in list(service.subscriptions.values()):
            hit = False
            for notifier in notifiers:
                copied = copy.copy(ev)
                copied.emitting_node = notifier
                hit = await isub.monitored_item_srv.trigger_event(copied) or hit
            if hit:
                woken.append(isub)
        if woken and self._wake is not None:
            self._wake(woken)

    async def show(self, items: Sequence[tuple[ua.NodeId, ua.DataValue]]) -> None:
        """Write the alarm's variables; a refused one (a type the node does not have) is
        logged, once per call, and the others are written."""
        aspace = self._server.iserver.aspace
        refused = []
        for nodeid, dv in items:
            status = await aspace.write_attribute_value(nodeid, AttributeIds.Value, dv)
            if not status.is_good():
                refused.append(f"{nodeid.to_string()}: {status.name}")
        if refused:
            log.warning("alarm_variables_not_written", refused=refused)

    async def shown(self, ids: AlarmIds, snap: Snapshot) -> None:
        await self.show(_fields(ids, snap))

    @staticmethod
    async def _marker(
        service: Any, kind: int, items: Any, notifiers: Sequence[Any], mid: int | None
    ) -> None:
        """asyncua's RefreshStart or RefreshEnd event (made by ``setup_condition_methods``),
        new EventId and time, to the items on ``notifiers``."""
        generator = service.standard_events.get(kind)
        if generator is None:
            return
        marker = copy.copy(generator.event)
        marker.EventId = uuid.uuid4().bytes
        marker.Time = marker.ReceiveTime = datetime.now(UTC)
        for notifier in notifiers:
            copied = copy.copy(marker)
            copied.emitting_node = notifier
            await items.trigger_event(copied, mid)

    def forget(self, alarm: ua.NodeId) -> None:
        self._retained.pop(alarm, None)

    async def refresh(self, parent: Any, *args: Any) -> Any:
        """ConditionRefresh (SubscriptionId) and ConditionRefresh2 (SubscriptionId,
        MonitoredItemId): every retained alarm's latest event again, on each event item
        between a RefreshStart and a RefreshEnd event (asyncua's event types)."""
        service = self._server.iserver.subscription_service
        values = [getattr(a, "Value", a) for a in args]
        if not values or not isinstance(values[0], int):
            return _status(StatusCodes.BadInvalidArgument)
        sub_id = values[0]
        mid = values[1] if len(values) > 1 and isinstance(values[1], int) else None
        isub = service.subscriptions.get(sub_id)
        if isub is None:
            return _status(StatusCodes.BadSubscriptionIdInvalid)
        items = isub.monitored_item_srv
        # Which notifier each of this subscription's event items watches: asyncua 2.1 keeps it
        # in the private ``_monitored_events`` (re-check on upgrade: the refresh test fails).
        watched: dict[Any, list[int]] = getattr(items, "_monitored_events", {})
        if mid is not None and not any(mid in mids for mids in watched.values()):
            return _status(StatusCodes.BadMonitoredItemIdInvalid)
        # Every event item of the subscription (of the one item, for ConditionRefresh2) gets
        # RefreshStart, the retained alarms it watches, then RefreshEnd (Part 9, 5.5.7;
        # asyncua would send the markers to the Server object's items only).
        notifiers = [n for n, mids in watched.items() if mid is None or mid in mids]
        await self._marker(service, ObjectIds.RefreshStartEventType, items, notifiers, mid)
        for ev, alarm_notifiers in list(self._retained.values()):
            for notifier in alarm_notifiers:
                if notifier not in notifiers:
                    continue
                copied = copy.copy(ev)
                copied.emitting_node = notifier
                await items.trigger_event(copied, mid)
        await self._marker(service, ObjectIds.RefreshEndEventType, items, notifiers, mid)
        if self._wake is not None:
            self._wake([isub])
        return []
