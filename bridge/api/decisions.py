"""``GET /api/v1/lineage``: decisions with their lineage, one page at a time, as JSON documents
or as OpenLineage run events (``bridge.lineage``; the same as ``bridge lineage export``).

The API knows the running gateway's tags and their source names (the view), not its mapping:
input datasets are named by source name (``bridge://<gateway>/sources/<source>``), and the
outputs a mapping revision had are not listed (only the outbox's facts). ``bridge lineage
export --mapping`` knows both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import TypeAdapter

from bridge.auth import Scope
from bridge.lineage import NOT_RECORDED, Decision, LineageContext, build_decision
from bridge.store.decisions import DecisionRepository, PageKey, StoredDecision

from .auth import secured
from .cursor import HISTORY_CURSOR_PATTERN, decode_history, encode_history
from .deps import Queries, Services, Settings, View
from .lineage import UUID_PATTERN
from .params import MAX_LIMIT, WIDE_RANGE, Since, Until, bounded_range
from .view import TagState

__all__ = ["build_decisions_router"]

_DECISIONS = TypeAdapter(list[Decision])
_PAGE_HEADERS = {
    "X-Next-Cursor": {
        "description": "Cursor of the next page (pass it as `cursor`); absent on the last page.",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'URL of the next page, `<...>; rel="next"`; absent on the last page.',
        "schema": {"type": "string"},
    },
}
_DESCRIPTION = (
    "For one prediction (`prediction_id`; the other filters are then ignored) or the "
    "predictions made in `since`..`until`, oldest first: the inputs (value, source time, "
    "quality), mapping revision, model name, version and sha256, explanation, output, what the "
    "store knows of each delivery (MES, webhook and MQTT events: Idempotency-Key, attempts, "
    "last answer) and the operators' feedback and audit ledger entries. `format=openlineage` "
    "gives OpenLineage run events (run id = prediction id) instead of documents. The next "
    "page's cursor is in the `X-Next-Cursor` and `Link` headers.\n\nThe API does not hold "
    "the gateway's mapping: input datasets are named by their source's name, and per output "
    "only the outbox's facts are listed (`bridge lineage export --mapping` also names the "
    "sources' addresses and the outputs the revision had).\n\nNot recorded by the store: "
    + " ".join(NOT_RECORDED)
)


def _answer(
    repo: DecisionRepository,
    gateway_id: str,
    states: Sequence[TagState],
    fmt: str,
    prediction_id: str | None,
    since: float | None,
    until: float | None,
    limit: int,
    after: PageKey | None,
) -> tuple[bytes, PageKey | None] | None:
    """The body and the next page's key; None when ``prediction_id`` is not stored. Runs on
    the API's query threads: the store reads, the documents and their encoding."""
    items: list[StoredDecision]
    next_key: PageKey | None = None
    if prediction_id is not None:
        found = repo.get(prediction_id)
        if found is None:
            return None
        items = [found]
    else:
        page = repo.page(since, until, limit, after)
        items, next_key = page.items, page.next_key
    ctx = LineageContext.from_tag_sources(gateway_id, {s.tag: s.source for s in states})
    decisions = [build_decision(s, ctx) for s in items]
    if fmt == "openlineage":
        # openlineage-python is loaded by the first request that asks for events.
        from bridge.lineage.runevents import event_dict, run_event

        events = [event_dict(run_event(d)) for d in decisions]
        body = json.dumps(events, allow_nan=False, separators=(",", ":")).encode()
    else:
        body = _DECISIONS.dump_json(decisions)
    return body, next_key


def build_decisions_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["predictions"])
    route = secured(Scope.READ, WIDE_RANGE, (404, "No stored prediction with this id"))
    route["responses"][200] = {"description": "One page", "headers": _PAGE_HEADERS}

    @router.get(
        "/lineage",
        response_model=list[Decision] | list[dict[str, Any]],
        summary="Decision lineage: predictions with inputs, model, outputs, deliveries and "
        "operator actions, as JSON or OpenLineage run events",
        description=_DESCRIPTION,
        **route,
    )
    async def lineage(
        services: Services,
        view: View,
        queries: Queries,
        settings: Settings,
        request: Request,
        prediction_id: Annotated[
            str | None,
            Query(pattern=UUID_PATTERN, description="Only this prediction (its id, a UUID)."),
        ] = None,
        since: Since = None,
        until: Until = None,
        format: Annotated[
            Literal["json", "openlineage"],
            Query(
                description="`json`: lineage documents; `openlineage`: OpenLineage run events "
                "(a JSON list; `bridge lineage export` writes one per line)."
            ),
        ] = "json",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many.")] = 100,
        cursor: Annotated[
            str | None,
            Query(
                pattern=HISTORY_CURSOR_PATTERN, description="`X-Next-Cursor` of the previous page."
            ),
        ] = None,
    ) -> Response:
        since_ts, until_ts = bounded_range(settings.max_history_days, since, until)
        try:
            after = None if cursor is None else decode_history(cursor)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        # The tags' snapshot is taken here, on the loop that owns the live state; everything
        # else runs on the API's query threads.
        states = view.tag_states()
        repo = services.decisions
        found = await queries.run(
            _answer,
            repo,
            view.gateway_id,
            states,
            format,
            prediction_id,
            since_ts,
            until_ts,
            limit,
            after,
        )
        if found is None:
            raise HTTPException(404, f"no stored prediction {prediction_id}")
        body, next_key = found
        headers: dict[str, str] = {}
        if next_key is not None:
            token = encode_history(next_key)
            headers["X-Next-Cursor"] = token
            headers["Link"] = f'<{request.url.include_query_params(cursor=token)}>; rel="next"'
        return Response(content=body, media_type="application/json", headers=headers)

    return router
