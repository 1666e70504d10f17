"""``POST /api/v1/reload``: apply the changed mapping file without a restart (scope ``admin``).

An invalid mapping is refused with the same ``file:line`` lines as ``bridge validate`` (422,
``errors``); the running mapping keeps going."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bridge.auth import Scope
from bridge.errors import ConfigError

from .auth import checked_key, secured
from .deps import Services
from .problems import PROBLEM_MEDIA_TYPE, problem
from .reloadable import ReloadUnavailable

__all__ = ["ReloadOut", "build_reload_router"]


class ReloadOut(BaseModel):
    revision: str = Field(description="sha256 of the mapping file now running.")
    previous_revision: str = Field(description="sha256 of the mapping that ran before.")
    changes: dict[str, list[str]] = Field(
        description="What was applied, e.g. `sources.added`, `models.changed`, `tags.removed`."
    )
    restart_needed: list[str] = Field(
        description="`gateway:` keys that changed but apply only at the next start (e.g. "
        "`gateway.api.port`), and outputs that could not start (`outputs.<name>`)."
    )
    outbox_kept: dict[str, int] = Field(
        default_factory=dict,
        description="Per removed MES destination: its undelivered events, kept in the store "
        "(`bridge outbox list`; sent if a destination of that name comes back).",
    )


def build_reload_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    route = secured(
        Scope.ADMIN,
        (422, "The mapping is invalid: `errors` lists each problem as `file:line: key: ...`"),
        (409, "The gateway is starting or stopping, or this API runs without a gateway"),
    )

    @router.post(
        "/reload",
        response_model=ReloadOut,
        summary="Apply the changed mapping file without a restart",
        description="Reads the mapping file again, validates it like `bridge validate`, and "
        "applies the difference: sources, tags, models and outputs added, removed or changed "
        "are started, stopped or rebuilt; unchanged ones keep running untouched.",
        **route,
    )
    async def reload(services: Services, request: Request) -> ReloadOut | JSONResponse:
        reloader = services.reloader
        if reloader is None:
            return problem(409, "this API is not served by a running gateway", request.url.path)
        try:
            key = checked_key(request)
            done = await reloader.reload("system" if key is None else f"key:{key.key_id}")
        except ConfigError as err:
            errors = [str(issue) for issue in err.issues]
            body = {
                "type": "about:blank",
                "title": HTTPStatus(422).phrase,
                "status": 422,
                "detail": f"the mapping has {len(errors)} problem(s); the running one is kept",
                "instance": request.url.path,
                "errors": errors,
            }
            return JSONResponse(body, status_code=422, media_type=PROBLEM_MEDIA_TYPE)
        except ReloadUnavailable as exc:
            return problem(409, str(exc), request.url.path)
        return ReloadOut(
            revision=done.revision,
            previous_revision=done.previous_revision,
            changes={k: list(v) for k, v in done.changes.items()},
            restart_needed=list(done.restart_needed),
            outbox_kept=dict(done.outbox_kept),
        )

    return router
