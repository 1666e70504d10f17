"""The first thing a request meets: its API key and its key's budget, before any body is read.

FastAPI reads and parses a request body before it runs the dependencies that check the key:
a stranger's 400 MiB body was read in full, then refused (422). This ASGI middleware checks
the key from the headers alone, then the key's rate and concurrency budget (429 with
Retry-After), and only then lets the request in. Scopes are still checked per operation by
``bridge.api.auth.require``, which reuses the record found here.

A request without a key may ride on a console session cookie (bridge.api.sessions): the
session's key is then checked the same way, and a state-changing request must also carry the
session's CSRF token and, when the browser sends one, an Origin of this very host.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import structlog
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.errors import StoreError

from .auth import CHALLENGE, MISSING_KEY, UNKNOWN_KEY, key_of, remember_key
from .keycache import KeyCache
from .limits import KeyLimits
from .problems import problem
from .sessions import CSRF_HEADER, SESSION_COOKIE, SessionStore

__all__ = ["ApiGuard"]

log = structlog.get_logger(__name__)


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_REFUSED = (
    "this request rides on a console session: it needs the session's CSRF token in "
    "X-CSRF-Token (the console's pages send it), or an API key instead of the cookie"
)
ORIGIN_REFUSED = "cross-origin request refused: a console session acts only from its own pages"


def _has_body(headers: Headers) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"


def same_origin(headers: Headers, scheme: str) -> bool:
    """True without an Origin header (not a browser's cross-site request) or with this host's."""
    origin = headers.get("origin")
    if origin is None:
        return True
    return origin == f"{scheme}://{headers.get('host', '')}"


class ApiGuard:
    def __init__(
        self,
        app: ASGIApp,
        keys: KeyCache,
        limits: KeyLimits,
        public: Collection[str],
        public_prefixes: tuple[str, ...] = (),
        sessions: SessionStore | None = None,
    ) -> None:
        self.app = app
        self._sessions = sessions
        self._keys = keys
        self._limits = limits
        self._public = frozenset(public)
        self._public_prefixes = public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path in self._public
            or path.startswith(self._public_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        # A refused request's body is never read: close the connection rather than let the
        # server go on receiving (and dropping) what the client still sends.
        closing = {"Connection": "close"} if _has_body(headers) else {}
        key = key_of(headers)
        if key is None and self._sessions is not None:
            refused, key = self._session_key(scope, headers)
            if refused is not None:
                log.info("api_session_refused", path=path, detail=refused)
                await problem(403, refused, path, closing)(scope, receive, send)
                return
        try:
            record = None if key is None else await self._keys.authenticate(key)
        except (HTTPException, StoreError) as exc:
            # Outside FastAPI here: answer as its handlers would (busy: 503, store down: 503).
            if isinstance(exc, HTTPException):
                status, detail, extra = exc.status_code, str(exc.detail), dict(exc.headers or {})
            else:
                log.error("api_store_error", path=path, error=str(exc))
                status, detail, extra = 503, "the store is unavailable", {}
            await problem(status, detail, path, {**extra, **closing})(scope, receive, send)
            return
        if record is None:
            detail = MISSING_KEY if key is None else UNKNOWN_KEY
            response = problem(401, detail, path, {**CHALLENGE, **closing})
            await response(scope, receive, send)
            return
        refusal = self._limits.admit(record.key_id, time.monotonic())
        if refusal is not None:
            log.info("api_key_limited", key_id=record.key_id, path=path, detail=refusal.detail)
            response = problem(
                429, refusal.detail, path, {"Retry-After": str(refusal.retry_after_s), **closing}
            )
            await response(scope, receive, send)
            return
        remember_key(scope, record)
        try:
            await self.app(scope, receive, send)
        finally:
            self._limits.release(record.key_id)

    def _session_key(self, scope: Scope, headers: Headers) -> tuple[str | None, str | None]:
        """(refusal, key) of a request that carries a console session cookie instead of a key."""
        assert self._sessions is not None
        cookies = cookie_parser(headers.get("cookie", ""))
        session = self._sessions.get(cookies.get(SESSION_COOKIE))
        if session is None:
            return None, None  # no session: answered as a request without a key (401)
        if scope.get("method", "GET") not in _SAFE_METHODS:
            if not same_origin(headers, scope.get("scheme", "http")):
                return ORIGIN_REFUSED, None
            if not session.csrf_matches(headers.get(CSRF_HEADER)):
                return CSRF_REFUSED, None
        return None, session.key
