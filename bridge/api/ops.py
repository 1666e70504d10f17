"""What an operations team scrapes and probes: ``/metrics`` (Prometheus), ``/livez`` and
``/readyz``. None of them needs an API key; none names a tag value or a prediction.

The gateway's figures come from an ``Operations`` the runtime hands in (its collector reads the
components' own counters at scrape time, ``bridge.runtime.metrics``); the API's own request
counters are kept here, by an ASGI middleware that labels each request with its route
template (``/api/v1/alerts/{alert_id}/ack``, never the raw path) so the series stay bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import Histogram as PromHistogram
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.histogram import LATENCY_BUCKETS_S

__all__ = [
    "LIVEZ_PATH",
    "METRICS_PATH",
    "OPS_PATHS",
    "READYZ_PATH",
    "ApiMetrics",
    "Operations",
    "ProbeResult",
    "RequestMetrics",
    "build_ops_router",
    "create_ops_app",
]

METRICS_PATH = "/metrics"
LIVEZ_PATH = "/livez"
READYZ_PATH = "/readyz"
OPS_PATHS = (METRICS_PATH, LIVEZ_PATH, READYZ_PATH)

# The label of a request that matched no route (scanners, typos): one series for all of them.
UNMATCHED = "unmatched"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """``ok``: 200, else 503. ``failing`` names what is not ready/alive (component: why)."""

    ok: bool
    failing: Mapping[str, str] = field(default_factory=dict)
    details: Mapping[str, object] = field(default_factory=dict)

    def response(self, good: str, bad: str) -> JSONResponse:
        body: dict[str, object] = {"status": good if self.ok else bad, **self.details}
        if self.failing:
            body["failing"] = dict(self.failing)
        return JSONResponse(body, status_code=200 if self.ok else 503)


class Operations(Protocol):
    """The running gateway's side of the probes and the scrape."""

    @property
    def registry(self) -> CollectorRegistry: ...

    async def refresh(self) -> None:
        """Read what the scrape needs from the store, off the event loop (called per scrape)."""

    async def liveness(self) -> ProbeResult: ...

    async def readiness(self) -> ProbeResult: ...


class ApiMetrics:
    """The API's request counter and latency histogram, in ``registry`` (the gateway's, or one
    of the API's own when it runs over a store alone)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # A ``_created`` gauge per counter and histogram series doubles what Prometheus stores
        # for a timestamp it does not use (process-wide switch of the client library).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "bridge_api_requests",
            "REST API requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        # No status label here: the counter has it, and the histogram's buckets multiply series.
        self.latency = PromHistogram(
            "bridge_api_request_duration_seconds",
            "REST API request latency (to the end of the response body) by route template.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )


def _leaves(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes themselves, through included routers (FastAPI wraps an included router in
    a route of its own that holds the original router)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _leaves(inner.routes)
        else:
            yield route


def _route_of(routes: Sequence[BaseRoute], scope: Scope) -> str:
    # Set by FastAPI when it ran an operation; a request refused before routing (401, 429,
    # 413) is matched here against the same templates.
    chosen = scope.get("route")
    path = getattr(chosen, "path", None)
    if isinstance(path, str) and path:
        return path
    partial = ""
    for route in _leaves(routes):
        match, _ = route.matches(scope)
        path = getattr(route, "path", None)
        if not isinstance(path, str) or not path:
            continue
        if match is Match.FULL:
            return path
        if match is Match.PARTIAL and not partial:
            partial = path  # the path matched, the method did not (405)
    return partial or UNMATCHED


class RequestMetrics:
    """Outermost middleware: counts every request, refused ones (401, 413, 429) included."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self._metrics = metrics
        self._routes = routes  # the app's live list: routes added later are matched too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started ends as a 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = _route_of(self._routes, scope)
            method = str(scope.get("method", ""))
            self._metrics.requests.labels(route, method, str(status)).inc()
            self._metrics.latency.labels(route, method).observe(time.perf_counter() - started)


def build_ops_router(
    ops: Operations | None, registry: CollectorRegistry, *, metrics: bool = True
) -> APIRouter:
    """``/livez``, ``/readyz`` and (with ``metrics``) ``/metrics``. Without ``ops`` (an API over a
    store alone) the probes answer 200 and the scrape holds the API's own metrics."""
    router = APIRouter()

    if metrics:

        @router.get(METRICS_PATH, include_in_schema=False)
        async def scrape() -> Response:
            if ops is not None:
                await ops.refresh()
            # On the event loop on purpose: the collector reads live state the loop owns.
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @router.get(LIVEZ_PATH, include_in_schema=False)
    async def livez() -> JSONResponse:
        result = ProbeResult(True) if ops is None else await ops.liveness()
        return result.response("alive", "not alive")

    @router.get(READYZ_PATH, include_in_schema=False)
    async def readyz() -> JSONResponse:
        result = ProbeResult(True) if ops is None else await ops.readiness()
        return result.response("ready", "not ready")

    return router


def create_ops_app(ops: Operations) -> FastAPI:
    """The scrape listener of its own (``gateway.metrics.listen``): the three paths only."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(build_ops_router(ops, ops.registry))
    return app
