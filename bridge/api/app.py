"""FastAPI app factory. Nothing is built at import time; the runtime serves the app with uvicorn."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from bridge.errors import StoreError
from bridge.store.repository import PredictionRepository

from .routes import build_router
from .view import GatewayView

__all__ = ["create_app"]

log = structlog.get_logger(__name__)


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
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


def create_app(view: GatewayView, predictions: PredictionRepository) -> FastAPI:
    app = FastAPI(
        title="bridge gateway",
        summary="Tags, predictions, models and health of one edge gateway (read-only).",
        version="1",
    )
    app.state.view = view
    app.state.predictions = predictions
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StoreError, _store_error)
    app.include_router(build_router())
    return app
