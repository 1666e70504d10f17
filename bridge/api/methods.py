"""405 answers that list every method of the resource in ``Allow``.

Starlette answers 405 from the first route whose path matches, so ``GET`` and ``POST`` on one
path would announce only ``GET``; clients (and HTTP) expect all of them.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Route

__all__ = ["method_not_allowed"]


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        raise exc
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    path = request.url.path
    allowed = sorted(
        {
            method
            for route in request.app.router.routes
            if isinstance(route, Route) and route.methods and route.path_regex.match(path)
            for method in route.methods
        }
    )
    return JSONResponse(
        {"detail": f"method {request.method} is not allowed here; allowed: {', '.join(allowed)}"},
        status_code=405,
        headers={"Allow": ", ".join(allowed)},
    )
