"""Read-only endpoints under /api/v1. State comes from the GatewayView and the store only."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status

from bridge.auth import Scope
from bridge.store.history import PredictionHistory

from .auth import secured
from .cursor import HISTORY_CURSOR_PATTERN, decode_history, encode_history
from .latest import LatestBody, encode_predictions
from .params import MAX_LIMIT, Since, Until, time_range
from .schemas import HealthOut, ModelOut, PredictionOut, TagOut
from .view import GatewayView

__all__ = ["build_router"]

NEXT_CURSOR_HEADER = "X-Next-Cursor"
_PAGE_HEADERS = {
    NEXT_CURSOR_HEADER: {
        "description": "Cursor of the next page (pass it as `cursor`); absent on the last page.",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'URL of the next page, `<...>; rel="next"`; absent on the last page.',
        "schema": {"type": "string"},
    },
}


def _view(request: Request) -> GatewayView:
    view: GatewayView = request.app.state.view
    return view


def _history(request: Request) -> PredictionHistory:
    history: PredictionHistory = request.app.state.history
    return history


View = Annotated[GatewayView, Depends(_view)]
History = Annotated[PredictionHistory, Depends(_history)]
AssetFilter = Annotated[
    str | None, Query(description="Only this asset.", min_length=1, max_length=200)
]


def build_router() -> APIRouter:
    # Handlers that read the view are async on purpose: they run on the event loop that owns
    # the live state, never in FastAPI's thread pool where they would race with it.
    router = APIRouter(prefix="/api/v1")
    read = secured(Scope.READ)
    latest_body = LatestBody()  # one per app, like the view it caches

    @router.get(
        "/health",
        response_model=HealthOut,
        summary="Overall and per-component health",
        responses={503: {"model": HealthOut, "description": "Every component is down"}},
    )
    async def health(view: View, response: Response) -> HealthOut:
        out = HealthOut.of(view.gateway_id, view.started_at(), view.health())
        if out.status == "down":
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return out

    @router.get(
        "/tags",
        response_model=list[TagOut],
        summary="Current value of every tag",
        **read,
    )
    async def tags(view: View, asset: AssetFilter = None) -> list[TagOut]:
        now = time.time()
        return [
            TagOut.of(s, now)
            for s in sorted(view.tag_states(), key=lambda s: s.tag)
            if asset is None or s.asset == asset
        ]

    @router.get(
        "/predictions/latest",
        response_model=list[PredictionOut],
        summary="Latest prediction of every asset and model",
        **read,
    )
    async def latest_predictions(view: View, asset: AssetFilter = None) -> Response:
        # Bytes, not models: the body is encoded once per change of the latest predictions
        # (bridge/api/latest.py); response_model above still documents the schema.
        if asset is None:
            body = latest_body.get(view.latest_predictions())
        else:
            body = encode_predictions([p for p in view.latest_predictions() if p.asset == asset])
        return Response(content=body, media_type="application/json")

    history_route = secured(Scope.READ)
    history_route["responses"][200] = {"description": "One page", "headers": _PAGE_HEADERS}

    @router.get(
        "/predictions",
        response_model=list[PredictionOut],
        summary="Stored predictions, newest first, one page at a time",
        description="The next page's cursor is in the `X-Next-Cursor` and `Link` headers.",
        **history_route,
    )
    async def predictions(
        history: History,
        request: Request,
        response: Response,
        asset: AssetFilter = None,
        since: Since = None,
        until: Until = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many.")] = 100,
        cursor: Annotated[
            str | None,
            Query(
                pattern=HISTORY_CURSOR_PATTERN,
                description="`X-Next-Cursor` of the previous page.",
            ),
        ] = None,
    ) -> list[PredictionOut]:
        since_ts, until_ts = time_range(since, until)
        try:
            after = None if cursor is None else decode_history(cursor)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        # The query is blocking database I/O: keep it off the event loop.
        page = await asyncio.to_thread(history.page, asset, since_ts, until_ts, limit, after)
        if page.next_key is not None:
            # A header, not an envelope, keeps the body the plain list older clients expect.
            token = encode_history(page.next_key)
            response.headers[NEXT_CURSOR_HEADER] = token
            next_url = request.url.include_query_params(cursor=token)
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return [PredictionOut.of(p) for p in page.items]

    @router.get("/models", response_model=list[ModelOut], summary="Loaded models", **read)
    async def models(view: View) -> list[ModelOut]:
        return [ModelOut.of(m) for m in sorted(view.models(), key=lambda m: (m.name, m.version))]

    return router
