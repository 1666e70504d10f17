"""Console sessions: a browser logs in once with an API key and then holds an opaque session
cookie (HttpOnly, SameSite=Strict), never the key itself.

The key stays in this process's memory only; every request of the session is authenticated with
it again through the key cache, so a revoked key ends its sessions at the cache's next refresh.
Each session has its own CSRF token: a state-changing request that rides on the cookie must echo
it in ``X-CSRF-Token`` (bridge.api.guard), which a page of another origin cannot read.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["CSRF_HEADER", "SESSION_COOKIE", "ConsoleSession", "SessionStore"]

SESSION_COOKIE = "bridge_session"
CSRF_HEADER = "x-csrf-token"


@dataclass(slots=True)
class ConsoleSession:
    id: str
    key: str  # the API key it logged in with; in memory only
    key_id: str
    csrf: str
    created_at: float
    seen_at: float

    def csrf_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf)


class SessionStore:
    """Bounded: beyond ``max_sessions`` the least recently used session is dropped (its
    browser logs in again), so a script that logs in in a loop cannot grow memory."""

    def __init__(
        self, lifetime_s: float = 8 * 3600, idle_s: float = 3600, max_sessions: int = 1000
    ) -> None:
        self.lifetime_s = lifetime_s
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, key: str, key_id: str, now: float | None = None) -> ConsoleSession:
        now = time.time() if now is None else now
        session = ConsoleSession(
            id=secrets.token_urlsafe(32),
            key=key,
            key_id=key_id,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            seen_at=now,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None, now: float | None = None) -> ConsoleSession | None:
        if not session_id:
            return None
        found = self._sessions.get(session_id)
        if found is None:
            return None
        now = time.time() if now is None else now
        if now - found.created_at > self.lifetime_s or now - found.seen_at > self.idle_s:
            del self._sessions[session_id]
            return None
        found.seen_at = now
        self._sessions.move_to_end(session_id)
        return found

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def close_key(self, key_id: str) -> int:
        """End every session of a key (it was revoked); the number ended."""
        ended = [s for s, v in self._sessions.items() if v.key_id == key_id]
        for s in ended:
            del self._sessions[s]
        return len(ended)
