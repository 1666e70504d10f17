"""The OpenAPI document as the API really behaves: error responses are sent as
``application/problem+json`` (FastAPI files a response ``model`` under application/json),
and operations open to anyone that say more to a key holder list anonymous access (``{}``)
among their security requirements."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .auth import SCOPE_EXTENSION
from .problems import PROBLEM_MEDIA_TYPE

__all__ = ["install_openapi"]

_ERROR_CONTENT = {"schema": {"$ref": "#/components/schemas/ErrorOut"}}


def _adjust(spec: dict[str, Any]) -> None:
    for item in spec.get("paths", {}).values():
        for op in item.values():
            if op.get("security") and SCOPE_EXTENSION not in op:
                op["security"].append({})
            for response in op.get("responses", {}).values():
                content = response.get("content", {})
                schema = str(content.get("application/json"))
                if "ErrorOut" in schema or "HTTPValidationError" in schema:
                    del content["application/json"]
                    content[PROBLEM_MEDIA_TYPE] = _ERROR_CONTENT


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            _adjust(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
