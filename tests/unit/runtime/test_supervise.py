"""Supervised restarts a crashing worker with growing, capped waits and counts it.

The waits are checked as the supervisor chose them (``last_backoff_s``), not by the clock: on
a loaded machine a sleep may last longer than asked, never shorter."""

from __future__ import annotations

import asyncio

from support import wait_until

from bridge.errors import StoreError
from bridge.supervise import Supervised


async def test_restarts_on_any_exception_until_the_worker_works() -> None:
    attempts = 0
    done = asyncio.Event()

    async def work() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("a bug")
        if attempts == 2:
            raise StoreError("database is locked")
        if attempts == 3:
            raise KeyError("another bug")
        sup.ok()
        done.set()
        await asyncio.Event().wait()

    sup = Supervised("w", work, initial_backoff_s=0.02, max_backoff_s=0.05)
    sup.start()
    try:
        await asyncio.wait_for(done.wait(), 5)
        assert sup.restarts == 3
        assert sup.last_crash == ""  # ok() cleared it
        assert not sup.done()
    finally:
        await sup.stop()


async def test_a_worker_that_keeps_failing_shows_its_last_error_and_waits_longer() -> None:
    waits: list[float] = []

    async def work() -> None:
        waits.append(sup.last_backoff_s)
        raise RuntimeError(f"failure {len(waits)}")

    sup = Supervised("w", work, initial_backoff_s=0.01, max_backoff_s=0.08)
    sup.start()
    try:
        await wait_until(lambda: len(waits) >= 7, timeout=10, what="seven attempts")
        assert sup.restarts >= 6
        assert sup.last_crash.startswith("RuntimeError: failure ")
    finally:
        await sup.stop()
    chosen = waits[1:7]  # the wait before attempts 2..7
    # Exponential with equal jitter: the n-th wait lies between half and all of
    # min(0.08, 0.01 * 2**(n-1)). Each range starts where the previous one ends: they grow.
    assert 0.005 <= chosen[0] <= 0.01
    assert 0.01 <= chosen[1] <= 0.02
    assert 0.02 <= chosen[2] <= 0.04
    # Capped: without the cap the 5th and 6th waits would be at least 0.08 and 0.16.
    assert all(0.04 <= w <= 0.08 for w in chosen[3:]), chosen
    assert len(set(chosen[3:])) > 1  # jittered at the cap too, not in lock-step


async def test_a_crash_after_progress_starts_a_new_short_streak() -> None:
    waits: list[float] = []

    async def work() -> None:
        waits.append(sup.last_backoff_s)
        if len(waits) >= 6:
            sup.ok()  # from now on each attempt gets something done before it crashes
        raise RuntimeError(f"crash {len(waits)}")

    sup = Supervised("w", work, initial_backoff_s=0.01, max_backoff_s=1.0)
    sup.start()
    try:
        await wait_until(lambda: len(waits) >= 9, timeout=10, what="nine attempts")
        assert sup.last_crash.startswith("RuntimeError: crash ")
        assert sup.restarts >= 8
    finally:
        await sup.stop()
    # Without progress the waits doubled (the 4th: 0.04 to 0.08); after it they stay at the
    # first wait (0.005 to 0.01) instead of going on doubling towards the cap.
    assert 0.04 <= waits[4] <= 0.08
    assert all(0.005 <= w <= 0.01 for w in waits[6:9]), waits


async def test_a_worker_that_returns_is_restarted() -> None:
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs >= 3:
            await asyncio.Event().wait()

    sup = Supervised("w", work, initial_backoff_s=0.01, max_backoff_s=0.02)
    sup.start()
    try:
        await wait_until(lambda: runs >= 3, timeout=5, what="third run")
        assert sup.restarts == 2
        assert "returned" in sup.last_crash
    finally:
        await sup.stop()


async def test_stop_cancels_the_worker_and_is_not_a_crash() -> None:
    cancelled = asyncio.Event()
    running = asyncio.Event()

    async def work() -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    sup = Supervised("w", work)
    sup.start()
    await asyncio.wait_for(running.wait(), 5)
    await sup.stop()
    assert cancelled.is_set()
    assert sup.restarts == 0
    await sup.stop()  # twice is harmless
