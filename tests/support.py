"""Helpers shared by tests: free loopback ports, bounded waiting, child processes that say when
they are ready. Nothing here waits forever."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

LOOPBACK = "127.0.0.1"
TESTS = str(Path(__file__).resolve().parent)  # on a child's path: it imports the helpers here


# Ports tests listen on come from below the kernel's ephemeral range. A port bind(0) hands out
# is an ephemeral one: between the test asking and its server binding it, the kernel could give
# it to another socket's outgoing connection (a PostgreSQL or OPC UA client of a parallel test),
# and the server failed with "address already in use" (seen once in three full runs). Each
# pytest-xdist worker takes its own slice, so two workers never pick the same port; within a
# process, a port is handed out once per pass through the slice.
_POOL = (20000, 32000)
_SLICES = 8
_cursor: dict[str, int] = {}


def _slice() -> tuple[int, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) % _SLICES if worker[2:].isdigit() else 0
    width = (_POOL[1] - _POOL[0]) // _SLICES
    return _POOL[0] + index * width, _POOL[0] + (index + 1) * width


def free_port() -> int:
    """A TCP port on 127.0.0.1, free now, that no outgoing connection will take (see above)."""
    low, high = _slice()
    key = f"{low}"
    # A child process of a test starts elsewhere in the slice than its parent.
    port = _cursor.get(key, low + (os.getpid() * 7919) % (high - low))
    for _ in range(high - low):
        port = low if port + 1 >= high else port + 1
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
        _cursor[key] = port
        return port
    raise RuntimeError(f"no free port on {LOOPBACK} in {low}-{high - 1}")


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,  # noqa: ASYNC109 - a polling deadline, not a cancel scope
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll ``condition`` until true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def spawn_ready(
    script: Path, *args: str, stderr: int | IO[bytes] | None = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """``python script args`` (with tests/ on its path), once it printed "ready" (30 s)."""
    path = os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), *args, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"ready", line
    except BaseException:
        # The test fails here, before it could stop the child: stop it now, or it goes on
        # working (a slow start on a loaded machine left one producing for many minutes).
        proc.kill()
        await proc.wait()
        raise
    return proc
