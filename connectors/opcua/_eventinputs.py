"""OPC UA events (alarms, conditions) as tags: ``address: {event: {...}}``.

A tag's value is one field of the latest event that matches its address (``ActiveState/Id``
of a boiler's alarm, its ``Severity``, its ``Message``); the event's ``Time`` is the sample's
source time, ``ReceiveTime`` its server time. Tags that watch the same notifier for the same
event type and where clause share one event monitored item, whose select clauses are the
union of their fields; the item's client handle is the first of its tags' handles (a handle
is a tag's position in the source, and an event tag has no data item, so handles never clash).

The flow: ``InboxSubscription`` hands each EventNotificationList to ``deliver`` (inside
asyncua's publish callback: O(1) per event and tag, nothing awaited), which offers every tag
of the item a DataValue built from its field into the session's inbox, where the source
converts it like any data change. After the items are created, ``ConditionRefresh`` (Part 9,
5.5.7) has the server send the retained conditions again, so an alarm active before the
(re)connect is known at once; a server without it is skipped quietly.

Three facts of real servers shaped this:
- Part 9 says the refresh events (RefreshStart, RefreshEnd, RefreshRequired) ignore the event
  filter; asyncua's server (and the gateway's own) filter them like any event. The where clause
  therefore also lets those types through, and ``deliver`` takes them as markers, not values
  (RefreshEnd: see ``initial``; RefreshRequired: another ConditionRefresh).
- asyncua 2.1 servers treat ``OfType T`` as "exactly T" (``_eventfilter`` explains); other
  stacks follow the standard (T and its subtypes).
- A server may ignore parts of a where clause: SourceName and ConditionName are selected too
  and checked again here.

``initial`` (a value for when no event is known, e.g. ``false`` for ``ActiveState/Id``) is
emitted only once the refresh is done (its RefreshEnd, or ``timeout_s`` after the call when
the server sends none to this item), never before the retained conditions could arrive, so an
interlock never sees "inactive" for an alarm that is active. ``repeat_s`` re-offers the
latest value (same source time) while the session is up, so model windows and ``max_age_s``
see a state that holds rather than a tag that went silent.

The address model and its grammar import no asyncua (mapping validation); the rest imports it
when a session uses it.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.connectors.opcua.nodeid import parse_nsu
from bridge.types import Quality, SourceTag, TagSample

if TYPE_CHECKING:
    from asyncua import ua
    from asyncua.client.client import Client

    from bridge.connectors.opcua._inbox import Inbox
    from bridge.connectors.opcua._subscription import InboxSubscription
    from bridge.connectors.opcua.config import OpcUaSourceSettings

__all__ = [
    "STANDARD_EVENT_TYPES",
    "EventAddress",
    "EventInputs",
    "GroupKey",
    "group_tags",
    "parse_event_field",
]

# Event types of namespace 0 a mapping may name (Part 5 and Part 9, without the audit and
# refresh types); any other type is written as a node id. tests/integration/
# test_opcua_event_inputs.py checks the numbers against asyncua's ObjectIds.
STANDARD_EVENT_TYPES: Mapping[str, int] = {
    "BaseEventType": 2041,
    "SystemEventType": 2130,
    "DeviceFailureEventType": 2131,
    "BaseModelChangeEventType": 2132,
    "GeneralModelChangeEventType": 2133,
    "TransitionEventType": 2311,
    "ProgramTransitionEventType": 2378,
    "SemanticChangeEventType": 2738,
    "ConditionType": 2782,
    "DialogConditionType": 2830,
    "AcknowledgeableConditionType": 2881,
    "AlarmConditionType": 2915,
    "LimitAlarmType": 2955,
    "EventQueueOverflowEventType": 3035,
    "ExclusiveLimitAlarmType": 9341,
    "ExclusiveLevelAlarmType": 9482,
    "ExclusiveRateOfChangeAlarmType": 9623,
    "ExclusiveDeviationAlarmType": 9764,
    "NonExclusiveLimitAlarmType": 9906,
    "NonExclusiveLevelAlarmType": 10060,
    "NonExclusiveRateOfChangeAlarmType": 10214,
    "NonExclusiveDeviationAlarmType": 10368,
    "DiscreteAlarmType": 10523,
    "OffNormalAlarmType": 10637,
    "TripAlarmType": 10751,
    "ProgressEventType": 11436,
    "SystemStatusChangeEventType": 11446,
    "SystemOffNormalAlarmType": 11753,
    "CertificateExpirationAlarmType": 13225,
    "DiscrepancyAlarmType": 17080,
    "InstrumentDiagnosticAlarmType": 18347,
    "SystemDiagnosticAlarmType": 18496,
    "TrustListOutOfDateAlarmType": 19297,
    "BaseLogEventType": 19362,
    "LogOverflowEventType": 19369,
}
_BASE_EVENT_TYPE = 2041
_CONDITION_TYPE = 2782
_SERVER = 2253
_CONDITION_REFRESH = 3875  # ConditionType_ConditionRefresh
_REFRESH_START, _REFRESH_END, _REFRESH_REQUIRED = 2787, 2788, 2789
_NS0 = re.compile(r"^i=(\d+)$")
# BadServiceUnsupported, BadAttributeIdInvalid, BadNodeIdUnknown: how servers refuse an event
# item on a node that is no event notifier (or no node at all).
_NOT_A_NOTIFIER = frozenset({0x800B0000, 0x80350000, 0x80340000})
# Events an item may hold between two publishes (a ConditionRefresh sends every retained
# condition of the notifier at once); the server revises it to what it allows.
EVENT_QUEUE_SIZE = 1000
# Selected on every item ahead of the tags' fields: the type (refresh markers), the times.
_EVENT_TYPE, _TIME, _RECEIVE_TIME = 0, 1, 2


def parse_event_field(text: str) -> tuple[str, ...]:
    """``"ActiveState/Id"`` -> ``("ActiveState", "Id")``: browse names of namespace 0 from the
    event type down to the field. Raises ``ValueError`` naming the mistake."""
    parts = tuple(p.strip() for p in text.split("/"))
    if not text.strip() or any(not p for p in parts):
        raise ValueError(
            f"event field {text!r}: give browse names separated by '/', e.g. Severity, "
            "Message, ActiveState/Id"
        )
    return parts


def _type_or_node(text: str, what: str) -> str:
    if text in STANDARD_EVENT_TYPES or _NS0.match(text):
        return text
    if text.startswith("nsu="):
        parse_nsu(text)
        return text
    close = difflib.get_close_matches(text, STANDARD_EVENT_TYPES, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ValueError(
        f"{what} {text!r} is not a standard event type{hint}: write a type name such as "
        "AlarmConditionType or OffNormalAlarmType, a node id nsu=<uri>;i=... (a type the "
        "server defines) or i=<number> (namespace 0)"
    )


class EventAddress(BaseModel):
    """``address: {event: {...}}``: the tag is one field of the latest matching event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notifier: str = Field(
        "Server",
        description="Object whose events are watched: Server (default: the Server object, "
        "which reports the events of the whole server) or a node id nsu=<uri>;s=... (an area "
        "or a machine whose EventNotifier allows subscribing).",
    )
    type: str = Field(
        "BaseEventType",
        description="Event type: a standard type name (AlarmConditionType, OffNormalAlarmType, "
        "ExclusiveLimitAlarmType, ...; events of subtypes match too) or a node id "
        "nsu=<uri>;i=... of a type the server defines.",
    )
    source_name: str | None = Field(
        None, description="Only events whose SourceName equals this (where clause)."
    )
    condition: str | None = Field(
        None, description="Only events whose ConditionName equals this (where clause)."
    )
    field: str = Field(
        description="The event field that is the tag's value: browse names from the event "
        "type down, separated by '/', e.g. ActiveState/Id (bool), Severity (int), Message "
        "(str: the text), Retain, AckedState/Id."
    )
    initial: bool | int | float | str | None = Field(
        None,
        description="Value while no matching event is known: emitted after each (re)connect "
        "once the server's ConditionRefresh is done and sent nothing for this tag (e.g. "
        "false for ActiveState/Id, 0 for Severity). Omit: no value until the first event.",
    )
    repeat_s: float | None = Field(
        None,
        gt=0,
        description="Emit the latest value again every repeat_s seconds (same source time) "
        "while the connection is up, so a state that holds keeps a model input's window "
        "filled and fresh (set it below the model's window_s and the tag's max_age_s). "
        "Omit: a value only per event.",
    )

    @field_validator("notifier")
    @classmethod
    def _notifier(cls, value: str) -> str:
        if value != "Server" and not _NS0.match(value):
            parse_nsu(value)
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _type_or_node(value, "event type")

    @field_validator("field")
    @classmethod
    def _field(cls, value: str) -> str:
        parse_event_field(value)
        return value

    @model_validator(mode="after")
    def _names(self) -> Self:
        for key in ("source_name", "condition"):
            value = getattr(self, key)
            if value is not None and not value:
                raise ValueError(f"{key} is empty: omit it to match every {key}")
        return self

    @property
    def group(self) -> GroupKey:
        return GroupKey(self.notifier, self.type, self.source_name, self.condition)


