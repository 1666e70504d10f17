"""The gateway's own garbage collection (bridge.runtime.collector): Python's automatic collector
off while it runs, young collections on its clock, full ones less often, cyclic garbage still
freed, and the automatic collector back afterwards. Real collections, seen through
``gc.callbacks``."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from support import wait_until

from bridge.cancel import cancel_and_wait
from bridge.runtime.collector import collect_between_events

DEADLINE_S = 10.0


class Cycle:
    """An object that references itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection that ends while the test runs."""
    seen: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            seen.append(info["generation"])

    gc.callbacks.append(note)
    try:
        yield seen
    finally:
        gc.callbacks.remove(note)


async def until(check: Any, what: str) -> None:
    await wait_until(check, DEADLINE_S, interval=0.005, what=what)


async def test_young_collections_on_a_clock_with_the_automatic_collector_off(
    collections: list[int],
) -> None:
    assert gc.isenabled()
    task = asyncio.create_task(collect_between_events(0.01, 3600.0))
    try:
        await asyncio.sleep(0)
        assert not gc.isenabled()
        start = len(collections)
        await until(lambda: collections[start:].count(1) >= 10, "ten young collections")
        assert 2 not in collections[start:]  # no full one before its time
        # A cycle made now is freed by a young collection.
        gone = weakref.ref(Cycle())
        await until(lambda: gone() is None, "the young cycle freed")
    finally:
        await cancel_and_wait(task)
    assert gc.isenabled()


async def test_an_old_cycle_waits_for_the_full_collection(collections: list[int]) -> None:
    task = asyncio.create_task(collect_between_events(0.01, 0.5))
    try:
        holder = [Cycle()]
        gone = weakref.ref(holder[0])
        start = len(collections)
        # Survives two young collections: it is in the oldest generation now.
        await until(lambda: collections[start:].count(1) >= 2, "two young collections")
        holder.clear()
        dropped = len(collections)
        await until(lambda: gone() is None, "the old cycle freed")
        assert 2 in collections[dropped:]  # freed by a full collection
    finally:
        await cancel_and_wait(task)
    assert gc.isenabled()


async def test_the_automatic_collector_stays_off_if_it_was_off() -> None:
    gc.disable()
    try:
        task = asyncio.create_task(collect_between_events(0.01, 3600.0))
        await asyncio.sleep(0.03)
        await cancel_and_wait(task)
        assert not gc.isenabled()
    finally:
        gc.enable()
