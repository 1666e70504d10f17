"""bridge.runtime.memory against the real C library: memory freed below a block still in use
stays resident until ``malloc_trim`` hands it back; the periodic task trims and counts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest
from support import wait_until

from bridge.runtime.memory import TrimCounts, glibc_trim, release_native_memory, resident_bytes

pytestmark = pytest.mark.skipif(glibc_trim() is None, reason="not glibc: no malloc_trim")

# In a process of its own: 160 MB in 4 KiB blocks (below the mmap threshold: the heap), all
# freed but the last, which pins the top of the heap so free() cannot give anything back.
FRAGMENT = textwrap.dedent(
    """
    import ctypes, json
    from bridge.runtime.memory import glibc_trim, resident_bytes
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(4096) for _ in range(40_000)]
    for b in blocks:
        ctypes.memset(b, 1, 4096)
    used = resident_bytes()
    for b in blocks[:-1]:
        libc.free(b)
    freed = resident_bytes()
    glibc_trim()(0)
    print(json.dumps({"used": used, "freed": freed, "trimmed": resident_bytes()}))
    """
)


def test_trim_gives_back_what_free_could_not() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENT], capture_output=True, text=True, timeout=60, check=True
    )
    mb = {k: v / 2**20 for k, v in json.loads(out.stdout).items()}
    assert mb["freed"] > mb["used"] - 40, mb  # free() alone kept most of the 160 MB
    assert mb["trimmed"] < mb["freed"] - 100, mb  # the trim gave it back


def test_resident_bytes_reads_this_process() -> None:
    rss = resident_bytes()
    assert rss is not None and 10 * 2**20 < rss < 64 * 2**30


async def test_the_task_trims_on_its_clock_until_cancelled() -> None:
    trim = glibc_trim()
    assert trim is not None
    counts = TrimCounts()
    task = asyncio.create_task(release_native_memory(0.05, trim, counts))
    await wait_until(lambda: counts.runs >= 3, 10, what="three trims")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert counts.runs >= 3
    assert counts.released_bytes >= 0
