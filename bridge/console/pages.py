"""The console's pages: Overview, Assets, Asset detail, Models, Alerts, Outbox, and the live
stream each page listens to.

Pages read what the REST API reads (the same repositories, views and functions); every action
a page offers is a call of the REST API itself, made by the page's script with the session
cookie and its CSRF token, so scopes, limits and validation are the API's, in one place.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from bridge.api.deps import Services
from bridge.api.models_admin import (
    VersionMetricsOut,
    VersionOut,
    registry_status,
    version_metrics,
)
from bridge.api.outbox import outbox_overview
from bridge.api.sessions import SESSION_COOKIE
from bridge.auth import Scope
from bridge.errors import BridgeError, StoreError
from bridge.store.alerts import AlertFilter
from bridge.store.registry import RegistryError

from .asset_page import inputs_over_time, model_insight
from .charts import sparkline
from .live import AssetRow, LiveHub, Snapshot, Watch, sse_stream
from .login import (
    PREFIX,
    CurrentUser,
    FailedLogins,
    open_session,
    read_form,
    safe_next,
)
from .render import page

__all__ = ["RANGES", "AssetQuery", "build_console_router"]

RANGES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
PERIODS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
_TREND_POINTS = 10_000  # newest predictions a trend reads from the store at most
_PAGE_SIZES = (50, 200, 500, 2000)


@dataclass(frozen=True, slots=True)
class AssetQuery:
    """The Assets page's filter; the live stream selects the same rows with it."""

    q: str = ""
    label: str = ""
    quality: str = ""
    page: int = 1
    size: int = 200

    def matches(self, row: AssetRow) -> bool:
        if self.q and self.q.lower() not in f"{row.asset} {row.model}".lower():
            return False
        if self.label and row.label != self.label:
            return False
        return not self.quality or row.quality == self.quality

    def select(self, rows: Iterable[AssetRow]) -> tuple[list[AssetRow], int]:
        chosen = [r for r in rows if self.matches(r)]
        start = (self.page - 1) * self.size
        return chosen[start : start + self.size], len(chosen)

    def link(self, **change: Any) -> str:
        fields = {"q": self.q, "label": self.label, "quality": self.quality}
        fields |= {"page": str(self.page), "size": str(self.size)}
        fields |= {k: str(v) for k, v in change.items()}
        return urlencode({k: v for k, v in fields.items() if v})


@dataclass(frozen=True, slots=True)
class VersionView:
    v: VersionOut
    metrics: VersionMetricsOut


