"""Alerts: list (filtered, paginated), acknowledge, and mean time to acknowledge."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from bridge.auth import Scope
from bridge.store.alerts import (
    Alert,
    AlertFilter,
    AlertMetrics,
    AlreadyAcknowledged,
)
from bridge.store.apikeys import ApiKeyRecord

from .auth import audit_actor, require, secured
from .deps import Alerts, Queries, Settings
from .params import MAX_LIMIT, WIDE_RANGE, Since, Until, bounded_range
from .timeparse import epoch_to_datetime

__all__ = ["AckIn", "AlertMetricsOut", "AlertOut", "AlertPage", "build_alert_router"]

MAX_ID = 2**63 - 1  # what the database's integer column holds


class AlertOut(BaseModel):
    id: int
    prediction_id: str = Field(description="The prediction that raised the alert.")
    asset: str
    model: str
    label: str = Field(description="The label the model changed to, e.g. `bearing_fault`.")
    previous: str = Field(description="The label before, e.g. `healthy`.")
    score: float | None
    raised_at: datetime | None
    acknowledged: bool
    acked_at: datetime | None
    acked_by: str | None = Field(description="Who acknowledged it (given in the request).")
    acked_key: str | None = Field(description="Id of the API key that acknowledged it.")
    ack_comment: str | None
    time_to_ack_s: float | None
    detail: dict[str, Any] | None = Field(
        None,
        description="For drift alerts (label `drift`): drifting features and window statistics.",
    )

    @classmethod
    def of(cls, a: Alert) -> AlertOut:
        return cls(
            id=a.id,
            prediction_id=a.prediction_id,
            asset=a.asset,
            model=a.model,
            label=a.label,
            previous=a.previous,
            score=a.score,
            raised_at=epoch_to_datetime(a.raised_at),
            acknowledged=a.acked_at is not None,
            acked_at=epoch_to_datetime(a.acked_at),
            acked_by=a.acked_by,
            acked_key=a.acked_key,
            ack_comment=a.ack_comment,
            time_to_ack_s=None if a.acked_at is None else a.acked_at - a.raised_at,
            detail=json.loads(a.detail) if a.detail else None,
        )


class AlertPage(BaseModel):
    items: list[AlertOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class AckIn(BaseModel):
    by: str = Field(min_length=1, max_length=200, description="Who acknowledges (a person).")
    comment: str = Field(default="", max_length=2000)


class AlertMetricsOut(BaseModel):
    total: int = Field(description="Alerts raised in the period.")
    acknowledged: int
    open: int
    mean_time_to_ack_s: float | None = Field(
        description="Mean seconds from raised to acknowledged over acknowledged alerts."
    )
    max_time_to_ack_s: float | None
    oldest_open_age_s: float | None = Field(description="Age of the oldest unacknowledged alert.")

    @classmethod
    def of(cls, m: AlertMetrics) -> AlertMetricsOut:
        return cls(
            total=m.total,
            acknowledged=m.acknowledged,
            open=m.open,
            mean_time_to_ack_s=m.mean_time_to_ack_s,
            max_time_to_ack_s=m.max_time_to_ack_s,
            oldest_open_age_s=m.oldest_open_age_s,
        )


Text = Annotated[str | None, Query(min_length=1, max_length=200)]


def build_alert_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

    @router.get(
        "",
        response_model=AlertPage,
        summary="Alerts, newest first",
        **secured(Scope.READ, WIDE_RANGE),
    )
    async def list_alerts(
        settings: Settings,
        queries: Queries,
        repo: Alerts,
        asset: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        model: Text = None,
        label: Text = None,
        acknowledged: Annotated[
            bool | None, Query(description="true: only acknowledged; false: only open.")
        ] = None,
        since: Since = None,
        until: Until = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = 100,
        cursor: Annotated[
            str | None,
            Query(pattern=r"^[0-9]{1,18}$", description="`next_cursor` of the previous page."),
        ] = None,
    ) -> AlertPage:
        since_ts, until_ts = bounded_range(settings.max_history_days, since, until)
        before = None if cursor is None else int(cursor)
        where = AlertFilter(asset, model, label, acknowledged, since_ts, until_ts)
        rows = await queries.run(repo.page, where, limit + 1, before)
        more = len(rows) > limit
        rows = rows[:limit]
        return AlertPage(
            items=[AlertOut.of(a) for a in rows],
            next_cursor=str(rows[-1].id) if more else None,
        )

    @router.get(
        "/metrics",
        response_model=AlertMetricsOut,
        summary="Counts and mean time to acknowledge",
        **secured(Scope.READ, WIDE_RANGE),
    )
    async def alert_metrics(
        settings: Settings,
        queries: Queries,
        repo: Alerts,
        since: Since = None,
        until: Until = None,
    ) -> AlertMetricsOut:
        since_ts, until_ts = bounded_range(settings.max_history_days, since, until)
        return AlertMetricsOut.of(await queries.run(repo.metrics, since_ts, until_ts))

    @router.post(
        "/{alert_id}/ack",
        response_model=AlertOut,
        summary="Acknowledge an alert",
        **secured(Scope.OPERATE, (400, "The body is not readable"), (409, "Already acknowledged")),
    )
    async def acknowledge(
        request: Request,
        queries: Queries,
        repo: Alerts,
        key: Annotated[ApiKeyRecord, Depends(require(Scope.OPERATE))],
        alert_id: Annotated[int, Path(ge=1, le=MAX_ID)],
        body: AckIn,
    ) -> AlertOut:
        actor, channel = audit_actor(request, key)
        by = body.by.strip() or key.name
        try:
            alert = await queries.run(
                lambda: repo.acknowledge(
                    alert_id, by, key.key_id, body.comment, actor=actor, channel=channel
                )
            )
        except AlreadyAcknowledged as exc:
            raise HTTPException(409, str(exc)) from exc
        if alert is None:
            raise HTTPException(404, f"no alert {alert_id}")
        return AlertOut.of(alert)

    return router
