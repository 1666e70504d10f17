"""Read-only endpoints under /api/v1. State comes from the GatewayView and the store only."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import TypeAdapter

from bridge.auth import Scope
from bridge.store.apikeys import ApiKeyRecord

from .auth import optional_key, secured
from .cursor import HISTORY_CURSOR_PATTERN, decode_history, encode_history
from .deps import History, Queries, Settings, View
from .latest import LatestBody, encode_predictions
from .params import MAX_LIMIT, WIDE_RANGE, Since, Until, bounded_range
from .schemas import ErrorOut, HealthOut, HealthSummaryOut, ModelOut, PredictionOut, TagOut
from .view import TagState

__all__ = ["HEALTH_PATH", "build_router"]

HEALTH_PATH = "/api/v1/health"

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


AssetFilter = Annotated[
    str | None, Query(description="Only this asset.", min_length=1, max_length=200)
]


_TAG_LIST = TypeAdapter(list[TagOut])


# pydantic-core holds the GIL for a whole dump_json call (~0.3 s for 100,000 tags), and the
# event loop waits for the GIL meanwhile: in chunks it gets it back between them.
_TAGS_PER_CHUNK = 2000


def _encode_tags(states: Sequence[TagState], asset: str | None, now: float) -> bytes:
    chosen = sorted((s for s in states if asset is None or s.asset == asset), key=lambda s: s.tag)
    parts = []
    for start in range(0, len(chosen), _TAGS_PER_CHUNK):
        chunk = chosen[start : start + _TAGS_PER_CHUNK]
        parts.append(_TAG_LIST.dump_json([TagOut.of(s, now) for s in chunk])[1:-1])
    return b"[" + b",".join(parts) + b"]"


def build_router() -> APIRouter:
    # Handlers that read the view are async on purpose: they run on the event loop that owns
    # the live state, never in FastAPI's thread pool where they would race with it.
    router = APIRouter(prefix="/api/v1")
    read = secured(Scope.READ)
    latest_body = LatestBody()  # one per app, like the view it caches

    @router.get(
        "/health",
        response_model=HealthOut | HealthSummaryOut,
        summary="Overall health; per-component details with a `read` key",
        description="Without a key only `status` is given: component names, counters and "
        "errors describe the plant and the network, so they need a key of scope `read`.",
        responses={
            503: {"model": HealthOut | HealthSummaryOut, "description": "Every component is down"},
            401: {"model": ErrorOut, "description": "An unknown or revoked key was sent"},
        },
    )
    async def health(
        view: View,
        response: Response,
        key: Annotated[ApiKeyRecord | None, Depends(optional_key)],
    ) -> HealthOut | HealthSummaryOut:
        out = HealthOut.of(view.gateway_id, view.started_at(), view.health())
        if out.status == "down":
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        if key is None or not key.scope.allows(Scope.READ):
            return HealthSummaryOut(status="down" if out.status == "down" else "up")
        return out

    @router.get(
        "/tags",
        response_model=list[TagOut],
        summary="Current value of every tag",
        **read,
    )
    async def tags(view: View, queries: Queries, asset: AssetFilter = None) -> Response:
        # The snapshot is taken here, on the loop that owns the live state; turning it into
        # JSON (1.1 s for 100,000 tags) happens on the API's threads, not on the event loop.
        states = view.tag_states()
        body = await queries.run(_encode_tags, states, asset, time.time())
        return Response(content=body, media_type="application/json")

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

    history_route = secured(Scope.READ, WIDE_RANGE)
    history_route["responses"][200] = {"description": "One page", "headers": _PAGE_HEADERS}

    @router.get(
        "/predictions",
        response_model=list[PredictionOut],
        summary="Stored predictions, newest first, one page at a time",
        description="The next page's cursor is in the `X-Next-Cursor` and `Link` headers.",
        **history_route,
    )
    async def predictions(
        queries: Queries,
        history: History,
        settings: Settings,
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
        since_ts, until_ts = bounded_range(settings.max_history_days, since, until)
        try:
            after = None if cursor is None else decode_history(cursor)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        # Blocking database I/O: on the API's own threads, never the data path's.
        page = await queries.run(history.page, asset, since_ts, until_ts, limit, after)
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