def asset_query(
    q: Annotated[str, Query(max_length=100)] = "",
    label: Annotated[str, Query(max_length=100)] = "",
    quality: Annotated[str, Query(pattern="^(|good|uncertain|bad)$")] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> AssetQuery:
    """The Assets page's filter from its query string (the live stream takes the same)."""
    size = size if size in _PAGE_SIZES else 200
    return AssetQuery(q.strip(), label.strip(), quality, page, size)


AssetFilterParams = Annotated[AssetQuery, Depends(asset_query)]


def _hub(request: Request) -> LiveHub:
    hub = request.app.state.console_hub
    if not isinstance(hub, LiveHub):
        raise TypeError("the console is not mounted on this app")
    return hub


def build_console_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    failed = FailedLogins()

    @router.get("", response_class=RedirectResponse)
    async def root() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=307)

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(next: str = "") -> HTMLResponse:
        return page("login.html", None, next=safe_next(next), error="")

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request, services: Services) -> Response:
        form = await read_form(request)
        target = safe_next(form.get("next"))
        client = request.client.host if request.client is not None else "?"
        if failed.blocked(client):
            return page(
                "login.html",
                None,
                429,
                next=target,
                error="Too many wrong keys from this address: wait a minute, then try again.",
            )
        key = form.get("api_key", "").strip()
        record = await services.keys.authenticate(key) if key else None
        if record is None:
            failed.failed(client)
            return page("login.html", None, 401, next=target, error="Unknown or revoked API key.")
        if not record.scope.allows(Scope.READ):
            # An `insights` key is for third parties: the console shows assets by name.
            return page(
                "login.html",
                None,
                403,
                next=target,
                error=f"A key of scope {record.scope.label} does not open the console.",
            )
        response = RedirectResponse(target, status_code=303)
        open_session(request, response, services, key, record)
        return response

    @router.post("/logout")
    async def logout(request: Request, services: Services) -> Response:
        form = await read_form(request)
        session = services.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            if not session.csrf_matches(form.get("csrf")):
                raise HTTPException(403, "missing or wrong CSRF token")
            services.sessions.close(session.id)
        response = RedirectResponse(PREFIX + "/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @router.get("/", response_class=HTMLResponse)
    async def overview(request: Request, user: CurrentUser, services: Services) -> HTMLResponse:
        hub = _hub(request)
        snap = hub.snapshot()
        view = services.view
        health = list(view.health())
        sources = [h for h in health if h.name.startswith("source:")]
        others = [h for h in health if not h.name.startswith("source:")]
        outbox = await outbox_overview(services.queries, services.outbox, view)
        alerts = await services.queries.run(services.alerts.metrics, None, None)
        labels: dict[str, int] = {}
        for row in snap.rows.values():
            labels[row.label] = labels.get(row.label, 0) + 1
        return page(
            "overview.html",
            user.session,
            user=user,
            nav="overview",
            live=f"{PREFIX}/live?view=overview",
            gateway=view.gateway_id,
            started=view.started_at(),
            sources=sources,
            components=others,
            quality=snap.quality_counts,
            tags=len(snap.tags),
            outbox=outbox.destinations,
            alerts=alerts,
            models=view.models(),
            labels=sorted(labels.items()),
            rows=len(snap.rows),
        )

    @router.get("/assets", response_class=HTMLResponse)
    async def assets(
        request: Request,
        user: CurrentUser,
        services: Services,
        query: AssetFilterParams,
    ) -> HTMLResponse:
        snap = _hub(request).snapshot()
        shown, total = query.select(snap.rows.values())
        labels = sorted({r.label for r in snap.rows.values() if r.label})
        return page(
            "assets.html",
            user.session,
            user=user,
            nav="assets",
            live=f"{PREFIX}/live?view=assets&{query.link()}",
            query=query,
            rows=shown,
            total=total,
            all_rows=len(snap.rows),
            labels=labels,
            sizes=_PAGE_SIZES,
            pages=max(1, math.ceil(total / query.size)),
            spark=sparkline,
            now=snap.taken_at,
        )

    @router.get("/assets/{asset}", response_class=HTMLResponse)
    async def asset_detail(
        request: Request,
        user: CurrentUser,
        services: Services,
        asset: Annotated[str, Path(min_length=1, max_length=200)],
        range_: Annotated[str, Query(alias="range", pattern="^(15m|1h|6h|24h|7d)$")] = "15m",
    ) -> HTMLResponse:
        snap = _hub(request).snapshot()
        rows = [r for r in snap.rows.values() if r.asset == asset]
        tags = sorted((t for t in snap.tags if t.asset == asset), key=lambda t: t.tag)
        if not rows and not tags:
            raise HTTPException(404, f"no asset {asset!r} on this gateway")
        until = time.time()
        since = until - RANGES[range_]
        history = await services.queries.run(
            services.history.page, asset, since, until, _TREND_POINTS
        )
        items = list(reversed(history.items))  # oldest first for the charts
        latest = [p for p in services.view.latest_predictions() if p.asset == asset]
        models = [
            await model_insight(services, row, latest, items, range_, since, until) for row in rows
        ]
        input_charts = inputs_over_time(items, tags, range_, since, until)
        open_alerts = await services.queries.run(
            services.alerts.page, AlertFilter(asset=asset, acknowledged=False), 50, None
        )
        return page(
            "asset.html",
            user.session,
            user=user,
            nav="assets",
            live=f"{PREFIX}/live?{urlencode({'view': 'asset', 'asset': asset})}",
            asset=asset,
            models=models,
            tags=tags,
            range=range_,
            ranges=list(RANGES),
            input_charts=input_charts,
            truncated=history.next_key is not None,
            stored=len(items),
            alerts=open_alerts,
            now=time.time(),
        )

    @router.get("/models", response_class=HTMLResponse)
    async def models(user: CurrentUser, services: Services) -> HTMLResponse:
        loaded = {m.name: m for m in services.view.models()}
        names = sorted(loaded)
        out = []
        for name in names:
            try:
                records = await services.queries.run(services.registry.list, name)
            except (RegistryError, BridgeError) as exc:
                raise HTTPException(
                    registry_status(exc) if isinstance(exc, RegistryError) else 503, str(exc)
                ) from exc
            versions = [
                VersionView(
                    VersionOut.of(r),
                    await version_metrics(services.registry, services.live_models, name, r.version),
                )
                for r in records
            ]
            candidates = [v for v in versions if v.v.state in ("shadow", "canary")]
            out.append(
                {
                    "name": name,
                    "loaded": loaded[name],
                    "versions": versions,
                    "candidates": candidates,
                }
            )
        return page("models.html", user.session, user=user, nav="models", models=out)

    @router.get("/alerts", response_class=HTMLResponse)
    async def alerts(
        user: CurrentUser,
        services: Services,
        show: Annotated[str, Query(pattern="^(open|acknowledged|all)$")] = "open",
        period: Annotated[str, Query(pattern="^(1h|24h|7d|30d)$")] = "24h",
    ) -> HTMLResponse:
        until = time.time()
        since = until - PERIODS[period]
        acked = {"open": False, "acknowledged": True, "all": None}[show]
        rows = await services.queries.run(
            services.alerts.page, AlertFilter(acknowledged=acked), 200, None
        )
        metrics = await services.queries.run(services.alerts.metrics, since, until)
        feedback = await services.queries.run(services.labels.metrics, since, until)
        return page(
            "alerts.html",
            user.session,
            user=user,
            nav="alerts",
            alerts=rows,
            show=show,
            period=period,
            periods=list(PERIODS),
            metrics=metrics,
            feedback=feedback,
            now=until,
        )

    @router.get("/outbox", response_class=HTMLResponse)
    async def outbox(user: CurrentUser, services: Services) -> HTMLResponse:
        status = await outbox_overview(services.queries, services.outbox, services.view)
        dead = await services.queries.run(services.outbox.dead_letter_page, None, 100, None)
        return page(
            "outbox.html",
            user.session,
            user=user,
            nav="outbox",
            destinations=status.destinations,
            dead=dead,
        )

    @router.get("/live")
    async def live(
        request: Request,
        user: CurrentUser,
        services: Services,
        view: Annotated[str, Query(pattern="^(overview|assets|asset)$")],
        query: AssetFilterParams,
        asset: Annotated[str, Query(max_length=200)] = "",
    ) -> StreamingResponse:
        hub = _hub(request)
        if view == "assets":
            # The rows on screen when the page was drawn: a row whose label changes stays.
            shown, _ = query.select(hub.snapshot().rows.values())
            keys = [r.key for r in shown]
            watch = Watch(keys=lambda _s: keys)
        elif view == "asset":
            watch = Watch(
                keys=lambda s: [k for k, r in s.rows.items() if r.asset == asset],
                tags_of=asset,
            )
        else:
            watch = Watch(keys=_no_rows, overview=True)
        session_id = user.session.id

        async def ended() -> bool:
            # An open page is in use (a control-room screen stays logged in up to
            # session_hours). Logged out, expired, or its key revoked (also by another process:
            # the key cache asks the store again every few seconds): the stream ends and the
            # page's reconnect is sent to the login form.
            session = services.sessions.get(session_id)
            if session is None:
                return True
            try:
                record = await services.keys.authenticate(session.key)
            except (StoreError, HTTPException):
                return False  # the store is down or busy: keep showing what is live
            if record is None:
                services.sessions.close(session_id)
                return True
            return False

        return StreamingResponse(
            sse_stream(hub, watch, closed=ended),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router


def _no_rows(_s: Snapshot) -> list[str]:
    return []
