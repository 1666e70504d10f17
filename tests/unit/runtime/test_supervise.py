"""Supervised restarts a crashing worker with growing, capped waits and counts it."""

from __future__ import annotations

import asyncio
import itertools
import time

from support import wait_until

from bridge.errors import StoreError
from bridge.runtime.supervise import Supervised


async def test_restarts_on_any_exception_until_the_worker_works() -> None:
    attempts: list[float] = []
    done = asyncio.Event()

    async def work() -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RuntimeError("a bug")
        if len(attempts) == 2:
            raise StoreError("database is locked")
        if len(attempts) == 3:
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
        # Waits are at least the initial backoff (tenacity's jitter only adds).
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert all(g >= 0.019 for g in gaps), gaps
    finally:
        await sup.stop()


async def test_a_worker_that_keeps_failing_shows_its_last_error_and_waits_longer() -> None:
    attempts: list[float] = []

    async def work() -> None:
        attempts.append(time.monotonic())
        raise RuntimeError(f"failure {len(attempts)}")

    sup = Supervised("w", work, initial_backoff_s=0.01, max_backoff_s=0.08)
    sup.start()
    try:
        await wait_until(lambda: len(attempts) >= 6, timeout=5, what="six attempts")
        assert sup.restarts >= 5
        assert sup.last_crash.startswith("RuntimeError: failure ")
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        # Exponential: the later waits reach the cap, the first one is short.
        assert gaps[0] < 0.06
        assert max(gaps[3:]) >= 0.07
        assert max(gaps) < 0.5  # capped (0.08 s plus scheduling)
    finally:
        await sup.stop()


async def test_a_crash_after_progress_starts_a_new_short_streak() -> None:
    attempts: list[float] = []

    async def work() -> None:
        attempts.append(time.monotonic())
        n = len(attempts)
        if n >= 5:
            sup.ok()  # from now on each attempt does some work before it crashes
        raise RuntimeError(f"crash {n}")

    sup = Supervised("w", work, initial_backoff_s=0.01, max_backoff_s=1.0)
    sup.start()
    try:
        await wait_until(lambda: len(attempts) >= 8, timeout=5, what="eight attempts")
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        # Without progress the waits grew (0.01, 0.02, 0.04, 0.08 s plus jitter); after it
        # they stay at the initial wait instead of going on doubling towards the cap.
        assert gaps[3] >= 0.08
        assert all(g < 0.06 for g in gaps[5:]), gaps
        assert sup.restarts in (len(attempts) - 1, len(attempts))
        assert sup.last_crash.startswith("RuntimeError: crash ")
    finally:
        await sup.stop()


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

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    sup = Supervised("w", work)
    sup.start()
    await asyncio.sleep(0.01)
    await sup.stop()
    assert cancelled.is_set()
    assert sup.restarts == 0
    await sup.stop()  # twice is harmless
