"""Mount the console on the gateway's API app: pages under /console, their static files, the
live hub, and the security headers."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles

from bridge.api.app import create_app
from bridge.api.services import ApiServices
from bridge.errors import StoreError

from .actions_page import build_actions_page_router
from .live import LiveHub
from .login import PREFIX, LoginRequired, login_redirect
from .pages import build_console_router
from .render import page
from .security import ConsoleHeaders

__all__ = ["close_console", "create_gateway_app", "mount_console"]

STATIC = PREFIX + "/static"
LIVE = PREFIX + "/live"

log = structlog.get_logger(__name__)


def _static_folder() -> Path:
    return Path(str(resources.files("bridge.console"))) / "static"


def mount_console(app: FastAPI, services: ApiServices) -> None:
    app.state.console_hub = LiveHub(services.view, services.settings.console.live_period_s)
    app.mount(STATIC, StaticFiles(directory=_static_folder()), name="console-static")
    app.include_router(build_console_router())
    app.include_router(build_actions_page_router())

    async def to_login(request: Request, exc: Exception) -> RedirectResponse:
        assert isinstance(exc, LoginRequired)
        return login_redirect(exc.next_path)

    app.add_exception_handler(LoginRequired, to_login)
    _html_errors(app)
    app.add_middleware(ConsoleHeaders, prefix=PREFIX, static_prefix=STATIC)


def _html_errors(app: FastAPI) -> None:
    """A person on a console page gets a page with the message and a way back, not JSON; the
    API and the live stream keep their problem details."""
    for kind in (HTTPException, RequestValidationError, StoreError):
        api_handler = app.exception_handlers[kind]

        async def handler(
            request: Request, exc: Exception, api_handler: Any = api_handler
        ) -> Response:
            path = request.url.path
            if not path.startswith(PREFIX + "/") or path.startswith((STATIC, LIVE)):
                response: Response = await api_handler(request, exc)
                return response
            if isinstance(exc, HTTPException):
                status, detail = exc.status_code, str(exc.detail)
            elif isinstance(exc, StoreError):
                log.error("console_store_error", path=path, error=str(exc))
                status, detail = 503, "The store is unavailable: try again in a moment."
            else:
                status, detail = 422, "This page does not take these parameters."
            return page("error.html", None, status, status=status, detail=detail)

        app.add_exception_handler(kind, handler)


def create_gateway_app(services: ApiServices) -> FastAPI:
    """The REST API, and the console with it unless the mapping turns it off."""
    app = create_app(services)
    if services.settings.console.enabled:
        mount_console(app, services)
    return app


def close_console(app: FastAPI) -> None:
    """End the console's live streams (before the server stops: it waits for open ones)."""
    hub = getattr(app.state, "console_hub", None)
    if isinstance(hub, LiveHub):
        hub.close()
