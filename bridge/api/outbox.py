"""Outbox status per durable destination, and its dead letters: list, replay, purge.

Scopes: reading is ``read``; replaying a dead letter is ``operate`` (it only sends an event
again, under the same Idempotency-Key, so the MES cannot get it twice); purging is ``admin``
(the event is gone for good).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from bridge.auth import Scope
from bridge.store.apikeys import ApiKeyRecord
from bridge.store.outbox import DeadLetter, OutboxRepository, OutboxStats
from bridge.types import ComponentHealth

from .auth import audit_actor, require, secured
from .deps import Outbox, Queries, View
from .params import MAX_LIMIT
from .queries import QueryRunner
from .timeparse import epoch_to_datetime
from .view import GatewayView

__all__ = [
    "DeadLetterOut",
    "DeadLetterPage",
    "DestinationOut",
    "OutboxOut",
    "build_outbox_router",
    "outbox_overview",
]

MAX_ID = 2**63 - 1  # what the database's integer column holds
_RELAY_PREFIX = "outbox:"


class DestinationOut(BaseModel):
    destination: str = Field(description="The output's name in the mapping.")
    state: str | None = Field(
        description="The relay's health (ok, degraded, down, ...); null when no relay of this "
        "gateway serves the destination (rows left by another gateway or an old mapping)."
    )
    backlog: int = Field(description="Events waiting in the outbox.")
    oldest_pending_age_s: float | None = Field(
        description="Age of the oldest waiting event in seconds; null when none waits."
    )
    dead_letters: int = Field(description="Events the destination rejected too often.")
    last_error: str = Field(description="The relay's or the destination's last error, or ''.")
    delivered: int | None = Field(description="Events accepted since this gateway started.")
    rejected: int | None = Field(description="Rejections (non-retryable answers) since start.")
    dead_lettered: int | None = Field(description="Events moved to the dead letters since start.")
    max_pending: int | None = Field(description="The outbox budget of the destination.")
    when_full: Literal["refuse-new", "drop-oldest"] | None = Field(
        description="What happens to events when the budget is reached."
    )
    refused: int | None = Field(description="Events refused because the outbox was full.")
    dropped: int | None = Field(description="Pending events dropped because it was full.")


class OutboxOut(BaseModel):
    destinations: list[DestinationOut] = Field(description="Sorted by name.")


class DeadLetterOut(BaseModel):
    id: int = Field(description="Dead letter id: use it to replay or purge this one.")
    destination: str
    asset: str
    event_id: str = Field(description="The event's Idempotency-Key.")
    body: Any = Field(description="The JSON body that was sent.")
    created_at: datetime | None = Field(description="When the event was written.")
    failed_at: datetime | None = Field(description="When it became a dead letter.")
    attempts: int = Field(description="Rejections it received.")
    last_error: str = Field(description="The destination's last answer.")

    @classmethod
    def of(cls, d: DeadLetter) -> DeadLetterOut:
        try:
            body: Any = json.loads(d.body)
        except ValueError:
            body = d.body
        return cls(
            id=d.id,
            destination=d.destination,
            asset=d.asset,
            event_id=d.event_id,
            body=body,
            created_at=epoch_to_datetime(d.created_at),
            failed_at=epoch_to_datetime(d.failed_at),
            attempts=d.attempts,
            last_error=d.last_error,
        )


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut] = Field(description="Oldest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class ActionOut(BaseModel):
    id: int = Field(description="The dead letter acted on.")
    action: Literal["replayed", "purged"]


def _destination(
    name: str, stats: OutboxStats | None, relay: ComponentHealth | None, now: float
) -> DestinationOut:
    c = relay.counters if relay is not None else {}

    def counter(key: str) -> int | None:
        return int(c[key]) if key in c else None

    oldest = None if stats is None else stats.oldest_created_at
    policy: Literal["refuse-new", "drop-oldest"] | None = None
    if "drop_oldest" in c:
        policy = "drop-oldest" if c["drop_oldest"] else "refuse-new"
    return DestinationOut(
        destination=name,
        state=None if relay is None else relay.state,
        backlog=0 if stats is None else stats.backlog,
        oldest_pending_age_s=None if oldest is None else round(max(0.0, now - oldest), 3),
        dead_letters=0 if stats is None else stats.dead_letters,
        last_error="" if relay is None else relay.detail,
        delivered=counter("delivered"),
        rejected=counter("rejected"),
        dead_lettered=counter("dead_lettered"),
        max_pending=counter("max_pending"),
        when_full=policy,
        refused=counter("refused"),
        dropped=counter("dropped"),
    )


async def outbox_overview(
    queries: QueryRunner, repo: OutboxRepository, view: GatewayView
) -> OutboxOut:
    """What ``GET /api/v1/outbox`` answers (the console shows it too)."""
    # Counts from the store (exact, also for destinations this gateway does not serve);
    # counters and the last error from the live relays' health.
    relays = {
        h.name.removeprefix(_RELAY_PREFIX): h
        for h in view.health()
        if h.name.startswith(_RELAY_PREFIX)
    }
    stats = await queries.run(repo.destinations)
    now = time.time()
    names = sorted(relays.keys() | stats.keys())
    return OutboxOut(
        destinations=[_destination(n, stats.get(n), relays.get(n), now) for n in names]
    )


def build_outbox_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/outbox", tags=["outbox"])

    @router.get(
        "",
        response_model=OutboxOut,
        summary="Backlog, oldest pending age, last error and budget per destination",
        **secured(Scope.READ),
    )
    async def outbox_status(queries: Queries, repo: Outbox, view: View) -> OutboxOut:
        return await outbox_overview(queries, repo, view)

    @router.get(
        "/dead-letters",
        response_model=DeadLetterPage,
        summary="Dead letters, oldest first",
        **secured(Scope.READ),
    )
    async def dead_letters(
        queries: Queries,
        repo: Outbox,
        destination: Annotated[
            str | None, Query(min_length=1, max_length=200, description="Only this destination.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = 100,
        cursor: Annotated[
            str | None,
            Query(pattern=r"^[0-9]{1,18}$", description="`next_cursor` of the previous page."),
        ] = None,
    ) -> DeadLetterPage:
        after = None if cursor is None else int(cursor)
        rows = await queries.run(repo.dead_letter_page, destination, limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        return DeadLetterPage(
            items=[DeadLetterOut.of(d) for d in rows],
            next_cursor=str(rows[-1].id) if more else None,
        )

    @router.post(
        "/dead-letters/{dead_letter_id}/replay",
        response_model=ActionOut,
        status_code=201,
        summary="Send a dead letter again (queued anew at the end of its asset's queue)",
        **secured(Scope.OPERATE),
    )
    async def replay(
        request: Request,
        queries: Queries,
        repo: Outbox,
        key: Annotated[ApiKeyRecord, Depends(require(Scope.OPERATE))],
        dead_letter_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    ) -> ActionOut:
        actor, channel = audit_actor(request, key)
        n = await queries.run(
            lambda: repo.replay(ids=[dead_letter_id], actor=actor, channel=channel)
        )
        if n == 0:
            raise HTTPException(404, f"no dead letter {dead_letter_id}")
        return ActionOut(id=dead_letter_id, action="replayed")

    @router.delete(
        "/dead-letters/{dead_letter_id}",
        response_model=ActionOut,
        summary="Purge a dead letter for good",
        **secured(Scope.ADMIN),
    )
    async def purge(
        request: Request,
        queries: Queries,
        repo: Outbox,
        key: Annotated[ApiKeyRecord, Depends(require(Scope.ADMIN))],
        dead_letter_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    ) -> ActionOut:
        actor, channel = audit_actor(request, key)
        n = await queries.run(
            lambda: repo.purge(ids=[dead_letter_id], actor=actor, channel=channel)
        )
        if n == 0:
            raise HTTPException(404, f"no dead letter {dead_letter_id}")
        return ActionOut(id=dead_letter_id, action="purged")

    return router
