"""The user of the request being processed, for method handlers (asyncua gives them none).

Set by the guarded processor around each request; a method handler runs inside that request's
processing, in the same task, so it reads the caller's user here.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = ["CALLER", "caller_name", "caller_role"]

CALLER: ContextVar[Any] = ContextVar("bridge_opcua_caller", default=None)


def caller_role() -> str | None:
    user = CALLER.get()
    return None if user is None else getattr(user, "bridge_role", "reader")


def caller_name() -> str:
    user = CALLER.get()
    name = getattr(user, "name", None) if user is not None else None
    return str(name) if name else "anonymous"
