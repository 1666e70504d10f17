"""cancel_and_wait: the cancelled task's end is quiet, the caller's own cancellation is not.

The second test is the race that hung an outbox relay's close(): the relay's worker was
cancelled while it waited for its lease-renewing helper to end, and the old
``suppress(CancelledError)`` took that cancellation for the helper's."""

from __future__ import annotations

import asyncio

import pytest

from bridge.cancel import cancel_and_wait


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
