"""The write-back actions over REST: what each one does now, its stored events, and what people
do to it (arm, reset, confirm, refuse).

The running gateway's ``ActionControl`` decides and writes; this module only asks it and
reads the store. Its live state (mode applied, armed version, pending request) comes from the
gateway; when and by whom it was armed or faulted and its last write come from the store, so
they stay right across restarts.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from bridge.auth import Scope
from bridge.config.actions import ResolvedAction
from bridge.errors import BridgeError, StoreError
from bridge.store.actions import (
    OUTCOMES,
    ActionEvent,
    ActionEventFilter,
    ActionRepository,
    ActionStateRecord,
)
from bridge.store.apikeys import ApiKeyRecord
from bridge.types import ActionView

from .auth import audit_actor, require, secured
from .deps import Queries, Services, Settings
from .params import MAX_LIMIT, WIDE_RANGE, Since, Until, bounded_range
from .services import ActionControl, ApiServices
from .timeparse import epoch_to_datetime

__all__ = ["ActionEventOut", "ActionOut", "build_actions_router", "describe_actions"]

R = TypeVar("R")
Value = float | int | bool | None
ActionName = Annotated[
    str, Path(min_length=1, max_length=200, description="The action's name in the mapping.")
]
_OUTCOME_PATTERN = f"^({'|'.join(OUTCOMES)})$"
_NOT_HERE = (
    "this API has no write-back actions to act on: the gateway serving it has no `actions:` "
    "in its mapping, or the API runs apart from a gateway (ask the gateway's own API)"
)


class TargetOut(BaseModel):
    kind: Literal["modbus", "opcua"]
    source: str = Field(description="The source whose connection writes it.")
    address: dict[str, Any] = Field(
        description="Where, as in the mapping (Modbus table, address, type; OPC UA node, type)."
    )


class ArmedOut(BaseModel):
    version: str = Field(description='The model version it was armed under (`""`: a tag).')
    by: str | None
    at: datetime | None


class FaultOut(BaseModel):
    reason: str
    at: datetime | None


class WriteOut(BaseModel):
    value: Value
    read_back: Value = Field(description="What the target held after the write.")
    at: datetime | None
    by: str = Field(description="`system`, or who confirmed it.")
    event_id: str


class PendingOut(BaseModel):
    id: str = Field(description="Name it in `confirm` or `refuse` (a newer request has another).")
    value: Value
    deadline: datetime | None
    prediction_id: str | None = Field(description="The prediction that asked for it, if any.")


class ActionOut(BaseModel):
    name: str
    asset: str
    description: str
    target: TargetOut
    mode: Literal["auto", "confirm", "shadow"] = Field(description="The mapping's mode.")
    applied: str = Field(
        description="What it does now: its mode, `shadow` while not armed or fallen back, "
        "`fault` until reset."
    )
    armed: ArmedOut | None
    fallback: str | None = Field(description="Why it fell back to shadow (until armed again).")
    fault: FaultOut | None
    last_write: WriteOut | None
    pending: PendingOut | None = Field(description="The request waiting for confirmation.")
    served: bool = Field(description="False: another gateway of the fleet acts for its asset.")


class ActionEventOut(BaseModel):
    id: int
    event_id: str
    at: datetime | None
    gateway: str
    action: str
    asset: str
    outcome: str = Field(description=", ".join(OUTCOMES))
    mode: str = Field(description="The mode applied.")
    actor: str = Field(description="`system`, or who confirmed or refused (`key:<id>`, ...).")
    requested: Value
    value: Value
    read_back: Value
    prediction_id: str | None
    model: str | None
    model_version: str | None
    lineage: dict[str, Any] | None
    interlocks: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    reason: str

    @classmethod
    def of(cls, e: ActionEvent) -> ActionEventOut:
        return cls(
            id=e.id,
            event_id=e.event_id,
            at=epoch_to_datetime(e.at),
            gateway=e.gateway,
            action=e.action,
            asset=e.asset,
            outcome=e.outcome,
            mode=e.mode,
            actor=e.actor,
            requested=e.requested,
            value=e.value,
            read_back=e.read_back,
            prediction_id=e.prediction_id,
            model=e.model,
            model_version=e.model_version,
            lineage=e.lineage,
            interlocks=e.interlocks,
            checks=e.checks,
            reason=e.reason,
        )


class ActionEventPage(BaseModel):
    items: list[ActionEventOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class CommentIn(BaseModel):
    comment: str = Field(default="", max_length=2000, description="Why (kept in the ledger).")


class AnswerIn(CommentIn):
    pending_id: str = Field(
        min_length=1,
        max_length=64,
        description="`pending.id` of the request being answered: a newer request that "
        "replaced it is not answered by this one.",
    )


class ConfirmOut(BaseModel):
    outcome: Literal["written", "fault", "refused"] = Field(
        description="`refused`: the interlocks or limits, judged again now, stopped it."
    )
    action: ActionOut


def _target(a: ResolvedAction) -> TargetOut:
    dumped = a.target.model_dump(mode="json", exclude_none=True)
    source = str(dumped.pop("source"))
    kind: Literal["modbus", "opcua"] = "opcua" if "node" in dumped else "modbus"
    return TargetOut(kind=kind, source=source, address=dumped)


def _describe(
    a: ResolvedAction,
    s: ActionView,
    stored: ActionStateRecord | None,
    written: ActionEvent | None,
    asked: ActionEvent | None,
    served: bool,
) -> ActionOut:
    armed = None
    if s.armed_version is not None:
        at = stored.armed_at if stored is not None else None
        armed = ArmedOut(version=s.armed_version, by=s.armed_by, at=epoch_to_datetime(at))
    fault = None
    if s.fault is not None:
        at = stored.faulted_at if stored is not None else None
        fault = FaultOut(reason=s.fault, at=epoch_to_datetime(at))
    last = None
    if written is not None:
        last = WriteOut(
            value=written.value,
            read_back=written.read_back,
            at=epoch_to_datetime(written.at),
            by=written.actor,
            event_id=written.event_id,
        )
    pending = None
    if s.pending_id is not None:
        pending = PendingOut(
            id=s.pending_id,
            value=s.pending_value,
            deadline=epoch_to_datetime(s.pending_until),
            # The runner keeps one request per action: its newest ``await_confirm`` event.
            prediction_id=asked.prediction_id if asked is not None else None,
        )
    mode: Literal["auto", "confirm", "shadow"] = (
        "auto" if a.mode == "auto" else "confirm" if a.mode == "confirm" else "shadow"
    )
    return ActionOut(
        name=a.name,
        asset=a.asset,
        description=a.description,
        target=_target(a),
        mode=mode,
        applied=s.applied,
        armed=armed,
        fallback=s.fallback,
        fault=fault,
        last_write=last,
        pending=pending,
        served=served,
    )


def _stored(
    repo: ActionRepository,
) -> tuple[dict[str, ActionStateRecord], dict[str, ActionEvent], dict[str, ActionEvent]]:
    return repo.states(), repo.latest("written"), repo.latest("await_confirm")


async def describe_actions(services: ApiServices, control: ActionControl) -> list[ActionOut]:
    """Every action as ``GET /api/v1/actions`` shows it (the console's page shows the same)."""
    # The live statuses are taken here, on the loop that owns them; the store on query threads.
    statuses = control.statuses()
    served = {s.name: control.serves(s.name) for s in statuses}
    states, written, asked = await services.queries.run(_stored, services.action_log)
    return [
        _describe(
            control.actions[s.name],
            s,
            states.get(s.name),
            written.get(s.name),
            asked.get(s.name),
            served[s.name],
        )
        for s in statuses
    ]


def _control(services: ApiServices) -> ActionControl:
    control: ActionControl | None = services.actions
    if control is None:
        raise HTTPException(409, _NOT_HERE)
    return control


def _known(control: ActionControl, name: str) -> None:
    if name not in control.actions:
        known = ", ".join(sorted(control.actions)) or "(none)"
        raise HTTPException(404, f"no action {name!r}; the mapping has: {known}")


def build_actions_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/actions", tags=["actions"])
    # 409, as POST /reload without a gateway: a state of this API, not a passing outage.
    gone = (409, "No actions here: the gateway has none, or the API runs apart from it")
    refused = (
        409,
        "No actions here (no `actions:`, or the API runs apart from the gateway), or not now: "
        "nothing pending (or another request), faulted, or served by another gateway",
    )

    @router.get(
        "",
        response_model=list[ActionOut],
        summary="Every write-back action: state, armed, fault, last write, pending request",
        **secured(Scope.READ, gone),
    )
    async def list_actions(services: Services) -> list[ActionOut]:
        return await describe_actions(services, _control(services))

    @router.get(
        "/{name}/events",
        response_model=ActionEventPage,
        summary="An action's recorded decisions and writes, newest first",
        description="From the store: the events of an action no longer in the mapping too.",
        **secured(Scope.READ, WIDE_RANGE),
    )
    async def events(
        services: Services,
        settings: Settings,
        queries: Queries,
        name: ActionName,
        outcome: Annotated[
            str | None,
            Query(pattern=_OUTCOME_PATTERN, description="Only this outcome."),
        ] = None,
        since: Since = None,
        until: Until = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = 100,
        cursor: Annotated[
            str | None,
            Query(pattern=r"^[0-9]{1,18}$", description="`next_cursor` of the previous page."),
        ] = None,
    ) -> ActionEventPage:
        since_ts, until_ts = bounded_range(settings.max_history_days, since, until)
        before = None if cursor is None else int(cursor)
        where = ActionEventFilter(action=name, outcome=outcome, since=since_ts, until=until_ts)
        rows = await queries.run(services.action_log.events, where, limit + 1, before)
        control = services.actions
        if not rows and cursor is None and control is not None:
            _known(control, name)
        more = len(rows) > limit
        rows = rows[:limit]
        return ActionEventPage(
            items=[ActionEventOut.of(e) for e in rows],
            next_cursor=str(rows[-1].id) if more else None,
        )

    async def describe(services: ApiServices, control: ActionControl, name: str) -> ActionOut:
        return next(a for a in await describe_actions(services, control) if a.name == name)

    def checked(services: ApiServices, name: str, *, faulted_ok: bool = False) -> ActionControl:
        control = _control(services)
        _known(control, name)
        if not control.serves(name):
            raise HTTPException(
                409,
                f"action {name} is served by another gateway of the fleet now (the one "
                f"holding the lease of asset {control.actions[name].asset}); ask its API",
            )
        status = next(s for s in control.statuses() if s.name == name)
        if status.fault is not None and not faulted_ok:
            raise HTTPException(
                409, f"action {name} is faulted ({status.fault}); look why, then reset it"
            )
        return control

    @router.post(
        "/{name}/arm",
        response_model=ActionOut,
        summary="Let an `auto` or `confirm` action act, under the model version serving now",
        **secured(Scope.OPERATE, gone, refused),
    )
    async def arm(
        request: Request,
        services: Services,
        key: Annotated[ApiKeyRecord, Depends(require(Scope.OPERATE))],
        name: ActionName,
        body: CommentIn,
    ) -> ActionOut:
        control = checked(services, name)
        actor, _ = audit_actor(request, key)
        await _call(control.arm(name, actor, body.comment))
        return await describe(services, control, name)

    @router.post(
        "/{name}/reset",
        response_model=ActionOut,
        summary="Clear a fault; the action stays in shadow until armed again",
        **secured(Scope.OPERATE, gone, refused),
    )
    async def reset(
        request: Request,
        services: Services,
        key: Annotated[ApiKeyRecord, Depends(require(Scope.OPERATE))],
        name: ActionName,
        body: CommentIn,
    ) -> ActionOut:
        control = checked(services, name, faulted_ok=True)
        actor, _ = audit_actor(request, key)
        await _call(control.reset(name, actor, body.comment))
        return await describe(services, control, name)

    @router.post(
        "/{name}/confirm",
        response_model=ConfirmOut,
        summary="Confirm the pending request: judged again now, then written and read back",
        **secured(Scope.OPERATE, gone, refused),
    )
    async def confirm(
        request: Request,
        services: Services,
        key: Annotated[ApiKeyRecord, Depends(require(Scope.OPERATE))],
        name: ActionName,
        body: AnswerIn,
    ) -> ConfirmOut:
        control = checked(services, name)
        actor, _ = audit_actor(request, key)
        outcome = await _call(control.confirm(name, actor, body.pending_id, body.comment))
        done: Literal["written", "fault", "refused"] = (
            "written" if outcome == "written" else "fault" if outcome == "fault" else "refused"
        )
        return ConfirmOut(outcome=done, action=await describe(services, control, name))

    @router.post(
        "/{name}/refuse",
        response_model=ActionOut,
        summary="Refuse the pending request: nothing is written",
        **secured(Scope.OPERATE, gone, refused),
    )
    async def refuse(
        request: Request,
        services: Services,
        key: Annotated[ApiKeyRecord, Depends(require(Scope.OPERATE))],
        name: ActionName,
        body: AnswerIn,
    ) -> ActionOut:
        control = checked(services, name, faulted_ok=True)
        actor, _ = audit_actor(request, key)
        await _call(control.refuse(name, actor, body.pending_id, body.comment))
        return await describe(services, control, name)

    return router


async def _call(call: Awaitable[R]) -> R:
    """Await an ``ActionControl`` call: a request it cannot do now is 409 with its reason
    (the store's failures stay 503)."""
    try:
        return await call
    except StoreError:
        raise
    except BridgeError as exc:
        raise HTTPException(409, str(exc)) from exc
