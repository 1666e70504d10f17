"""Hand memory the C allocator keeps after it was freed back to the operating system.

glibc's malloc keeps freed memory for reuse: the top of each arena goes back to the system
once enough is free there, nothing below a block still in use does. A gateway frees in bursts
that no steady state repeats (an MES outage's backlog drained, a reconnect's browse, a reload),
and its threads (the store writer, the model runs, the API) each allocate from an arena of
their own. What such a burst leaves behind stays resident: a 1 h soak (bench/soak.py, docs/soak.md)
rose 20 MB/h in steps at each outage while Python's own heap stayed flat; ``malloc_trim(0)``
on that gateway gave back 27-30 MB of it at once.

:func:`release_native_memory` calls ``malloc_trim(0)`` on a clock, off the event loop (it takes
each arena's lock in turn, a few milliseconds). Other C libraries (musl) have no such call and
return memory their own way: then nothing runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass

import structlog

__all__ = ["Trim", "TrimCounts", "glibc_trim", "release_native_memory", "resident_bytes"]

log = structlog.get_logger(__name__)

# Releases at least this much are logged at info: the allocator held a burst's memory.
NOTABLE_BYTES = 16 * 1024 * 1024

Trim = Callable[[int], int]


def glibc_trim() -> Trim | None:
    """glibc's ``malloc_trim``, or None where the C library is another one."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def resident_bytes() -> int | None:
    """This process's resident set size, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@dataclass(slots=True)
class TrimCounts:
    runs: int = 0
    released_bytes: int = 0


async def release_native_memory(
    every_s: float, trim: Trim, counts: TrimCounts | None = None
) -> None:
    """Trim every ``every_s`` until cancelled; ``counts`` (if given) adds up what came back."""
    counts = counts if counts is not None else TrimCounts()
    while True:
        await asyncio.sleep(every_s)
        before = resident_bytes()
        await asyncio.to_thread(trim, 0)
        after = resident_bytes()
        counts.runs += 1
        released = max(0, before - after) if before is not None and after is not None else 0
        counts.released_bytes += released
        if released >= NOTABLE_BYTES:
            log.info(
                "native_memory_released",
                released_mb=round(released / 2**20, 1),
                resident_mb=round((after or 0) / 2**20, 1),
            )
