"""The notification hand-off: bounded, coalescing on overflow, counting, in order per item."""

from __future__ import annotations

import asyncio
import time

from bridge.connectors.opcua._inbox import Inbox


def test_within_bound_everything_arrives_in_order() -> None:
    inbox: Inbox[str] = Inbox(maxsize=10)
    for i in range(5):
        inbox.offer(i % 2, f"v{i}")
    items, spilled = inbox.take(100)
    assert items == [(0, "v0"), (1, "v1"), (0, "v2"), (1, "v3"), (0, "v4")]
    assert spilled == [] and inbox.dropped == 0


def test_overflow_keeps_latest_per_item_and_counts_superseded() -> None:
    inbox: Inbox[int] = Inbox(maxsize=2)
    inbox.offer(1, 10)
    inbox.offer(2, 20)
    inbox.offer(1, 11)  # queue full: spills
    inbox.offer(1, 12)  # supersedes 11
    inbox.offer(3, 30)  # queue still full: spills
    assert inbox.dropped == 1 and inbox.spilled_total == 3
    items, spilled = inbox.take(100)
    assert items == [(1, 10), (2, 20)]
    assert sorted(spilled) == [(1, 12), (3, 30)]


def test_spilled_item_stays_spilled_so_order_is_kept() -> None:
    inbox: Inbox[int] = Inbox(maxsize=1)
    inbox.offer(1, 1)
    inbox.offer(1, 2)  # spills
    items, spilled = inbox.take(1)  # queue drained, spill flushed after it
    assert items == [(1, 1)] and spilled == [(1, 2)]
    inbox.offer(2, 5)
    inbox.offer(1, 3)  # queue full again
    inbox.offer(2, 6)
    items, spilled = inbox.take(0)  # take nothing: the spill must wait behind the queue
    assert items == [] and spilled == []
    items, spilled = inbox.take(10)
    assert items == [(2, 5)] and sorted(spilled) == [(1, 3), (2, 6)]


async def test_wait_wakes_on_offer_and_on_failure_and_times_out() -> None:
    inbox: Inbox[int] = Inbox(maxsize=4)
    started = time.monotonic()
    await inbox.wait(0.05)
    assert time.monotonic() - started >= 0.04

    async def later() -> None:
        await asyncio.sleep(0.02)
        inbox.offer(7, 70)

    task = asyncio.create_task(later())
    await asyncio.wait_for(inbox.wait(5), timeout=1)
    await task
    assert inbox.take(10) == ([(7, 70)], [])

    inbox.fail("first")
    inbox.fail("second")
    await asyncio.wait_for(inbox.wait(5), timeout=1)
    assert inbox.failure == "first"
