"""API key authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, and scopes.

Each protected operation depends on ``require(scope)``; the scope it needs is also written into
the OpenAPI document (``x-required-scope``) so clients and the tests read it from one place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from bridge.auth import Scope, hash_key
from bridge.store.apikeys import ApiKeyRecord, ApiKeyRepository

from .params import single_valued_query
from .queries import QueryRunner
from .schemas import ErrorOut

__all__ = [
    "CHALLENGE",
    "MISSING_KEY",
    "SCOPE_EXTENSION",
    "UNKNOWN_KEY",
    "KeyCache",
    "key_of",
    "optional_key",
    "require",
    "secured",
]

SCOPE_EXTENSION = "x-required-scope"

_bearer = HTTPBearer(
    auto_error=False, scheme_name="bearerKey", description="`Authorization: Bearer <API key>`"
)
_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="apiKeyHeader", description="`X-API-Key`"
)

CHALLENGE = {"WWW-Authenticate": "Bearer"}
MISSING_KEY = "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
UNKNOWN_KEY = "unknown or revoked API key"


def key_of(headers: Mapping[str, str]) -> str | None:
    """The key a request presents, read as HTTPBearer and APIKeyHeader do (the middleware
    checks it before the body is read, the dependencies document it in the OpenAPI)."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key") or None


class KeyCache:
    """Recently verified keys, so a request costs no database read in the common case.

    Only successful checks are kept, by the key's sha256 (never the key), for ``ttl_s``: a key
    revoked through the API stops working at once (``forget``), one revoked from the CLI (another
    process) within ``ttl_s``. Bounded: when full it starts over.
    """

    def __init__(
        self,
        repo: ApiKeyRepository,
        ttl_s: float = 5.0,
        size: int = 1024,
        queries: QueryRunner | None = None,
    ) -> None:
        self.repo = repo
        self._queries = queries
        self._ttl_s = ttl_s
        self._size = size
        self._entries: dict[str, tuple[float, ApiKeyRecord]] = {}

    async def authenticate(self, key: str) -> ApiKeyRecord | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and now < hit[0]:
            return hit[1]
        # A database read: keep it off the event loop, on the API's own threads.
        if self._queries is not None:
            record = await self._queries.run(self.repo.authenticate, key)
        else:
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


async def _authenticate(
    request: Request,
    keys: KeyCache,
    bearer: HTTPAuthorizationCredentials | None,
    header: str | None,
) -> ApiKeyRecord | None:
    # The guard middleware has checked the key before the body was read: reuse its answer.
    checked: ApiKeyRecord | None = getattr(request.state, "api_key", None)
    if checked is not None:
        return checked
    key = bearer.credentials if bearer is not None else header
    if not key:
        return None
    record = await keys.authenticate(key)
    if record is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, UNKNOWN_KEY, headers=CHALLENGE)
    return record


def _require(needed: Scope) -> Callable[..., Awaitable[ApiKeyRecord]]:
    async def authenticate(
        request: Request,
        keys: Annotated[KeyCache, Depends(_keys)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header)],
    ) -> ApiKeyRecord:
        record = await _authenticate(request, keys, bearer, header)
        if record is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, MISSING_KEY, headers=CHALLENGE)
        if not record.scope.allows(needed):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this operation needs scope '{needed.label}'; "
                f"key '{record.key_id}' has scope '{record.scope.label}'",
            )
        return record

    return authenticate


async def optional_key(
    request: Request,
    keys: Annotated[KeyCache, Depends(_keys)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> ApiKeyRecord | None:
    """For operations open to anyone that say more to a key holder: no key is None, a wrong
    key is still 401 (a typo should not silently give the anonymous answer)."""
    return await _authenticate(request, keys, bearer, header)


# One callable per scope: FastAPI then runs the check once per request even when a handler
# also asks for the key record.
_BY_SCOPE = {scope: _require(scope) for scope in Scope}


def require(scope: Scope) -> Callable[..., Awaitable[ApiKeyRecord]]:
    return _BY_SCOPE[scope]


_ERROR_TEXT = {
    401: "No API key, or an unknown or revoked one",
    403: "The key's scope is too small for this operation",
    404: "No such resource",
    413: "The body is larger than gateway.api.max_body_bytes",
    422: "Invalid request (parameter or body)",
    429: "Too many requests for this key (rate or concurrency); see Retry-After",
    503: "The store is unavailable or busy, or the query took too long",
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
