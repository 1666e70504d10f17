"""QueuedWriter (kernel): batches of at most ``batch_size``, retries of a ``BridgeError`` with
nothing lost, the oldest item out of a full queue, backpressure, poison set aside, and every
loss reported through ``_lost``. The writer under test keeps its items in a list: the queue,
the worker and its supervisor are the real ones."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from support import wait_until

from bridge.errors import StoreError
from bridge.queuedwriter import POISON_AFTER, QueuedWriter


class ListWriter(QueuedWriter[int]):
    """Writes into ``written``; ``fail`` items raise the given errors, one per write, first."""

    def __init__(self, *, batch_size: int | None = None, queue_size: int = 100) -> None:
        super().__init__(
            "list",
            batch_size=batch_size,
            queue_size=queue_size,
            drain_timeout_s=2.0,
            max_backoff_s=0.02,
        )
        self.written: list[list[int]] = []
        self.errors: list[Exception] = []
        self.losses: list[tuple[list[int], str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def put(self, item: int) -> None:
        self._enqueue(item)

    async def put_waiting(self, items: Sequence[int], timeout_s: float) -> list[int]:
        await self._wait_for_room(len(items), timeout_s)
        return self._admit(items)

    async def _persist(self, items: Sequence[int]) -> None:
        await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        self.written.append(list(items))
        self.counters["stored"] += len(items)

    def _lost(self, items: Sequence[int], reason: str) -> None:
        super()._lost(items, reason)
        if items:
            self.losses.append((list(items), reason))


async def test_items_are_written_in_batches_of_at_most_batch_size() -> None:
    w = ListWriter(batch_size=3)
    w.gate.clear()  # hold the worker so that all seven are queued together
    await w.start()
    try:
        for i in range(7):
            w.put(i)
        w.gate.set()
        await wait_until(lambda: w.counters["stored"] == 7, 5, what="seven items")
        assert [len(b) for b in w.written] == [3, 3, 1]
        assert [i for b in w.written for i in b] == list(range(7))
        assert w.health().counters["raised"] == 7
    finally:
        await w.close()


async def test_a_bridge_error_is_retried_with_the_same_items_nothing_lost() -> None:
    w = ListWriter()
    w.errors = [StoreError("database is locked"), StoreError("database is locked")]
    await w.start()
    try:
        w.put(1)
        await wait_until(lambda: w.counters["stored"] == 1, 5, what="the retried write")
        health = w.health()
        assert health.state == "ok", health  # recovered: the error is over
        assert health.counters["errors"] == 2
        assert health.counters["restarts"] == 0  # a retry, not a crash
        assert w.written == [[1]] and w.losses == []
    finally:
        await w.close()


async def test_a_full_queue_drops_its_oldest_item_and_says_so() -> None:
    w = ListWriter(queue_size=2)  # not started: everything stays queued
    for i in range(4):
        w.put(i)
    assert list(w._queue) == [2, 3]
    assert w.counters["dropped"] == 2
    assert [items for items, _ in w.losses] == [[0], [1]]
    assert "full" in w.losses[0][1]


async def test_backpressure_waits_for_the_worker_to_take_items() -> None:
    w = ListWriter(batch_size=2, queue_size=2)
    w.gate.clear()
    await w.start()
    try:
        w.put(1)
        await wait_until(lambda: not w._queue, 5, what="the worker to take item 1")
        w.put(2)
        w.put(3)  # full now, while the worker is stuck on item 1
        waiting = asyncio.create_task(w.put_waiting([4, 5], timeout_s=5))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # waits instead of dropping
        w.gate.set()
        assert await asyncio.wait_for(waiting, 5) == []  # room came: nothing pushed out
        await wait_until(lambda: w.counters["stored"] == 5, 5, what="all five")
        # Without room within the wait, the caller is told which items were pushed out.
        w.gate.clear()
        w.put(6)
        await wait_until(lambda: not w._queue, 5, what="the worker to take item 6")
        w.put(7)
        w.put(8)
        assert await w.put_waiting([9], timeout_s=0.05) == [7]
    finally:
        w.gate.set()
        await w.close()


async def test_items_that_keep_crashing_the_worker_are_set_aside() -> None:
    w = ListWriter()
    w.errors = [RuntimeError("a bug")] * POISON_AFTER
    await w.start()
    try:
        w.put(1)
        await wait_until(lambda: w.counters["dropped"] == 1, 5, what="the poison item")
        w.put(2)
        await wait_until(lambda: w.counters["stored"] == 1, 5, what="the next item")
        assert w.written == [[2]]
        assert w.losses[0][0] == [1] and "RuntimeError: a bug" in w.losses[0][1]
        assert w.health().counters["restarts"] == POISON_AFTER
    finally:
        await w.close()


@pytest.mark.parametrize("started", [True, False])
async def test_close_reports_what_it_could_not_write(started: bool) -> None:
    w = ListWriter()
    w.gate.clear()  # the store never answers
    if started:
        await w.start()
    w.put(1)
    w.put(2)
    w._drain_timeout_s = 0.1
    await w.close()
    assert sorted(i for items, _ in w.losses for i in items) == [1, 2]
    assert w.counters["dropped"] == 2
    assert "closed" in w.losses[0][1]
    assert w.health().state != "ok"
