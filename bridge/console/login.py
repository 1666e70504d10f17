"""Logging in and out of the console, and who the person on a page is.

A person logs in with an API key once; the browser then holds only an opaque session cookie
(HttpOnly, SameSite=Strict, Secure under TLS; bridge.api.sessions). The key is never put in a
page or a URL. Logging in and out are the only forms posted without JavaScript: their Origin
must be this host, and logging out also carries the session's CSRF token.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs, quote

import structlog
from fastapi import Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from bridge.api.app import CONSOLE_PREFIX
from bridge.api.deps import Services
from bridge.api.guard import same_origin
from bridge.api.sessions import SESSION_COOKIE, ConsoleSession
from bridge.auth import Scope
from bridge.store.apikeys import ApiKeyRecord

__all__ = [
    "PREFIX",
    "FailedLogins",
    "LoginRequired",
    "User",
    "current_user",
    "open_session",
    "read_form",
    "safe_next",
]

log = structlog.get_logger(__name__)

PREFIX = CONSOLE_PREFIX  # the API's guard leaves these paths to the console
_MAX_FORM_BYTES = 16 * 1024


class LoginRequired(Exception):
    """Raised by a page without a valid session; answered with a redirect to the login form."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True, slots=True)
class User:
    session: ConsoleSession
    key: ApiKeyRecord

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def scope(self) -> str:
        return self.key.scope.label

    def may(self, scope: str) -> bool:
        return self.key.scope.allows(Scope.parse(scope))


async def current_user(request: Request, services: Services) -> User:
    session = services.sessions.get(request.cookies.get(SESSION_COOKIE))
    record = None if session is None else await services.keys.authenticate(session.key)
    # A key that may not read (scope insights) never has a session; refused here too.
    if session is None or record is None or not record.scope.allows(Scope.READ):
        if session is not None:  # its key was revoked (or may not read)
            services.sessions.close(session.id)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return User(session, record)


CurrentUser = Annotated[User, Depends(current_user)]


def safe_next(target: str | None) -> str:
    """Only a path of the console itself: a login link cannot send the browser elsewhere."""
    if (
        target
        and target.startswith(PREFIX + "/")
        and not any(c in target for c in ("\\", "\n", "\r"))
    ):
        return target
    return PREFIX + "/"


def login_redirect(next_path: str) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/login?next={quote(safe_next(next_path))}", status_code=303)


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form, at most 16 KiB (the console's forms hold a key or a token)."""
    if not same_origin(request.headers, request.url.scheme):
        raise HTTPException(403, "cross-origin form refused")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


class FailedLogins:
    """Wrong keys per client address in a sliding minute; beyond the limit logins are refused
    (429) until the minute has passed, so a key cannot be guessed through the form. Bounded:
    at most ``max_clients`` addresses are remembered."""

    def __init__(self, per_minute: int = 10, max_clients: int = 10_000) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._seen.get(client)
        if times is None:
            times = self._seen[client] = deque()
            while len(self._seen) > self.max_clients:
                self._seen.popitem(last=False)
        while times and now - times[0] > 60:
            times.popleft()
        return times

    def blocked(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return len(self._recent(client, now)) >= self.per_minute

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._recent(client, now).append(now)
        self._seen.move_to_end(client)


def open_session(
    request: Request, response: Response, services: Services, key: str, record: ApiKeyRecord
) -> ConsoleSession:
    session = services.sessions.open(key, record.key_id)
    response.set_cookie(
        SESSION_COOKIE,
        session.id,
        max_age=int(services.sessions.lifetime_s),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    log.info("console_login", key_id=record.key_id, scope=record.scope.label)
    return session
