"""``/docs`` served entirely by the gateway: Swagger UI's files come from the installed
``swagger-ui-bundle-v2`` package, never from a CDN, so the page works on a plant network
without Internet access."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["ASSETS_PREFIX", "DOCS_PATHS", "mount_docs"]

ASSETS_PREFIX = "/docs/assets"
_REDIRECT = "/docs/oauth2-redirect"
DOCS_PATHS = ("/docs", _REDIRECT, "/openapi.json")


def _swagger_folder() -> Path:
    vendor = Path(str(resources.files("swagger_ui_bundle"))) / "vendor"
    # One folder per bundled version, e.g. vendor/swagger-ui-5.31.0.
    found = sorted(p for p in vendor.glob("swagger-ui-*") if (p / "swagger-ui-bundle.js").is_file())
    if not found:
        raise RuntimeError(f"Swagger UI files not found under {vendor}: reinstall the gateway")
    return found[-1]


def mount_docs(app: FastAPI) -> None:
    """Call with ``FastAPI(docs_url=None, redoc_url=None)``: this adds ``/docs`` instead."""
    app.mount(ASSETS_PREFIX, StaticFiles(directory=_swagger_folder()), name="docs-assets")

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PREFIX}/favicon-32x32.png",
            oauth2_redirect_url=_REDIRECT,
        )

    async def redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_api_route("/docs", docs, include_in_schema=False)
    app.add_api_route(_REDIRECT, redirect, include_in_schema=False)
