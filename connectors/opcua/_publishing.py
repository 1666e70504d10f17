"""How the gateway's own server publishes to its clients' subscriptions.

asyncua grants any publishing interval a client asks for, 0 included (a publish per changed
item), and publishes on a fixed grid: a subscription's loop wakes every interval from its
creation. A prediction written just after a tick waited a whole interval for the next one (at
10 ms: 0-10 ms, and a constant ~10 ms when the writes fall in step with a source's 100 ms
publishing, bench/trigger.py).

:class:`Publishing` keeps the interval's two meanings and drops the grid:

- an interval below the configured floor is raised to it;
- a subscription whose last notification went out at least one interval ago sends a new change
  at once (the writer wakes it, :meth:`Publishing.wake`); within the interval it sends at the
  interval's end. Notifications never come closer than the interval, and an idle subscription
  still ticks every interval for its keep-alive and lifetime counts, as asyncua's loop does.

It replaces the task asyncua starts for each subscription (``InternalSubscription._task``, which
``stop`` cancels), reaching into private state pinned by ``asyncua~=2.1``;
tests/integration/test_opcua_server_publishing.py fails if that state changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog
from asyncua import ua
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.server import Server

__all__ = ["Publishing"]

log = structlog.get_logger(__name__)


class Publishing:
    """The publishing of one server's subscriptions; install once, before ``server.start``."""

    def __init__(self, server: Server, floor_ms: float) -> None:
        self._floor_ms = floor_ms
        self._wakers: dict[int, asyncio.Event] = {}
        service = server.iserver.subscription_service
        self._service = service
        create = service.create_subscription

        async def create_eager(
            params: ua.CreateSubscriptionParameters, *args: Any, **kwargs: Any
        ) -> ua.CreateSubscriptionResult:
            if not params.RequestedPublishingInterval >= floor_ms:  # NaN too
                params.RequestedPublishingInterval = floor_ms
            result = await create(params, *args, **kwargs)
            isub = service.subscriptions.get(result.SubscriptionId)
            if isub is not None:
                self._adopt(isub)
            return result

        service.create_subscription = create_eager  # type: ignore[method-assign]

    def wake(self, subscriptions: Iterable[InternalSubscription]) -> None:
        """These subscriptions have new notifications queued: send them as soon as allowed."""
        for isub in subscriptions:
            waker = self._wakers.get(id(isub))
            if waker is not None:
                waker.set()

    def _adopt(self, isub: InternalSubscription) -> None:
        task = isub._task
        if task is None:  # interval 0 (not granted here) or not started: asyncua's way
            return
        task.cancel()
        waker = asyncio.Event()
        key = id(isub)
        self._wakers[key] = waker
        name = f"publish-{isub.data.SubscriptionId}"
        own = asyncio.create_task(self._loop(isub, waker), name=name)
        own.add_done_callback(lambda _: self._wakers.pop(key, None))
        isub._task = own

    async def _loop(self, isub: InternalSubscription, waker: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        period = isub.data.RevisedPublishingInterval / 1000.0
        sent = float("-inf")  # when notifications last went out
        if await isub.publish_results():  # asyncua publishes once at start (the initial values)
            sent = loop.time()
        tick = loop.time() + period
        try:
            while not isub._closing:
                woken = waker.is_set()
                if not woken:
                    try:
                        async with asyncio.timeout_at(tick):
                            await waker.wait()
                        woken = True
                    except TimeoutError:
                        pass
                waker.clear()
                now = loop.time()
                if woken and now < sent + period:
                    await asyncio.sleep(sent + period - now)
                    now = loop.time()
                if await isub.publish_results():
                    sent = now
                # A woken publish starts a new cycle; an idle one keeps the cycle's pace without
                # a burst of catch-up ticks after a stall.
                tick = now + period if woken else max(tick + period, now)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("subscription_publish_failed", subscription=isub.data.SubscriptionId)
            raise
