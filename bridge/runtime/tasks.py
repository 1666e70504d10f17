"""Named background tasks whose failures are never silent: a crashed task is logged and stops
the gateway, so nothing keeps running half-dead."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

from bridge.cancel import cancel_and_wait

__all__ = ["TaskSet"]

log = structlog.get_logger(__name__)


class TaskSet:
    """``stop`` is the event a crash or an unexpected end sets; a gateway's tasks are made
    when it is built, the event arrives with ``run`` (``stop_on``)."""

    def __init__(self, stop: asyncio.Event | None = None) -> None:
        self._stop = stop if stop is not None else asyncio.Event()
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self.failure: BaseException | None = None

    def stop_on(self, stop: asyncio.Event) -> None:
        """Set ``stop`` (instead of the event given so far) when a task fails or ends."""
        self._stop = stop

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._done)
        self._tasks[name] = task
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task_crashed", task=task.get_name(), error=repr(exc), exc_info=exc)
            if self.failure is None:
                self.failure = exc
            self._stop.set()
        elif not self._stop.is_set():
            log.error("task_ended_unexpectedly", task=task.get_name())
            self._stop.set()

    async def cancel_named(self, *names: str) -> None:
        """Cancel the tasks of exactly these names and wait for them to finish. Exact, not
        prefixes: stopping ``model:pump`` must not take ``model:pump2`` with it."""
        chosen = [t for n, t in self._tasks.items() if n in names]
        for task in chosen:
            task.cancel()
        for task in chosen:
            await cancel_and_wait(task)
        for name in [n for n, t in self._tasks.items() if t in chosen]:
            del self._tasks[name]
