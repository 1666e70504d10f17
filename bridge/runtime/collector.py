"""The cyclic garbage collector, run from the event loop between events.

CPython collects when allocations outrun deallocations by a threshold, that is in the middle
of whatever allocates: decoding a 2,000-item publish response, a model run, the store writer's
thread building rows (its collections hold the GIL: the loop waits too). And it counts
*net* allocations: a gateway in steady state replaces values (an HMI node's DataValue, a
window's oldest sample) about as fast as it makes them, so the count climbs slowly while the
young generation fills with values that live a second or more. Each collection then walks
thousands of them: 5-50 ms pauses on a 2-core machine, landing on the latency of every event
waiting behind them, most of the p99 of `trigger: change` (bench/trigger.py).

:func:`collect_between_events` turns the automatic collector off and collects on a clock from
a task of the event loop instead: the young generations every ``young_every_s`` (what was made
since the last one and is still alive, a few hundred to a few thousand objects, well under a
millisecond; survivors go straight to the oldest generation), everything every
``full_every_s``. At that point no event is half-processed and what a burst allocated is mostly
freed already. Cyclic garbage waits at most ``full_every_s``; everything else is freed by
reference counting as always. While the loop is blocked nothing is collected, as nothing else
runs either; the automatic collector is back when the task ends.
"""

from __future__ import annotations

import asyncio
import gc

__all__ = ["collect_between_events"]

YOUNG_EVERY_S = 0.02
FULL_EVERY_S = 60.0


async def collect_between_events(
    young_every_s: float = YOUNG_EVERY_S, full_every_s: float = FULL_EVERY_S
) -> None:
    """Collect from this task until cancelled; the automatic collector is off meanwhile."""
    loop = asyncio.get_running_loop()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        full_at = loop.time() + full_every_s
        while True:
            await asyncio.sleep(young_every_s)
            if loop.time() >= full_at:
                gc.collect()
                full_at = loop.time() + full_every_s
            else:
                gc.collect(1)
    finally:
        if was_enabled:
            gc.enable()
