"""The Actions page: every write-back action as the operator needs to see it (what it does now,
who armed it, why it faulted or fell back, its last write and read-back, the request waiting
for confirmation), and for operators the forms that arm, reset, confirm and refuse.

The page reads what ``GET /api/v1/actions`` answers (the same function); its forms are calls of
the REST API made by the console's script with the session's CSRF token, so the scope check,
the stale-request check and the actor recorded (``key:<id>``, channel ``console``) are the
API's. A refusal (nothing pending, a replaced request, a fault, another gateway serving the
asset) comes back as the API's 409 and its reason, shown in the page's status line.
"""

from __future__ import annotations

import math
import time
from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from bridge.api.actions import ActionOut, describe_actions
from bridge.api.deps import Services
from bridge.api.services import ApiServices
from bridge.store.actions import ActionEvent, ActionEventFilter

from .login import PREFIX, CurrentUser
from .render import page

__all__ = ["build_actions_page_router"]


def _ts(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def _value(v: float | int | bool | None) -> str:
    """A value as the target holds it: booleans as words, floats without noise."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _address(a: ActionOut) -> str:
    return ", ".join(f"{k} {v}" for k, v in a.target.address.items())


def _last_decisions(services: ApiServices, names: list[str]) -> dict[str, ActionEvent]:
    out: dict[str, ActionEvent] = {}
    for name in names:
        newest = services.action_log.events(ActionEventFilter(action=name), 1)
        if newest:
            out[name] = newest[0]
    return out


def build_actions_page_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @router.get("/actions", response_class=HTMLResponse)
    async def actions(user: CurrentUser, services: Services) -> HTMLResponse:
        control = services.actions
        rows = [] if control is None else await describe_actions(services, control)
        # The newest event says what became of a confirmation the rules refused after all.
        last = await services.queries.run(_last_decisions, services, [a.name for a in rows])
        return page(
            "actions.html",
            user.session,
            user=user,
            nav="actions",
            actions=rows,
            last=last,
            # A gateway has a reloader; an API started apart from it (`bridge api`) has none.
            gateway=services.reloader is not None,
            running=control is not None,
            now=time.time(),
            ts=_ts,
            value=_value,
            address=_address,
        )

    return router
