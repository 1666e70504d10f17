"""FastAPI app factory. Nothing is built at import time; the runtime serves the app with uvicorn."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from bridge.errors import StoreError
from bridge.lifecycle.service import RegistryService
from bridge.store.alerts import AlertRepository
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.db import Store
from bridge.store.history import PredictionHistory
from bridge.store.labels import LabelRepository
from bridge.store.lineage import LineageRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.registry import RegistryRepository

from .alerts import build_alert_router
from .auth import KeyCache
from .keys import build_key_router
from .lineage import build_lineage_router
from .methods import method_not_allowed
from .models_admin import build_models_admin_router
from .outbox import build_outbox_router
from .routes import build_router
from .view import GatewayView

__all__ = ["create_app"]

log = structlog.get_logger(__name__)


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        where = ".".join(str(p) for p in loc if p not in ("query", "path", "body"))
        # A body that is wrong as a whole (not an object, no JSON) has only ("body",) as loc.
        where = where or (str(loc[0]) if loc else "request")
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    # 422 with one readable sentence (ErrorOut) instead of FastAPI's nested error list.
    detail = _describe(exc) if isinstance(exc, RequestValidationError) else str(exc)
    return JSONResponse({"detail": detail}, status_code=422)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("api_store_error", path=request.url.path, error=str(exc))
    return JSONResponse(
        {"detail": "the prediction store is unavailable"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> Response:
    # FastAPI answers 422 to a body that is not JSON but 400 to one that is not even UTF-8;
    # for a client both are the same mistake, and 422 (ErrorOut) is what the OpenAPI documents.
    if isinstance(exc, HTTPException) and exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        return JSONResponse({"detail": "body: not valid JSON (UTF-8 expected)"}, status_code=422)
    return await method_not_allowed(request, exc)


def create_app(view: GatewayView, store: Store) -> FastAPI:
    """Every operation but health needs an API key (see bridge.api.auth)."""
    app = FastAPI(
        title="bridge gateway",
        summary="Tags, predictions, models, alerts and health of one edge gateway.",
        version="1",
    )
    app.state.view = view
    app.state.history = PredictionHistory(store)
    app.state.key_cache = KeyCache(ApiKeyRepository(store))
    app.state.alerts = AlertRepository(store)
    # The gateway replaces it with one that knows the configured public key.
    app.state.registry = RegistryService(RegistryRepository(store))
    app.state.lineage = LineageRepository(store)
    app.state.labels = LabelRepository(store)
    app.state.outbox = OutboxRepository(store)
    app.state.insights = {}  # model -> explanations on request; the runtime fills it
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.include_router(build_router())
    app.include_router(build_alert_router())
    app.include_router(build_lineage_router())
    app.include_router(build_key_router())
    app.include_router(build_outbox_router())
    app.include_router(build_models_admin_router())
    return app
