"""SourceSupervisor ends when stopped, even if the source's library swallowed the stop.

On Python 3.11 ``asyncio.wait_for`` (inside asyncua and pymodbus) can return a reply and drop
the cancellation that came in the same loop turn (see ``bridge.cancel``). The supervisor checks
after each batch, so a source that goes on yielding is still stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

from bridge.runtime.sources import SourceSupervisor
from bridge.types import Quality, TagSample


class SwallowingSource:
    """Yields a batch every 10 ms; a cancellation during its wait is swallowed, as a library's
    ``wait_for`` does when the reply lands with it."""

    name = "swallowing"

    def __init__(self) -> None:
        self.swallowed = 0
        self.closed = False

    async def connect(self) -> None:
        self.closed = False

    async def samples(self) -> AsyncIterator[Sequence[TagSample]]:
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                self.swallowed += 1
            yield [TagSample("t", 1.0, Quality.GOOD, time.time())]

    async def close(self) -> None:
        self.closed = True


async def test_a_supervisor_whose_source_swallows_the_stop_still_ends() -> None:
    source = SwallowingSource()
    delivered: list[int] = []

    async def deliver(batch: Sequence[TagSample]) -> None:
        delivered.append(len(batch))
        if len(delivered) == 5:
            # The stop lands while the source waits (delivery runs in the same task).
            me = asyncio.current_task()
            assert me is not None
            asyncio.get_running_loop().call_soon(me.cancel)

    sup = SourceSupervisor(source, "k", ["t"], deliver, lambda tags, reason: None)
    task = asyncio.create_task(sup.run())
    done, _ = await asyncio.wait({task}, timeout=5)
    if not done:
        task.cancel()
    assert source.swallowed == 1
    assert task in done, "the supervisor went on after its stop was swallowed"
    assert task.cancelled()
    assert sup.state == "stopped" and source.closed
    assert len(delivered) == 5  # not one batch after the stop