@dataclass(frozen=True, slots=True)
class GroupKey:
    """Tags with equal keys share one event monitored item."""

    notifier: str
    type: str
    source_name: str | None
    condition: str | None


def group_tags(addresses: Mapping[int, EventAddress]) -> dict[GroupKey, list[int]]:
    """Tag handles per item, in handle order (the first handle is the item's client handle)."""
    groups: dict[GroupKey, list[int]] = {}
    for handle in sorted(addresses):
        groups.setdefault(addresses[handle].group, []).append(handle)
    return groups


# --- a session's event items (asyncua from here on) ------------------------------------------


@dataclass(slots=True)
class _Item:
    """One event monitored item of a session and the tags it feeds."""

    key: GroupKey
    handles: list[int]
    selects: list[tuple[str, ...]]  # browse paths, ahead of them EventType, Time, ReceiveTime
    index: dict[int, int]  # tag handle -> its field's position in the select clauses
    source_name_at: int | None = None
    condition_at: int | None = None
    refused: dict[int, str] = field(default_factory=dict)  # tags whose select was refused
    settling: bool = False  # ConditionRefresh asked, initial values not emitted yet

    @property
    def client_handle(self) -> int:
        return self.handles[0]


Log = Any  # a structlog bound logger


class EventInputs:
    """The event tags of one session (``addresses``: tag handle -> its event address)."""

    def __init__(
        self,
        tags: Sequence[SourceTag],
        addresses: Mapping[int, EventAddress],
        settings: OpcUaSourceSettings,
        log: Log,
    ) -> None:
        self._tags = tags  # by handle
        self._addresses = dict(addresses)
        self.handles = frozenset(addresses)
        self._settings = settings
        self._log = log
        self._items: dict[int, _Item] = {}  # live items by client handle, this connection
        self._held: dict[int, ua.DataValue] = {}  # latest value per tag, this connection
        self._heard: set[int] = set()  # tags an event reached, this connection
        self._offered: dict[int, float] = {}  # monotonic time of each tag's last offer
        self._inbox: Inbox[ua.DataValue] | None = None
        self._client: Client | None = None
        self._subscription: InboxSubscription | None = None
        self._timers: list[asyncio.TimerHandle] = []  # refresh waits
        self._repeat_timer: asyncio.TimerHandle | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._repeats = {h: a.repeat_s for h, a in addresses.items() if a.repeat_s is not None}
        self._markers: tuple[Any, Any, Any] | None = None

    def attach(self, client: Client, subscription: InboxSubscription) -> None:
        """A new subscription: it routes event notifications here; what was known under the
        last one is forgotten (the refresh tells the current state)."""
        self.stop()
        self._items.clear()
        self._held.clear()
        self._heard.clear()
        self._offered.clear()
        self._bind(client, subscription)
        if self.handles:
            subscription.on_events = self.deliver

    def _bind(self, client: Client, subscription: InboxSubscription) -> None:
        self._client, self._subscription, self._inbox = client, subscription, subscription.inbox

    async def resumed(self, client: Client, subscription: InboxSubscription) -> None:
        """The subscription was taken over by a new session (``_transfer``) with its event
        items: the latest values again (the loss marked the tags Bad; events the server queued
        meanwhile have come or follow), then a refresh, as after a connect."""
        self._bind(client, subscription)
        if not self._items:
            return
        inbox = subscription.inbox
        now = time.monotonic()
        for handle, dv in self._held.items():
            self._offered[handle] = now
            inbox.offer(handle, dv)
        await self._refresh(list(self._items.values()))
        self._schedule_repeat()

    def stop(self) -> None:
        """The session closes or was lost: no more timers, no refresh in progress. Items and
        values stay for ``resumed`` (a subscription transfer) until the next ``attach``."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._repeat_timer is not None:
            self._repeat_timer.cancel()
            self._repeat_timer = None
        task, self._refresh_task = self._refresh_task, None
        if task is not None:
            task.cancel()
        self._inbox = None

    async def create(
        self, index_of: Mapping[str, int], wanted: Sequence[int], per_call: int
    ) -> tuple[list[TagSample], list[int]]:
        """Event items for the tag handles ``wanted``, then ConditionRefresh. Returns Bad
        samples (refused items, unknown namespaces, refused fields) and the tag handles to
        retry later (those of refused items)."""
        from asyncua import ua

        client, subscription = self._client, self._subscription
        assert client is not None and subscription is not None
        now = time.time()
        bad: list[TagSample] = []
        retry: list[int] = []
        pending: list[tuple[_Item, ua.MonitoredItemCreateRequest]] = []
        groups = group_tags({h: self._addresses[h] for h in wanted})
        for key, handles in groups.items():
            item = self._item(key, handles)
            request = self._request(item, index_of)
            if isinstance(request, str):  # a namespace the server does not have
                bad += self._bad(handles, request, now)
                retry += handles
                continue
            pending.append((item, request))
        timeout = self._settings.timeout_s
        created: list[_Item] = []
        for start in range(0, len(pending), max(1, per_call)):
            chunk = pending[start : start + max(1, per_call)]
            params = ua.CreateMonitoredItemsParameters()
            params.SubscriptionId = subscription.subscription_id
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.ItemsToCreate = [r for _, r in chunk]
            # Registered before the request: a server may publish an event before it answers.
            for item, _ in chunk:
                self._items[item.client_handle] = item
            async with asyncio.timeout(timeout):
                results = await client.uaclient.create_monitored_items(params)
            for (item, _), result in zip(chunk, results, strict=True):
                reason = self._refusal(item, result)
                if reason is not None:
                    del self._items[item.client_handle]
                    if result.StatusCode.is_good():  # created, but its filter is unusable
                        await self._delete(result.MonitoredItemId)
                    bad += self._bad(item.handles, reason, now)
                    retry += item.handles
                    continue
                bad += [
                    TagSample(self._tags[h].tag, None, Quality.BAD, now, reason=why)
                    for h, why in item.refused.items()
                ]
                created.append(item)
        if created:
            self._log.info(
                "event_items",
                items=len(created),
                tags=sum(len(i.handles) - len(i.refused) for i in created),
                refused_items=len(pending) - len(created),
            )
            await self._refresh(created)
            self._schedule_repeat()
        return bad, retry

    def _item(self, key: GroupKey, handles: list[int]) -> _Item:
        selects: list[tuple[str, ...]] = [("EventType",), ("Time",), ("ReceiveTime",)]
        at: dict[tuple[str, ...], int] = {p: i for i, p in enumerate(selects)}

        def select(path: tuple[str, ...]) -> int:
            if path not in at:
                at[path] = len(selects)
                selects.append(path)
            return at[path]

        index = {h: select(parse_event_field(self._addresses[h].field)) for h in handles}
        item = _Item(key, handles, selects, index)
        if key.source_name is not None:
            item.source_name_at = select(("SourceName",))
        if key.condition is not None:
            item.condition_at = select(("ConditionName",))
        return item

    def _request(
        self, item: _Item, index_of: Mapping[str, int]
    ) -> ua.MonitoredItemCreateRequest | str:
        """The item's CreateMonitoredItems request, or why its node ids cannot be resolved."""
        from asyncua import ua
        from asyncua.ua.attribute_ids import AttributeIds

        notifier = _node(item.key.notifier, index_of)
        type_id = _node(item.key.type, index_of)
        for resolved in (notifier, type_id):
            if isinstance(resolved, str):
                return resolved
        assert not isinstance(notifier, str) and not isinstance(type_id, str)
        evfilter = ua.EventFilter()
        evfilter.SelectClauses = [_operand(_type_of(path, type_id), path) for path in item.selects]
        where = _where(type_id, item.key.source_name, item.key.condition)
        if where is not None:
            evfilter.WhereClause = where
        params = ua.MonitoringParameters()
        params.ClientHandle = item.client_handle
        params.SamplingInterval = 0
        params.QueueSize = EVENT_QUEUE_SIZE
        params.DiscardOldest = True
        params.Filter = evfilter
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = ua.ReadValueId(
            NodeId=notifier, AttributeId=AttributeIds.EventNotifier
        )
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    def _refusal(self, item: _Item, result: ua.MonitoredItemCreateResult) -> str | None:
        """Why the whole item is unusable (None: usable); refused fields go to ``refused``."""
        from asyncua import ua

        code = result.StatusCode
        if not code.is_good():
            reason = f"{code.name}: the server refused an event item on {item.key.notifier}"
            if code.value in _NOT_A_NOTIFIER:
                reason += " (not an object whose EventNotifier allows subscribing to events)"
            return reason
        filter_result = result.FilterResult
        if not isinstance(filter_result, ua.EventFilterResult):
            return None  # the server reported nothing about the filter: all accepted
        for element in filter_result.WhereClauseResult.ElementResults or []:
            if not element.StatusCode.is_good():
                return (
                    f"{element.StatusCode.name}: the server refused the event filter's where clause"
                )
        codes = filter_result.SelectClauseResults or []
        for handle, position in item.index.items():
            if position < len(codes) and not codes[position].is_good():
                path = "/".join(item.selects[position])
                item.refused[handle] = f"{codes[position].name}: event field {path}"
        for position in (_EVENT_TYPE, _TIME):
            if position < len(codes) and not codes[position].is_good():
                return f"{codes[position].name}: event field {item.selects[position][0]} refused"
        return None

    async def _delete(self, monitored_item_id: int) -> None:
        from asyncua import ua

        client, subscription = self._client, self._subscription
        if client is None or subscription is None:
            return
        params = ua.DeleteMonitoredItemsParameters()
        params.SubscriptionId = subscription.subscription_id
        params.MonitoredItemIds = [monitored_item_id]
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                await client.uaclient.delete_monitored_items(params)
        except Exception as exc:  # the item stays, unrouted: its events are dropped
            self._log.debug("event_item_delete_failed", error=repr(exc))

    def _bad(self, handles: Sequence[int], reason: str, now: float) -> list[TagSample]:
        return [
            TagSample(self._tags[h].tag, None, Quality.BAD, now, reason=reason) for h in handles
        ]

    # --- ConditionRefresh and initial values ------------------------------------------------

    async def _refresh(self, items: Sequence[_Item]) -> None:
        """ConditionRefresh for the subscription; initial values once it is done."""
        from asyncua import ua

        client, subscription = self._client, self._subscription
        assert client is not None and subscription is not None
        for item in items:
            item.settling = True
        request = ua.CallMethodRequest()
        request.ObjectId = _ns0(_CONDITION_TYPE)
        request.MethodId = _ns0(_CONDITION_REFRESH)
        request.InputArguments = [ua.Variant(subscription.subscription_id, ua.VariantType.UInt32)]
        status: str
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                results = await client.uaclient.call([request])
            code = results[0].StatusCode
            status = "" if code.is_good() else code.name
        except (TimeoutError, OSError) as exc:
            # No answer is not a "no": the retained conditions may still come, so no initial
            # value says "inactive" meanwhile (the session's checks see a dead link).
            self._log.debug("condition_refresh_failed", error=repr(exc))
            for item in items:
                item.settling = False
            return
        except Exception as exc:  # a server without it refuses in many ways: all mean "no"
            status = repr(exc)
        if status:
            self._log.debug("condition_refresh_unavailable", reason=status)
            self._settle(items)
            return
        # Most servers end with a RefreshEnd on every event item (deliver settles it then);
        # for those that send it to some items only, or none, the wait ends here.
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self._settings.timeout_s, self._settle, items))

    def _settle(self, items: Sequence[_Item]) -> None:
        """Initial values for the tags of ``items`` no event has reached since connecting."""
        from asyncua import ua

        inbox = self._inbox
        for item in items:
            if not item.settling or self._items.get(item.client_handle) is not item:
                continue
            item.settling = False
            if inbox is None:
                continue
            for handle in item.handles:
                initial = self._addresses[handle].initial
                if initial is None or handle in self._heard or handle in item.refused:
                    continue
                dv = ua.DataValue(Value=ua.Variant(initial))
                self._held[handle] = dv
                self._offered[handle] = time.monotonic()
                inbox.offer(handle, dv)

    def _refresh_again(self) -> None:
        """The server asked for a refresh (RefreshRequired): call it once more, in a task."""
        if self._refresh_task is not None and not self._refresh_task.done():
            return
        items = list(self._items.values())
        if not items:
            return
        self._refresh_task = asyncio.get_running_loop().create_task(
            self._refresh(items), name="opcua-condition-refresh"
        )

    # --- notifications -------------------------------------------------------------------

    def deliver(self, events: Sequence[ua.EventFieldList], inbox: Inbox[ua.DataValue]) -> None:
        """Called in asyncua's publish callback: each event's fields to its item's tags."""
        from asyncua import ua

        markers = self._markers
        if markers is None:
            markers = self._markers = (
                _ns0(_REFRESH_START),
                _ns0(_REFRESH_END),
                _ns0(_REFRESH_REQUIRED),
            )
        now = time.monotonic()
        for event in events:
            item = self._items.get(event.ClientHandle)
            if item is None:
                continue
            fields = event.EventFields
            event_type = _value(fields, _EVENT_TYPE)
            if event_type in markers:
                if event_type == markers[1]:
                    self._settle([item])
                elif event_type == markers[2]:
                    self._refresh_again()
                continue
            if not _matches(fields, item.source_name_at, item.key.source_name) or not _matches(
                fields, item.condition_at, item.key.condition
            ):
                continue
            when, received = _value(fields, _TIME), _value(fields, _RECEIVE_TIME)
            for handle, position in item.index.items():
                if handle in item.refused:
                    continue
                variant = fields[position] if position < len(fields) else ua.Variant()
                dv = ua.DataValue(Value=variant, SourceTimestamp=when, ServerTimestamp=received)
                self._held[handle] = dv
                self._heard.add(handle)
                self._offered[handle] = now
                inbox.offer(handle, dv)

    # --- repeats -------------------------------------------------------------------------

    def _schedule_repeat(self) -> None:
        if self._repeats and self._inbox is not None and self._repeat_timer is None:
            period = min(self._repeats.values())
            loop = asyncio.get_running_loop()
            self._repeat_timer = loop.call_later(period, self._repeat_tick, period)

    def _repeat_tick(self, period: float) -> None:
        inbox = self._inbox
        if inbox is None:
            self._repeat_timer = None
            return
        now = time.monotonic()
        for handle, every in self._repeats.items():
            dv = self._held.get(handle)
            # A little early is on time: the ticks are late by the loop's latency.
            if dv is not None and now - self._offered.get(handle, 0.0) >= every - period / 10:
                self._offered[handle] = now
                inbox.offer(handle, dv)
        loop = asyncio.get_running_loop()
        self._repeat_timer = loop.call_later(period, self._repeat_tick, period)


