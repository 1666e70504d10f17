"""API key authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, and scopes.

Each protected operation depends on ``require(scope)``; the scope it needs is also written into
the OpenAPI document (``x-required-scope``) so clients and the tests read it from one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from bridge.auth import Scope
from bridge.store.apikeys import ApiKeyRecord

from .deps import Keys
from .keycache import KeyCache
from .params import single_valued_query
from .schemas import ErrorOut

__all__ = [
    "CHALLENGE",
    "MISSING_KEY",
    "SCOPE_EXTENSION",
    "UNKNOWN_KEY",
    "audit_actor",
    "checked_key",
    "key_of",
    "optional_key",
    "remember_key",
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
_CHECKED_KEY = "api_key"  # in the request's state


def key_of(headers: Mapping[str, str]) -> str | None:
    """The key a request presents, read as HTTPBearer and APIKeyHeader do (the middleware
    checks it before the body is read, the dependencies document it in the OpenAPI)."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key") or None


def remember_key(scope: MutableMapping[str, Any], record: ApiKeyRecord) -> None:
    """The guard middleware checks the key before the body is read; the dependencies reuse its
    answer (``checked_key``) instead of asking the cache again."""
    scope.setdefault("state", {})[_CHECKED_KEY] = record


def checked_key(request: Request) -> ApiKeyRecord | None:
    """The record ``remember_key`` left for this request; None when the guard did not check
    one (public paths)."""
    found = request.scope.get("state", {}).get(_CHECKED_KEY)
    return found if isinstance(found, ApiKeyRecord) else None


def audit_actor(request: Request, record: ApiKeyRecord) -> tuple[str, str]:
    """(actor, channel) of the audit ledger entry of a change this request makes: the key that
    authenticated it, through ``console`` when the request rode on a console session cookie
    (it presented no key of its own: the guard took the session's), else ``rest``."""
    channel = "rest" if key_of(request.headers) is not None else "console"
    return f"key:{record.key_id}", channel


async def _authenticate(
    request: Request,
    keys: KeyCache,
    bearer: HTTPAuthorizationCredentials | None,
    header: str | None,
) -> ApiKeyRecord | None:
    checked = checked_key(request)
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
        keys: Keys,
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
    keys: Keys,
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
