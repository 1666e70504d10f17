"""cancel_and_wait: the cancelled task's end is quiet, the caller's own cancellation is not.
kept_cancellation / CancelWatch: a cancellation a library swallowed is raised again.

The second test is the race that hung an outbox relay's close(): the relay's worker was
cancelled while it waited for its lease-renewing helper to end, and the old
``suppress(CancelledError)`` took that cancellation for the helper's."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

import pytest

from bridge.cancel import CancelWatch, cancel_and_wait, kept_cancellation


async def test_the_cancelled_tasks_own_end_is_not_raised() -> None:
    child = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    await cancel_and_wait(child)
    assert child.cancelled()


async def test_a_failure_of_the_task_is_raised() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    child = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(child)


async def test_the_callers_cancellation_while_it_waits_is_not_swallowed() -> None:
    release = asyncio.Event()
    waiting = asyncio.Event()

    async def slow_to_end() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            waiting.set()
            await release.wait()  # ends a while after its cancellation (cleanup under way)

    async def worker() -> None:
        child = asyncio.create_task(slow_to_end())
        await asyncio.sleep(0)
        await cancel_and_wait(child)
        await asyncio.Event().wait()  # what the worker would go on doing: forever

    task = asyncio.create_task(worker())
    await asyncio.wait_for(waiting.wait(), 5)
    task.cancel()  # the worker is stopped while it waits for its child
    release.set()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done, "the worker's cancellation was swallowed: it kept running"
    assert task.cancelled()


# --- a cancellation a library swallowed -------------------------------------------------------


async def _cancelled_as_the_reply_lands(
    body: Callable[[asyncio.Future[int]], Awaitable[int]],
) -> asyncio.Task[int]:
    """Run ``body`` in a task, then complete its future and cancel the task in one loop turn:
    the moment Python 3.11's ``wait_for`` returns the result and drops the cancellation."""
    reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(body(reply))
    await asyncio.sleep(0)
    reply.set_result(7)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), 5)
    return task


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps the cancellation on 3.12+")
async def test_wait_for_on_311_swallows_a_cancellation_as_the_reply_lands() -> None:
    """The hazard itself (CPython gh-86296): without the guard, the task returns normally."""

    async def bare(reply: asyncio.Future[int]) -> int:
        return await asyncio.wait_for(reply, 10)

    task = await _cancelled_as_the_reply_lands(bare)
    assert not task.cancelled() and task.result() == 7
    assert task.cancelling() == 1  # the stop was asked for, and got lost


async def test_kept_cancellation_raises_the_swallowed_cancellation_again() -> None:
    async def guarded(reply: asyncio.Future[int]) -> int:
        with kept_cancellation():
            async with asyncio.timeout(10):
                return await asyncio.wait_for(reply, 10)

    task = await _cancelled_as_the_reply_lands(guarded)
    assert task.cancelled()


async def test_kept_cancellation_does_not_count_a_timeout_inside_it() -> None:
    """A timeout that fired inside the block and was turned into TimeoutError is no stop."""

    async def times_out() -> str:
        try:
            with kept_cancellation():
                async with asyncio.timeout(0.01):
                    await asyncio.Event().wait()
        except TimeoutError:
            pass
        watch = CancelWatch()
        await asyncio.sleep(0)
        watch.check()
        return "went on"

    assert await asyncio.create_task(times_out()) == "went on"


async def test_cancel_watch_sees_only_cancellations_after_it_was_made() -> None:
    async def swallows_twice() -> list[str]:
        seen = []
        me = asyncio.current_task()
        assert me is not None
        me.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)  # a swallowed stop from before the watch
        watch = CancelWatch()
        watch.check()
        seen.append("first not counted")
        me.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)
        try:
            watch.check()
        except asyncio.CancelledError:
            seen.append("second raised")
        return seen

    assert await asyncio.create_task(swallows_twice()) == ["first not counted", "second raised"]