def _ns0(number: int) -> ua.NodeId:
    from bridge.connectors.opcua.convert import make_node_id

    return make_node_id(number, 0)


def _value(fields: Sequence[ua.Variant], position: int) -> Any:
    if position >= len(fields):
        return None
    variant = fields[position]
    return variant.Value if variant is not None else None


def _matches(fields: Sequence[ua.Variant], position: int | None, wanted: str | None) -> bool:
    if position is None or wanted is None:
        return True
    return bool(_value(fields, position) == wanted)


def _node(text: str, index_of: Mapping[str, int]) -> ua.NodeId | str:
    """A notifier or type of an event address as this session's NodeId, or why not."""
    from bridge.connectors.opcua.convert import make_node_id, node_id_for

    if text == "Server":
        return make_node_id(_SERVER, 0)
    number = STANDARD_EVENT_TYPES.get(text)
    if number is not None:
        return make_node_id(number, 0)
    ns0 = _NS0.match(text)
    if ns0 is not None:
        return make_node_id(int(ns0[1]), 0)
    ref = parse_nsu(text)
    ns = index_of.get(ref.uri)
    if ns is None:
        return f"BadNodeIdUnknown: namespace {ref.uri} not on server"
    return node_id_for(ref, ns)


def _type_of(path: tuple[str, ...], type_id: ua.NodeId) -> ua.NodeId:
    """TypeDefinitionId of a select clause: the type that declares the field. BaseEventType
    for its own fields, ConditionType for ConditionName, else the item's type."""

    if path in (("EventType",), ("Time",), ("ReceiveTime",), ("SourceName",)):
        return _ns0(_BASE_EVENT_TYPE)
    if path == ("ConditionName",):
        return _ns0(_CONDITION_TYPE)
    return type_id


