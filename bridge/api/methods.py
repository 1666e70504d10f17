"""Every method of the resource a request names, for the ``Allow`` header of a 405 answer.

Starlette answers 405 from the first route whose path matches, so ``GET`` and ``POST`` on one
path would announce only ``GET``; clients (and HTTP) expect all of them.
"""

from __future__ import annotations

from fastapi import Request
from starlette.routing import Route

__all__ = ["allowed_methods"]


def allowed_methods(request: Request) -> list[str]:
    path = request.url.path
    return sorted(
        {
            method
            for route in request.app.router.routes
            if isinstance(route, Route) and route.methods and route.path_regex.match(path)
            for method in route.methods
        }
    )
