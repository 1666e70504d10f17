"""``AlarmConditions``: predictions raise OPC UA alarms on the gateway's HMI server.

One ``OffNormalAlarmType`` condition per classifier's asset+model (``_alarmnodes``), active
while the alert rule holds a fault label (``_alarmstate``), reported to event subscriptions on
the Server object, the Predictions folder, the asset folder and the prediction object, and
kept for ConditionRefresh while retained (``_alarmevents``). Its events history comes from the
store's alerts (``_alarmhistory``).

Why OffNormalAlarmType: the rule is exactly "the label left its normal value"; the type says
so (``NormalState`` points to the normal label, ``InputNode`` to the prediction's Value), it
is an ``AlarmConditionType`` for any HMI that knows only that, and it carries no limits that
a classifier does not have (a LimitAlarm's HighLimit, ...).

The flow: ``feed`` steps every prediction the server is handed, before large batches are
coalesced (each prediction counts towards the hold), and queues the events; a task reports
them (the server's ``write`` never waits for a client), another reads the store every
``poll_s``: acknowledgements and confirmations made elsewhere (REST API, console, another
gateway), and alerts the alert writer raised that this rule did not (a restart).

Acknowledge and Confirm (Part 9, 5.7.3 and 5.7.4: EventId, Comment) are bound to the
instance's own methods and to the type's (``AcknowledgeableConditionType`` i=9111 / i=9113,
called with the condition as ObjectId). Only ``operator`` sessions may call them (asyncua
gives method handlers no session: ``_caller``). The EventId must be the alarm's latest event.
Each acknowledges (confirms) the stored alert of the raising prediction, waiting up to
``ack_wait_s`` for the alert writer to commit it, with the ledger entry, like the REST API.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import structlog
from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from bridge.cancel import cancel_and_wait
from bridge.connectors.opcua._access import OPERATOR
from bridge.connectors.opcua._alarmevents import Events, Wake, static_fields
from bridge.connectors.opcua._alarmhistory import AlarmHistory, Scope, scope_for
from bridge.connectors.opcua._alarmnodes import AlarmIds, AlarmNodes, source_name
from bridge.connectors.opcua._alarmstate import AlarmState, Refusal, Snapshot
from bridge.connectors.opcua._caller import caller_name, caller_role
from bridge.connectors.opcua.convert import make_node_id
from bridge.errors import BridgeError
from bridge.types import (
    AlarmAnswer,
    AlarmRecord,
    AlarmService,
    Prediction,
    PredictionSlot,
)

__all__ = ["AlarmConditions"]

log = structlog.get_logger(__name__)

Key = tuple[str, str]
_MAX_COMMENT = 2000
# Alerts read per poll when following the table (more wait for the next poll).
_NEW_PER_POLL = 500
# Events reported between two yields of the loop (each ~0.2 ms with one HMI subscribed).
_EVENTS_PER_YIELD = 20
_SERVER = make_node_id(ObjectIds.Server, 0)
_REFUSED: dict[Refusal, int] = {
    "no_alert": StatusCodes.BadEventIdUnknown,
    "event_unknown": StatusCodes.BadEventIdUnknown,
    "already_acked": StatusCodes.BadConditionBranchAlreadyAcked,
    "already_confirmed": StatusCodes.BadConditionBranchAlreadyConfirmed,
    # Part 9 lets only an acknowledged alarm be confirmed; the spec names no code for it.
    "not_acked": StatusCodes.BadInvalidState,
}
_BEFORE = {
    "acknowledge": StatusCodes.BadConditionBranchAlreadyAcked,
    "confirm": StatusCodes.BadConditionBranchAlreadyConfirmed,
}


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(cast(Any, code))


def _comment(raw: Any) -> str:
    value = getattr(raw, "Value", raw)
    if isinstance(value, ua.LocalizedText):
        value = value.Text
    return value[:_MAX_COMMENT] if isinstance(value, str) else ""


class AlarmConditions:
    def __init__(
        self,
        service: AlarmService,
        counters: dict[str, int],
        logger: Any,
        *,
        poll_s: float = 1.0,
        ack_wait_s: float = 5.0,
        max_queued: int = 100_000,
    ) -> None:
        self._service = service
        self._counters = counters
        self._log = logger
        self.poll_s = poll_s
        self.ack_wait_s = ack_wait_s
        self._max_queued = max_queued
        self._states: dict[Key, AlarmState] = {}
        self._ids: dict[Key, AlarmIds] = {}
        self._by_node: dict[ua.NodeId, Key] = {}  # alarm, prediction object -> slot
        self._assets: dict[ua.NodeId, str] = {}  # asset folder -> asset
        self._queue: deque[tuple[Key, Snapshot]] = deque()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._nodes: AlarmNodes | None = None
        self._events: Events | None = None
        self._server: Server | None = None
        self._history: AlarmHistory | None = None
        self._last_id: int | None = None  # the newest alert read from the store
        self._poll_failing = False
        for name in ("alarm_events", "alarm_events_dropped", "alarm_calls_refused"):
            counters.setdefault(name, 0)

    # -- the server's hooks ----------------------------------------------------------------

    async def add(
        self, server: Server, ns: int, nid: Callable[[str], ua.NodeId], slot: PredictionSlot
    ) -> None:
        """The alarm of a classifier's slot (a regressor has none), once its object exists."""
        if len(slot.labels) < 2:  # no fault label, nothing to alarm on
            return
        nodes = await self._prepare(server, ns, nid)
        key = (slot.asset, slot.model)
        ids = await nodes.add(slot.asset, slot.model)
        state = AlarmState(slot)
        link = server.iserver.isession.add_method_callback
        link(ids.acknowledge, self._handler("acknowledge", key))
        link(ids.confirm, self._handler("confirm", key))
        for method in ("Enable", "Disable", "AddComment"):
            link(ids.child(method), _not_supported)
        assert self._events is not None
        await self._events.show(static_fields(ids, source_name(*key), state.normal, state.severity))
        self._states[key] = state
        self._ids[key] = ids
        self._by_node[ids.alarm] = key
        self._by_node[ids.source] = key
        self._assets[ids.asset] = slot.asset
        if self._tasks:  # a slot a reload adds: its state comes from the store at once
            await self._seed([key])

    async def remove(self, key: Key, asset_gone: bool) -> None:
        """The slot leaves (before its nodes are deleted): a retained alarm's last event says
        Retain false, so HMIs take it off their lists."""
        state = self._states.pop(key, None)
        ids = self._ids.pop(key, None)
        if state is None or ids is None:
            return
        self._by_node.pop(ids.alarm, None)
        self._by_node.pop(ids.source, None)
        if asset_gone:
            self._assets.pop(ids.asset, None)
        if self._nodes is not None:
            self._nodes.forget(*key, asset_gone)
        snap = state.removed(time.time())
        if snap is not None and self._events is not None:
            try:
                await self._events.report(ids, snap, source_name(*key))
            except Exception:  # the slot goes anyway
                self._log.exception("alarm_removal_event_failed", asset=key[0], model=key[1])
        if self._events is not None:
            self._events.forget(ids.alarm)

    def follow(self, slots: Iterable[PredictionSlot]) -> None:
        """Slots a reload kept: new severity, labels or hold."""
        for slot in slots:
            state = self._states.get((slot.asset, slot.model))
            if state is not None and len(slot.labels) >= 2:
                state.follow(slot)

    def feed(self, batch: Sequence[Prediction]) -> None:
        """Step every prediction through its alarm's rule (no await: called from ``write``)."""
        states = self._states
        for p in batch:
            key = (p.asset, p.model)
            state = states.get(key)
            if state is not None:
                snap = state.step(p)
                if snap is not None:
                    self._push(key, snap)

    async def start(self, wake: Wake | None = None) -> None:
        """Once the server runs: the alarms' state from the store, then the two tasks."""
        if self._events is not None:
            self._events.set_wake(wake)
        if self._nodes is not None:
            self._nodes.flush()
        try:
            self._last_id = await self._service.last_id()
            await self._seed(list(self._states))
        except BridgeError as exc:  # the poll catches up once the store answers
            self._log.warning("alarms_not_seeded", error=str(exc))
        self._tasks = [
            asyncio.create_task(self._deliver(), name="alarm-events"),
            asyncio.create_task(self._poll(), name="alarm-poll"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        self._queue.clear()

    async def read_events(
        self, details: ua.ReadEventDetails, node: ua.HistoryReadValueId, release: bool
    ) -> Any:
        """Events history of one node (``bridge.connectors.opcua._history.EventHistory``)."""
        history = self._history
        if history is None:  # no classifier yet: no alarm, no notifier
            return ua.HistoryReadResult(StatusCode=_status(StatusCodes.BadNotReadable))
        return await history.read(details, node, release)

    # -- events ------------------------------------------------------------------------------

    def _push(self, key: Key, snap: Snapshot) -> None:
        if len(self._queue) >= self._max_queued:  # a guard: the state itself is never lost
            self._queue.popleft()
            self._counters["alarm_events_dropped"] += 1
        self._queue.append((key, snap))
        self._ready.set()

    async def _deliver(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            events = self._events
            if events is None:  # no classifier (yet): nothing was queued
                continue
            shown: dict[Key, Snapshot] = {}
            # Every event first, the variables after, and the loop let go every few events:
            # asyncua queues an event in the subscription and its publisher task sends it only
            # when this task yields (200 alarms of one batch once waited for all 200 reports
            # and their variables: p50 ~180 ms, bench/opcua_alarms.py).
            reported = 0
            while self._queue:
                key, snap = self._queue.popleft()
                ids = self._ids.get(key)
                if ids is None:  # removed meanwhile
                    continue
                try:
                    await events.report(ids, snap, source_name(*key))
                except Exception:
                    self._log.exception("alarm_event_failed", asset=key[0], model=key[1])
                self._counters["alarm_events"] += 1
                shown[key] = snap
                reported += 1
                if reported % _EVENTS_PER_YIELD == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(0)
            for key, snap in shown.items():
                ids = self._ids.get(key)
                if ids is not None:
                    try:
                        await events.shown(ids, snap)
                    except Exception:
                        self._log.exception("alarm_nodes_failed", asset=key[0], model=key[1])

    # -- the store ---------------------------------------------------------------------------

    async def _seed(self, keys: Sequence[Key]) -> None:
        if not keys:
            return
        faults = {k[1]: tuple(sorted(self._states[k].faults)) for k in keys}
        newest = await self._service.newest(faults, sorted({a for a, _ in keys}))
        wanted = set(keys)
        found = {(r.asset, r.model): r for r in newest if (r.asset, r.model) in wanted}
        labels = await self._service.latest_labels(sorted(found)) if found else {}
        for key in keys:
            state = self._states.get(key)
            if state is None:
                continue
            snap = state.seed(found.get(key), labels.get(key))
            if snap is not None:
                self._push(key, snap)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll_once()
                if self._poll_failing:
                    self._poll_failing = False
                    self._log.info("alarm_store_back")
            except BridgeError as exc:
                if not self._poll_failing:  # once per outage, not once per poll
                    self._poll_failing = True
                    self._log.warning("alarm_store_unavailable", error=str(exc))
            except Exception:
                self._log.exception("alarm_poll_failed")

    async def poll_once(self) -> None:
        """What the store says since the last poll: the acknowledgements and confirmations of
        the alarms that wait for one, and alerts raised since (one bounded read each)."""
        waiting = [
            s.alert.prediction_id
            for s in self._states.values()
            if s.alert is not None and (not s.acked or not s.confirmed)
        ]
        if waiting:
            for record in await self._service.of_predictions(waiting):
                self._apply(record, adopt=False)
        if self._last_id is None:
            self._last_id = await self._service.last_id()
            return
        for record in await self._service.raised_after(self._last_id, _NEW_PER_POLL):
            self._last_id = max(self._last_id, record.alert_id)
            self._apply(record, adopt=True)

    def _apply(self, record: AlarmRecord, *, adopt: bool) -> None:
        key = (record.asset, record.model)
        state = self._states.get(key)
        if state is None:
            return
        snaps = state.adopt(record) if adopt else state.stored(record)
        for snap in snaps:
            self._push(key, snap)

    # -- methods -----------------------------------------------------------------------------

    async def _prepare(
        self, server: Server, ns: int, nid: Callable[[str], ua.NodeId]
    ) -> AlarmNodes:
        if self._nodes is not None and self._server is server:
            return self._nodes
        self._server = server
        nodes = AlarmNodes(server, ns, nid)
        await nodes.prepare()
        self._nodes = nodes
        self._events = Events(server, nodes.root)
        self._history = AlarmHistory(server, self._service, self._scope, self._describe)
        # asyncua's RefreshStart/RefreshEnd events and its ConditionRefresh methods, whose
        # callbacks are then replaced by ours (see _alarmevents).
        await server.iserver.setup_condition_methods()
        link = server.iserver.isession.add_method_callback
        for refresh in (
            ObjectIds.ConditionType_ConditionRefresh,
            ObjectIds.ConditionType_ConditionRefresh2,
        ):
            link(make_node_id(refresh, 0), self._events.refresh)
        link(
            make_node_id(ObjectIds.AcknowledgeableConditionType_Acknowledge, 0),
            self._handler("acknowledge", None),
        )
        link(
            make_node_id(ObjectIds.AcknowledgeableConditionType_Confirm, 0),
            self._handler("confirm", None),
        )
        for method in (
            ObjectIds.ConditionType_Enable,
            ObjectIds.ConditionType_Disable,
            ObjectIds.ConditionType_AddComment,
        ):
            link(make_node_id(method, 0), _not_supported)
        return nodes

    def _handler(self, action: str, bound: Key | None) -> Any:
        async def handle(parent: Any, *args: Any) -> Any:
            answer = await self._call(action, bound, parent, args)
            if isinstance(answer, ua.StatusCode):
                self._counters["alarm_calls_refused"] += 1
            return answer

        return handle

    async def _call(self, action: str, bound: Key | None, parent: Any, args: Sequence[Any]) -> Any:
        # The ruleset refuses Call to non-operators already; checked again where it matters.
        if caller_role() != OPERATOR:
            return _status(StatusCodes.BadUserAccessDenied)
        key = self._by_node.get(parent) if isinstance(parent, ua.NodeId) else None
        if key is None or parent != self._ids[key].alarm:
            return _status(StatusCodes.BadNodeIdUnknown)
        if bound is not None and key != bound:  # another alarm's method
            return _status(StatusCodes.BadMethodInvalid)
        if len(args) < 2:
            return _status(StatusCodes.BadArgumentsMissing)
        if len(args) > 2:
            return _status(StatusCodes.BadTooManyArguments)
        given = getattr(args[0], "Value", args[0])
        if not isinstance(given, bytes):
            return _status(StatusCodes.BadInvalidArgument)
        comment = _comment(args[1])
        state = self._states[key]
        refusal = (
            state.refuse_acknowledge(given)
            if action == "acknowledge"
            else state.refuse_confirm(given)
        )
        if refusal is not None:
            return _status(_REFUSED[refusal])
        alert = state.alert
        assert alert is not None
        by = caller_name()
        try:
            answer, record = await self._store(action, alert.prediction_id, by, comment)
        except BridgeError as exc:
            self._log.error("alarm_not_stored", action=action, error=str(exc))
            return _status(StatusCodes.BadResourceUnavailable)
        if record is not None:
            self._apply(record, adopt=False)
        if answer == "done":
            self._log.info(
                "alarm_acknowledged" if action == "acknowledge" else "alarm_confirmed",
                asset=key[0],
                model=key[1],
                prediction=alert.prediction_id,
                by=by,
            )
            return []
        if answer == "missing":
            self._log.warning(
                "alarm_alert_not_stored", prediction=alert.prediction_id, waited_s=self.ack_wait_s
            )
            return _status(StatusCodes.BadResourceUnavailable)
        if answer == "unacknowledged":
            return _status(StatusCodes.BadInvalidState)
        return _status(_BEFORE[action])

    async def _store(
        self, action: str, prediction_id: str, by: str, comment: str
    ) -> tuple[AlarmAnswer, AlarmRecord | None]:
        """The acknowledgement (confirmation) in the store. The alert writer commits an alert a
        moment after the prediction that raised it reached the HMI: a "missing" alert is
        asked for again until ``ack_wait_s``."""
        call = self._service.acknowledge if action == "acknowledge" else self._service.confirm
        deadline = time.monotonic() + self.ack_wait_s
        while True:
            answer, record = await call(prediction_id, by, comment)
            if answer != "missing" or time.monotonic() >= deadline:
                return answer, record
            await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    # -- events history ----------------------------------------------------------------------

    def _scope(self, nodeid: ua.NodeId) -> Scope | None:
        faults = {k: tuple(sorted(s.faults)) for k, s in self._states.items()}
        key = self._by_node.get(nodeid)
        if key is not None:
            return scope_for({key: faults[key]}, [key[0]])
        asset = self._assets.get(nodeid)
        if asset is not None:
            return scope_for(faults, [asset])
        nodes = self._nodes
        if nodeid == _SERVER or (nodes is not None and nodeid == nodes.root):
            return scope_for(faults, None)
        return None

    def _describe(self, asset: str, model: str) -> tuple[AlarmIds, int]:
        key = (asset, model)
        ids = self._ids.get(key)
        state = self._states.get(key)
        severity = (
            state.severity if state is not None else _severity_of(self._states.values(), model)
        )
        if ids is None:  # an asset the server no longer shows: the ids it had
            assert self._nodes is not None
            ids = self._nodes.ids(asset, model)
        return ids, severity


def _severity_of(states: Iterable[AlarmState], model: str) -> int:
    return next((s.severity for s in states if s.model == model), 500)


async def _not_supported(parent: Any, *args: Any) -> ua.StatusCode:
    """Enable, Disable and AddComment: the alarms are always enabled; comments come with the
    acknowledgement and the confirmation."""
    return _status(StatusCodes.BadNotSupported)
