"""Cancel a task and wait for it to end, without swallowing the caller's own cancellation.

``task.cancel(); with suppress(CancelledError): await task`` has a race: if the *caller* is
cancelled while it waits (a relay stopped while its round is cleaning up), the
``CancelledError`` it gets is its own, and the ``suppress`` eats it. The caller then carries
on as if nothing happened and whoever cancelled it waits forever (an outbox relay's
``close()`` hung at shutdown about one run in five on PostgreSQL). ``Task.cancelling()`` tells
the two apart: it counts the cancellations requested of the current task.

The same count catches a cancellation a library swallowed. On Python 3.11,
``asyncio.wait_for`` returns the result when the awaited future completes in the same loop
turn as the waiting task is cancelled (CPython gh-86296, fixed in 3.12). pymodbus and asyncua
wrap every request in ``wait_for``, so a source being stopped while a reply arrives carried on
polling, and whoever stopped it waited forever (a Modbus test hung about one run in eight
under load). ``kept_cancellation`` raises it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["CancelWatch", "cancel_and_wait", "kept_cancellation"]


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


class CancelWatch:
    """Notices a cancellation of the current task that something swallowed since this watch
    was made; ``check()`` raises it again.

    Made outside any ``asyncio.timeout``: a timeout's own cancel, taken back at its exit,
    is then not counted.
    """

    def __init__(self) -> None:
        self._task = asyncio.current_task()
        self._before = self._task.cancelling() if self._task is not None else 0

    def check(self) -> None:
        if self._task is not None and self._task.cancelling() > self._before:
            raise asyncio.CancelledError


@contextlib.contextmanager
def kept_cancellation() -> Iterator[None]:
    """Raise ``CancelledError`` after the block if the task was cancelled inside it and the
    block returned anyway (a library swallowed the cancellation). Put timeouts inside the
    block, not around it."""
    watch = CancelWatch()
    yield
    watch.check()
