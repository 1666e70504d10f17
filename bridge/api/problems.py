"""Every error of the API as an RFC 9457 problem detail (``application/problem+json``).

``type`` stays ``about:blank``: the HTTP status says what kind of problem it is, ``title`` is
its phrase and ``detail`` says, in words, what was wrong and how to fix it. The middlewares
(bridge.api.guard, bridge.api.bodylimit) answer with the same shape before FastAPI runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from bridge.errors import StoreError
from bridge.store.db import QueryTimeoutError

from .methods import allowed_methods

__all__ = ["PROBLEM_MEDIA_TYPE", "install_problem_handlers", "problem"]

log = structlog.get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem(
    status: int, detail: str, instance: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        where = ".".join(str(p) for p in loc if p not in ("query", "path", "body"))
        # A body that is wrong as a whole (not an object, no JSON) has only ("body",) as loc.
        where = where or (str(loc[0]) if loc else "request")
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _validation_error(request: Request, exc: Exception) -> Response:
    # One readable sentence instead of FastAPI's nested error list.
    detail = _describe(exc) if isinstance(exc, RequestValidationError) else str(exc)
    return problem(422, detail, request.url.path)


async def _query_timeout(request: Request, exc: Exception) -> Response:
    log.warning("api_query_timeout", path=request.url.path, error=str(exc))
    return problem(
        503,
        f"{exc} (gateway.api.query_timeout_s): ask for a narrower time range or one asset",
        request.url.path,
        {"Retry-After": "1"},
    )


async def _store_error(request: Request, exc: Exception) -> Response:
    log.error("api_store_error", path=request.url.path, error=str(exc))
    return problem(503, "the prediction store is unavailable", request.url.path)


_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        raise exc
    path = request.url.path
    # FastAPI answers 422 to a body that is not JSON but 400 to one that is not even UTF-8;
    # for a client both are the same mistake, and 422 is what the OpenAPI documents.
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        return problem(422, "body: not valid JSON (UTF-8 expected)", path)
    headers = dict(exc.headers or {})
    detail = str(exc.detail)
    if exc.status_code == 405:
        # Starlette answers 405 from the first route whose path matches: list every method.
        allowed = allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        detail = f"method {request.method} is not allowed here; allowed: {', '.join(allowed)}"
    elif exc.status_code == 404 and detail == "Not Found":
        detail = f"no resource at {path}; the operations are listed at /docs"
    return problem(exc.status_code, detail, path, headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("api_unexpected_error", path=request.url.path)
    return problem(500, "the gateway failed on this request; see its log", request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(QueryTimeoutError, _query_timeout)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
