"""Read-only endpoints under /api/v1. State comes from the GatewayView and the store only."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status

from bridge.store.repository import PredictionRepository

from .schemas import ErrorOut, HealthOut, ModelOut, PredictionOut, TagOut
from .timeparse import parse_time
from .view import GatewayView

__all__ = ["build_router"]

MAX_LIMIT = 1000

_ERRORS: dict[int | str, dict[str, object]] = {
    422: {"model": ErrorOut, "description": "Invalid query parameter"},
}


def _view(request: Request) -> GatewayView:
    view: GatewayView = request.app.state.view
    return view


def _predictions(request: Request) -> PredictionRepository:
    repo: PredictionRepository = request.app.state.predictions
    return repo


View = Annotated[GatewayView, Depends(_view)]
Predictions = Annotated[PredictionRepository, Depends(_predictions)]
AssetFilter = Annotated[str | None, Query(description="Only this asset.", min_length=1)]


def _time_param(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise HTTPException(422, f"{name}: {exc}") from exc


def build_router() -> APIRouter:
    # Handlers that read the view are async on purpose: they run on the event loop that owns
    # the live state, never in FastAPI's thread pool where they would race with it.
    router = APIRouter(prefix="/api/v1")

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
        responses=_ERRORS,
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
        responses=_ERRORS,
    )
    async def latest_predictions(view: View, asset: AssetFilter = None) -> list[PredictionOut]:
        return [
            PredictionOut.of(p)
            for p in sorted(view.latest_predictions(), key=lambda p: (p.asset, p.model))
            if asset is None or p.asset == asset
        ]

    @router.get(
        "/predictions",
        response_model=list[PredictionOut],
        summary="Stored predictions, newest first",
        responses=_ERRORS,
    )
    async def predictions(
        repo: Predictions,
        asset: AssetFilter = None,
        since: Annotated[
            str | None, Query(description="From this time (inclusive): ISO 8601 or epoch seconds.")
        ] = None,
        until: Annotated[
            str | None, Query(description="Up to this time (inclusive): ISO 8601 or epoch seconds.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many.")] = 100,
    ) -> list[PredictionOut]:
        since_ts = _time_param("since", since)
        until_ts = _time_param("until", until)
        if since_ts is not None and until_ts is not None and since_ts > until_ts:
            raise HTTPException(422, "since is after until")
        # The query is blocking database I/O: keep it off the event loop.
        rows = await asyncio.to_thread(repo.query, asset, since_ts, until_ts, limit)
        return [PredictionOut.of(p) for p in rows]

    @router.get("/models", response_model=list[ModelOut], summary="Loaded models")
    async def models(view: View) -> list[ModelOut]:
        return [ModelOut.of(m) for m in sorted(view.models(), key=lambda m: (m.name, m.version))]

    return router
