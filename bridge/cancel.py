"""Cancel a task and wait for it to end, without swallowing the caller's own cancellation.

``task.cancel(); with suppress(CancelledError): await task`` has a race: if the *caller* is
cancelled while it waits (a relay stopped while its round is cleaning up), the
``CancelledError`` it gets is its own, and the ``suppress`` eats it. The caller then carries
on as if nothing happened and whoever cancelled it waits forever (an outbox relay's
``close()`` hung at shutdown about one run in five on PostgreSQL). ``Task.cancelling()`` tells
the two apart: it counts the cancellations requested of the current task.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended. Its own ``CancelledError`` is not raised
    here (an exception it ended with is); a cancellation of the caller is."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
