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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


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
