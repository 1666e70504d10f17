"""API key authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, and scopes.

Each protected operation depends on ``require(scope)``; the scope it needs is also written into
the OpenAPI document (``x-required-scope``) so clients and the tests read it from one place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from bridge.auth import Scope, hash_key
from bridge.store.apikeys import ApiKeyRecord, ApiKeyRepository

from .params import single_valued_query
from .schemas import ErrorOut

__all__ = ["SCOPE_EXTENSION", "KeyCache", "require", "secured"]

SCOPE_EXTENSION = "x-required-scope"

_bearer = HTTPBearer(
    auto_error=False, scheme_name="bearerKey", description="`Authorization: Bearer <API key>`"
)
_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="apiKeyHeader", description="`X-API-Key`"
)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class KeyCache:
    """Recently verified keys, so a request costs no database read in the common case.

    Only successful checks are kept, by the key's sha256 (never the key), for ``ttl_s``: a key
    revoked through the API stops working at once (``forget``), one revoked from the CLI (another
    process) within ``ttl_s``. Bounded: when full it starts over.
    """

    def __init__(self, repo: ApiKeyRepository, ttl_s: float = 5.0, size: int = 1024) -> None:
        self.repo = repo
        self._ttl_s = ttl_s
        self._size = size
        self._entries: dict[str, tuple[float, ApiKeyRecord]] = {}

    async def authenticate(self, key: str) -> ApiKeyRecord | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and now < hit[0]:
            return hit[1]
        # A database read: keep it off the event loop.
        record = await asyncio.to_thread(self.repo.authenticate, key)
        if record is None:
            self._entries.pop(digest, None)
            return None
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[digest] = (now + self._ttl_s, record)
        return record

    def forget(self) -> None:
        self._entries.clear()


def _keys(request: Request) -> KeyCache:
    keys: KeyCache = request.app.state.key_cache
    return keys


def _require(needed: Scope) -> Callable[..., Awaitable[ApiKeyRecord]]:
    async def authenticate(
        keys: Annotated[KeyCache, Depends(_keys)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header)],
    ) -> ApiKeyRecord:
        key = bearer.credentials if bearer is not None else header
        if not key:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                headers=_CHALLENGE,
            )
        record = await keys.authenticate(key)
        if record is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key", headers=_CHALLENGE
            )
        if not record.scope.allows(needed):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this operation needs scope '{needed.label}'; "
                f"key '{record.key_id}' has scope '{record.scope.label}'",
            )
        return record

    return authenticate


# One callable per scope: FastAPI then runs the check once per request even when a handler
# also asks for the key record.
_BY_SCOPE = {scope: _require(scope) for scope in Scope}


def require(scope: Scope) -> Callable[..., Awaitable[ApiKeyRecord]]:
    return _BY_SCOPE[scope]


_ERROR_TEXT = {
    401: "No API key, or an unknown or revoked one",
    403: "The key's scope is too small for this operation",
    404: "No such resource",
    422: "Invalid request (parameter or body)",
    503: "The store is unavailable",
}


def secured(scope: Scope, *extra: tuple[int, str]) -> dict[str, Any]:
    """Route keyword arguments for an operation that needs ``scope``: the check, the documented
    error responses and the scope extension."""
    texts = dict(_ERROR_TEXT)
    texts.update(dict(extra))
    return {
        # The key first: a caller without one learns nothing about the parameters.
        "dependencies": [Depends(require(scope)), Depends(single_valued_query)],
        "responses": {code: {"model": ErrorOut, "description": t} for code, t in texts.items()},
        "openapi_extra": {SCOPE_EXTENSION: scope.label},
    }
