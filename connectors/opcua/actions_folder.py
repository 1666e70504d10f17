"""The ``Actions`` folder of the gateway's OPC UA server: the write-back actions, their state,
last write and waiting confirmation, and the operators' methods on them.

    Objects/Actions/<action>/{Mode, State, Armed, ModelVersion, FaultReason, FallbackReason,
                              LastValue, LastWriteTime, ReadBack, PendingValue,
                              PendingDeadline, PendingId}
    Objects/Actions/<action>/{Arm(Comment), Reset(Comment), Confirm(PendingId, Comment),
                              Refuse(PendingId, Comment)}
    nsu=<namespace>;s=Actions.<action>.State

Fed with the core's plain statuses (``bridge.types.ActionView``); every variable is read-only,
and changes reach subscribed clients. The methods are the operators' (as the alarms'
Acknowledge): a reader is refused with BadUserAccessDenied, the actor is ``opcua:<user>``, and
what the core cannot do (nothing waiting, a stale PendingId, no model version serving to arm
under) is BadInvalidState, the reason in the gateway's log. Confirm and Refuse take the
PendingId the operator saw, so an answer never lands on a newer request that replaced it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from bridge.cancel import cancel_and_wait
from bridge.connectors.opcua._caller import caller_name, caller_role
from bridge.connectors.opcua.convert import make_node_id
from bridge.connectors.opcua.encode import make_status
from bridge.errors import BridgeError
from bridge.types import ActionControl, ActionView

__all__ = ["ACTION_FIELDS", "ActionsFolder", "state_of"]

log = structlog.get_logger(__name__)

_V = ua.VariantType
ACTION_FIELDS: dict[str, ua.VariantType] = {
    "Mode": _V.String,
    "State": _V.String,
    "Armed": _V.Boolean,
    "ModelVersion": _V.String,
    "FaultReason": _V.String,
    "FallbackReason": _V.String,
    "LastValue": _V.Double,
    "LastWriteTime": _V.DateTime,
    "ReadBack": _V.Double,
    "PendingValue": _V.Double,
    "PendingDeadline": _V.DateTime,
    "PendingId": _V.String,
}
# Only to give each variable its DataType; the value shown is null until the first status.
_INITIAL: dict[ua.VariantType, object] = {
    _V.String: "",
    _V.Boolean: False,
    _V.Double: 0.0,
    _V.DateTime: datetime(1601, 1, 1, tzinfo=UTC),
}
_MAX_COMMENT = 2000
_OPERATOR = "operator"


def state_of(status: ActionView) -> str:
    """``faulted`` until reset, ``fallback`` while fallen back to shadow, ``armed`` while it
    may act, else ``unarmed`` (a shadow action, or one nobody armed)."""
    if status.fault is not None:
        return "faulted"
    if status.fallback is not None:
        return "fallback"
    return "armed" if status.armed_version is not None else "unarmed"


def _number(value: object) -> float | None:
    # A coil's true/false shows as 1.0/0.0: one DataType for every target.
    return float(cast(float, value)) if value is not None else None


def _time(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def _fields(s: ActionView) -> dict[str, object]:
    return {
        "Mode": s.mode,
        "State": state_of(s),
        "Armed": s.armed_version is not None and s.fault is None and s.fallback is None,
        "ModelVersion": s.armed_version or "",
        "FaultReason": s.fault or "",
        "FallbackReason": s.fallback or "",
        "LastValue": _number(s.last_value),
        "LastWriteTime": _time(s.last_time),
        "ReadBack": _number(s.read_back),
        "PendingValue": _number(s.pending_value),
        "PendingDeadline": _time(s.pending_until),
        "PendingId": s.pending_id or "",
    }


def _dv(value: object, vtype: ua.VariantType) -> ua.DataValue:
    now: Any = datetime.now(UTC)
    if value is None:  # nothing to show (no write yet, nothing waiting): no value at all
        return ua.DataValue(StatusCode=make_status(StatusCodes.BadNoValue), SourceTimestamp=now)
    return ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=now)


def _argument(name: str, description: str) -> ua.Argument:
    arg = ua.Argument()
    arg.Name = name
    arg.DataType = make_node_id(ObjectIds.String, 0)
    arg.ValueRank = -1
    arg.Description = ua.LocalizedText(description)
    return arg


def _text(args: Sequence[Any], index: int) -> str:
    raw = args[index] if index < len(args) else None
    raw = getattr(raw, "Value", raw)
    return raw if isinstance(raw, str) else ""


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(cast(Any, code))


_PENDING_ID = _argument("PendingId", "Id of the waiting request (the action's PendingId)")
_COMMENT = _argument("Comment", "Free text (may be empty)")
_STATE = _argument("State", "The action's State after the call")
_OUTCOME = _argument("Outcome", "written, fault, or refused (by its interlocks or limits now)")
# method -> (inputs, outputs)
_METHODS: dict[str, tuple[list[ua.Argument], list[ua.Argument]]] = {
    "Arm": ([_COMMENT], [_STATE]),
    "Reset": ([_COMMENT], [_STATE]),
    "Confirm": ([_PENDING_ID, _COMMENT], [_OUTCOME]),
    "Refuse": ([_PENDING_ID, _COMMENT], [_STATE]),
}


class ActionsFolder:
    def __init__(self, nid: Callable[[str], ua.NodeId], counters: dict[str, int]) -> None:
        self._nid = nid
        self._ns = 0  # the server's namespace index, known at build
        self._counters = counters
        self._server: Server | None = None
        self._control: ActionControl | None = None
        self._folder = False
        self._nodes: set[str] = set()  # actions with an object
        self._last: dict[tuple[str, str], object] = {}
        self._states: dict[str, str] = {}
        self._latest: Sequence[ActionView] | None = None
        self._task: asyncio.Task[None] | None = None

    async def build(self, server: Server, ns: int) -> None:
        """Ready to show statuses; the folder itself is made with the first action (a
        gateway without actions has none)."""
        self._ns = ns
        self._server = server
        if self._latest is not None:  # statuses handed over before the server ran
            await self._show()

    def offer(self, statuses: Sequence[ActionView], control: ActionControl) -> None:
        """Keep the newest statuses and show them from a task of the folder's own (called on
        the event loop by the core, which does not wait for a display)."""
        self._latest, self._control = statuses, control
        if self._server is not None and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._show(), name="opcua:actions")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        self._server = None

    async def _show(self) -> None:
        while self._latest is not None and self._server is not None:
            statuses, self._latest = self._latest, None
            try:
                await self._apply(self._server, statuses)
            except Exception:  # a defect must not stop the next statuses from being shown
                log.exception("actions_folder_update_failed")

    async def _apply(self, server: Server, statuses: Sequence[ActionView]) -> None:
        if statuses and not self._folder:
            await server.nodes.objects.add_folder(self._nid("Actions"), f"{self._ns}:Actions")
            self._folder = True
        for status in statuses:
            if status.name not in self._nodes:
                await self._add(server, status.name)
                self._nodes.add(status.name)
            self._states[status.name] = state_of(status)
            for field, value in _fields(status).items():
                key = (status.name, field)
                if key in self._last and self._last[key] == value:
                    continue
                self._last[key] = value
                nodeid = self._nid(f"Actions.{status.name}.{field}")
                await server.write_attribute_value(nodeid, _dv(value, ACTION_FIELDS[field]))
                self._counters["writes"] += 1

    async def _add(self, server: Server, name: str) -> None:
        ns = self._ns
        folder = server.get_node(self._nid("Actions"))
        obj = await folder.add_object(self._nid(f"Actions.{name}"), f"{ns}:{name}")
        for field, vtype in ACTION_FIELDS.items():
            nodeid = self._nid(f"Actions.{name}.{field}")
            # Read-only (AccessLevel CurrentRead, add_variable's default) for everyone.
            await obj.add_variable(nodeid, f"{ns}:{field}", _INITIAL[vtype], vtype)
            await server.write_attribute_value(nodeid, _dv(None, vtype))
        for method, (inputs, outputs) in _METHODS.items():
            nodeid = self._nid(f"Actions.{name}.{method}")
            await obj.add_method(
                nodeid, f"{ns}:{method}", self._handler(name, method), inputs, outputs
            )

    def _handler(self, name: str, method: str) -> Any:
        async def handle(parent: Any, *args: Any) -> Any:
            return await self._on_call(name, method, args)

        return handle

    async def _on_call(self, name: str, method: str, args: Sequence[Any]) -> Any:
        # The ruleset already refuses Call to non-operators; checked again where it matters.
        if caller_role() != _OPERATOR:
            self._counters["action_calls_refused"] = (
                self._counters.get("action_calls_refused", 0) + 1
            )
            return _status(StatusCodes.BadUserAccessDenied)
        control = self._control
        if control is None:
            return _status(StatusCodes.BadInvalidState)
        actor = f"opcua:{caller_name()}"
        pending_id = _text(args, 0).strip() if method in ("Confirm", "Refuse") else None
        comment = _text(args, 1 if pending_id is not None else 0)[:_MAX_COMMENT]
        if pending_id == "":
            return _status(StatusCodes.BadArgumentsMissing)
        try:
            if method == "Arm":
                await control.arm(name, actor, comment)
            elif method == "Reset":
                await control.reset(name, actor, comment)
            elif method == "Confirm":
                outcome = await control.confirm(name, actor, pending_id, comment)
                log.info("action_call", action=name, method=method, actor=actor, outcome=outcome)
                return [ua.Variant(outcome, ua.VariantType.String)]
            else:
                await control.refuse(name, actor, pending_id, comment)
        except BridgeError as exc:
            log.warning(
                "action_call_refused", action=name, method=method, actor=actor, why=str(exc)
            )
            return _status(StatusCodes.BadInvalidState)
        log.info("action_call", action=name, method=method, actor=actor)
        return [ua.Variant(self._state_after(name, method), ua.VariantType.String)]

    def _state_after(self, name: str, method: str) -> str:
        # The status change reaches the folder a moment after the call; say what it will be.
        if method == "Arm":
            return "faulted" if self._states.get(name) == "faulted" else "armed"
        if method == "Reset":
            return "unarmed"
        return self._states.get(name, "unarmed")