def _operand(type_id: ua.NodeId, path: tuple[str, ...]) -> ua.SimpleAttributeOperand:
    from asyncua import ua
    from asyncua.ua.attribute_ids import AttributeIds

    op = ua.SimpleAttributeOperand()
    op.TypeDefinitionId = type_id
    op.BrowsePath = [ua.QualifiedName(name, 0) for name in path]
    op.AttributeId = AttributeIds.Value
    return op


Tree = tuple[str, "Tree", "Tree"] | Any  # ("and" | "or", left, right) or a leaf element


def _where(
    type_id: ua.NodeId, source_name: str | None, condition: str | None
) -> ua.ContentFilter | None:
    """(OfType type AND SourceName = .. AND ConditionName = ..) OR the refresh markers; None
    when nothing is filtered (BaseEventType, no names: every event matches)."""
    from asyncua import ua

    def element(operator: Any, *operands: Any) -> ua.ContentFilterElement:
        el = ua.ContentFilterElement()
        el.FilterOperator = operator
        el.FilterOperands = list(operands)
        return el

    def literal(value: Any, vtype: Any = None) -> ua.LiteralOperand:
        return ua.LiteralOperand(Value=ua.Variant(value, vtype) if vtype else ua.Variant(value))

    conditions: list[Any] = []
    if type_id != _ns0(_BASE_EVENT_TYPE):
        conditions.append(element(ua.FilterOperator.OfType, literal(type_id)))
    base = _ns0(_BASE_EVENT_TYPE)
    for path, wanted, declared in (
        ("SourceName", source_name, base),
        ("ConditionName", condition, _ns0(_CONDITION_TYPE)),
    ):
        if wanted is not None:
            conditions.append(
                element(
                    ua.FilterOperator.Equals,
                    _operand(declared, (path,)),
                    literal(wanted, ua.VariantType.String),
                )
            )
    if not conditions:
        return None
    tree: Tree = conditions[0]
    for more in conditions[1:]:
        tree = ("and", tree, more)
    markers = element(
        ua.FilterOperator.InList,
        _operand(base, ("EventType",)),
        literal(_ns0(_REFRESH_START)),
        literal(_ns0(_REFRESH_END)),
        literal(_ns0(_REFRESH_REQUIRED)),
    )
    tree = ("or", markers, tree)
    # Preorder: an ElementOperand always points to a later element (Part 4, 7.7.1).
    elements: list[ua.ContentFilterElement] = []

    def emit(node: Tree) -> int:
        at = len(elements)
        elements.append(ua.ContentFilterElement())
        if isinstance(node, tuple):
            operator = ua.FilterOperator.And if node[0] == "and" else ua.FilterOperator.Or
            left, right = emit(node[1]), emit(node[2])
            elements[at] = element(
                operator, ua.ElementOperand(Index=left), ua.ElementOperand(Index=right)
            )
        else:
            elements[at] = node
        return at

    emit(tree)
    content = ua.ContentFilter()
    content.Elements = elements
    return content
