"""Supervised: keeps one background worker running, whatever it raises.

A worker (the store writer, a queued writer, an outbox relay) is a coroutine that loops forever
and keeps its unfinished work on its owner, so a restarted worker takes it up again. Whatever
it raises, ``BridgeError`` or a bug, is logged with its traceback, counted and followed by a
restart after an exponential, jittered and capped wait (tenacity with the one backoff of
``bridge.retry``, as for sources). The owner calls ``ok()`` after each unit of work done: until
then the crash stays visible in ``last_crash`` (health shows the component degraded with it),
and a worker that crashes again after an ``ok()`` starts a new streak of short waits instead of
inheriting a long one.

Cancellation is not a failure: ``stop()`` (or cancelling the owner) ends the worker for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from bridge.cancel import cancel_and_wait
from bridge.retry import backoff_delay, tenacity_wait

__all__ = ["Supervised"]

log = structlog.get_logger(__name__)


class WorkerEnded(RuntimeError):
    """A worker's loop returned: it never should, so it is restarted like a crash."""


class Supervised:
    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[None]],
        *,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.name = name
        self._work = work
        self._initial_s = min(initial_backoff_s, max_backoff_s)
        self._max_s = max_backoff_s
        self._task: asyncio.Task[None] | None = None
        self._progress = False
        self.restarts = 0
        self.last_crash = ""
        self.last_backoff_s = 0.0  # the wait before the latest restart

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=self.name)

    def done(self) -> bool:
        """True once the supervisor itself has ended (stopped): the worker no longer runs."""
        return self._task is not None and self._task.done()

    def ok(self) -> None:
        """The worker did a unit of work: the last crash is over."""
        self._progress = True
        if self.last_crash:
            log.info("worker_recovered", worker=self.name, restarts=self.restarts)
            self.last_crash = ""

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_and_wait(task)

    async def _supervise(self) -> None:
        while True:
            # One streak of restarts: its waits grow until the worker gets something done.
            retrying = AsyncRetrying(
                retry=retry_if_exception_type(Exception),
                # Equal jitter: at the cap the restarts of many workers still spread out.
                wait=tenacity_wait(self._initial_s, self._max_s),
                before_sleep=self._restarting,
                reraise=True,
            )
            await retrying(self._attempt)

    async def _attempt(self) -> None:
        self._progress = False
        try:
            await self._work()
            raise WorkerEnded(f"worker {self.name} returned")
        except Exception as exc:
            if not self._progress:
                raise  # the streak goes on: tenacity waits longer before the next attempt
            # It worked for a while before this crash: restart after a short wait, new streak.
            delay = backoff_delay(1, self._initial_s, self._max_s)
            self._crashed(exc, delay)
            await asyncio.sleep(delay)

    def _restarting(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        if exc is not None:
            self._crashed(exc, delay)

    def _crashed(self, exc: BaseException, delay: float) -> None:
        self.restarts += 1
        self.last_crash = f"{type(exc).__name__}: {exc}"
        self.last_backoff_s = delay
        log.error(
            "worker_crashed_restarting",
            worker=self.name,
            error=self.last_crash,
            restarts=self.restarts,
            restart_in_s=round(delay, 3),
            exc_info=exc,
        )
