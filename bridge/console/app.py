"""Mount the console on the gateway's API app: pages under /console, their static files, the
live hub, and the security headers."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from bridge.api.app import create_app
from bridge.api.services import ApiServices

from .live import LiveHub
from .login import PREFIX, LoginRequired, login_redirect
from .pages import build_console_router
from .security import ConsoleHeaders

__all__ = ["close_console", "create_gateway_app", "mount_console"]

STATIC = PREFIX + "/static"


def _static_folder() -> Path:
    return Path(str(resources.files("bridge.console"))) / "static"


def mount_console(app: FastAPI, services: ApiServices) -> None:
    app.state.console_hub = LiveHub(services.view, services.settings.console.live_period_s)
    app.mount(STATIC, StaticFiles(directory=_static_folder()), name="console-static")
    app.include_router(build_console_router())

    async def to_login(request: Request, exc: Exception) -> RedirectResponse:
        assert isinstance(exc, LoginRequired)
        return login_redirect(exc.next_path)

    app.add_exception_handler(LoginRequired, to_login)
    app.add_middleware(ConsoleHeaders, prefix=PREFIX, static_prefix=STATIC)


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
