"""``OpcUaWorkerSource``: an OPC UA source whose sessions run in child processes (``workers: N``).

Why: one interpreter decodes some 25-40k notifications/s (asyncua decodes in pure Python);
on 2+ cores the sessions of a large plant can decode side by side in children. Each child
(a fresh ``python -m bridge.connectors.opcua._worker``: a spawn, no fork of a running event loop and
its threads; not ``multiprocessing.Process``, whose spawn re-runs the gateway's ``__main__``
in every child) runs an ordinary
``OpcUaSource`` over its contiguous share of the tags and its share of the sessions: connect,
subscribe, decode, convert. It sends the samples as packed column frames (``_packed``) over a
socket pair framed as a ``multiprocessing.connection.Connection``; the gateway unpacks them
into TagSample batches for the tag table.

Pipe, not shared memory: measured with ``python -m bench.opcua_sessions --transport`` on the
2-core box (CPU time, two runs), a 5,000-sample frame (190 kB) costs 0.15-0.16 ms of CPU to
cross the pipe (send and receive) against 0.013-0.019 ms to write and read it through a
shared-memory segment, while packing costs 2.7-3.3 ms and unpacking 4.2-4.8 ms. What a
shared-memory ring would save is ~2 % of the hand-off, and a ring needs its own wake-up (a
pipe or futex anyway), framing, and clean-up of the segment when a child dies. A pipe gives
framing, back-pressure (a full pipe blocks the child, whose inbox then coalesces) and
end-of-file when either side dies.

Ownership: the child never reconnects as a whole. Its ``OpcUaSource`` reconnects a lost
session while others are up (as in-process); when all of a child's sessions are lost, or it
cannot connect, it reports the reason (``E``) and exits, this source raises ``ConnectorError``
and the runtime's supervisor (the one retry loop) closes every child and connects again with
new ones. A child dies with the gateway: it exits at end-of-file on its pipe (the gateway's
end closes when the gateway dies) and asks the kernel for SIGKILL when its parent dies.

Messages (first byte): ``C`` connected, ``D`` data frame, ``S`` status (pickled health),
``E`` fatal error (utf-8 reason); to the child: ``Q`` quit (close the sessions, exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import structlog

from bridge.connectors.opcua._packed import pack, unpack
from bridge.connectors.opcua.config import OpcUaSourceSettings, ReconnectSettings
from bridge.connectors.opcua.source import OpcUaSource, endpoint_address, shares
from bridge.errors import ConnectorError, NotConnected
from bridge.logging import configure_logging
from bridge.types import SourceTag, TagSample

__all__ = ["OpcUaWorkerSource"]

log = structlog.get_logger(__name__)

# Spawning imports asyncua and the connector in the child (~1-2 s on a loaded small box).
START_DEADLINE_S = 25.0
STOP_DEADLINE_S = 5.0
STATUS_EVERY_S = 1.0
# Frames waiting for the gateway per worker; beyond it the reader thread stops reading, the
# pipe fills and the child's send blocks (its inbox then coalesces per item).
QUEUE_FRAMES = 64
_PR_SET_PDEATHSIG = 1


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes]
    conn: Connection
    tags: tuple[str, ...]
    reader: threading.Thread | None = None
    status: dict[str, Any] = field(default_factory=dict)


class OpcUaWorkerSource:
    """The Source protocol over ``workers`` children; health is the sum of theirs."""

    def __init__(self, name: str, settings: OpcUaSourceSettings, tags: Sequence[SourceTag]) -> None:
        self.name = name
        self._settings = settings
        self._tags = tuple(tags)
        sessions = settings.session_count(len(tags))
        workers = max(1, min(settings.workers, sessions))
        per_worker = [len(r) for r in shares(sessions, workers)]
        # Tag shares in proportion to the sessions, so every session holds about as many.
        self._plan: list[tuple[range, int]] = []
        start = 0
        done_sessions = 0
        for k in per_worker:
            done_sessions += k
            end = len(tags) * done_sessions // sessions
            self._plan.append((range(start, end), k))
            start = end
        self._children: list[_Child] = []
        self._queue: asyncio.Queue[tuple[int, bytes | None]] | None = None
        self._open = False
        self._log = log.bind(source=name, endpoint=settings.endpoint, workers=workers)

    @property
    def workers(self) -> int:
        return len(self._plan)

    @property
    def pids(self) -> list[int]:
        return [c.process.pid for c in self._children]

    @property
    def connected(self) -> bool:
        return self._open

    @property
    def reconnect(self) -> ReconnectSettings:
        return self._settings.reconnect

    @property
    def probe_address(self) -> tuple[str, int] | None:
        return endpoint_address(self._settings.endpoint)

    @property
    def degraded(self) -> str:
        if not self._open:
            return ""
        why = [
            f"worker {c.index}: {c.status['degraded']}"
            for c in self._children
            if c.status.get("degraded")
        ]
        return "; ".join(why)

    @property
    def counters(self) -> Mapping[str, int]:
        total: dict[str, int] = {"workers": len(self._plan)}
        keys = (
            "sessions",
            "sessions_down",
            "session_reconnects",
            "dropped_notifications",
            "backfilled_values",
            "subscriptions_transferred",
            "subscriptions_recreated",
            "republished_notifications",
        )
        for key in keys:
            total[key] = sum(int(c.status.get("counters", {}).get(key, 0)) for c in self._children)
        if not self._open:
            total["sessions_down"] = sum(k for _, k in self._plan)
        return total

    async def connect(self) -> None:
        await self.close()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, bytes | None]] = asyncio.Queue(
            QUEUE_FRAMES * len(self._plan)
        )
        self._queue = queue
        child_settings = self._settings.model_copy(update={"workers": 0})
        for index, (share, sessions) in enumerate(self._plan):
            tags = self._tags[share.start : share.stop]
            start = (
                f"{self.name}/w{index}",
                child_settings.model_copy(update={"sessions": sessions}),
                tags,
                _log_level(),
            )
            process, ours = await asyncio.to_thread(_spawn, pickle.dumps(start))
            child = _Child(index, process, ours, tuple(t.tag for t in tags))
            child.reader = threading.Thread(
                target=_read,
                args=(child, queue, loop),
                name=f"opcua-{self.name}-w{index}",
                daemon=True,
            )
            child.reader.start()
            self._children.append(child)
        try:
            async with asyncio.timeout(START_DEADLINE_S + 2 * self._settings.timeout_s):
                waiting = {c.index for c in self._children}
                early: list[tuple[int, bytes | None]] = []
                while waiting:
                    index, message = await queue.get()
                    kind = message[:1] if message is not None else b""
                    if kind == b"C":
                        waiting.discard(index)
                    elif kind == b"D" or kind == b"S":
                        early.append((index, message))
                    else:
                        raise ConnectorError(self._failure(index, message))
        except TimeoutError as exc:
            await self.close()
            raise ConnectorError(f"{self.name}: workers did not connect in time") from exc
        except ConnectorError as exc:
            await self.close()
            self._log.warning("connect_failed", error=str(exc))
            raise
        for item in early:  # data that overtook a slower child's C: keep it, in order
            queue.put_nowait(item)
        self._open = True
        self._log.info("connected", tags=len(self._tags), pids=self.pids)

    def _failure(self, index: int, message: bytes | None) -> str:
        if message is not None and message[:1] == b"E":
            return message[1:].decode(errors="replace")
        code = self._children[index].process.poll() if index < len(self._children) else None
        return f"{self.name}: worker {index} exited (exit code {code})"

    async def samples(self) -> AsyncIterator[Sequence[TagSample]]:
        queue = self._queue
        if not self._open or queue is None:
            raise NotConnected(f"{self.name}: samples() before connect()")
        children = self._children
        while self._open:
            index, message = await queue.get()
            kind = message[:1] if message is not None else b""
            if kind == b"D":
                assert message is not None
                yield unpack(memoryview(message)[1:], children[index].tags)
            elif kind == b"S":
                assert message is not None
                children[index].status = pickle.loads(message[1:])
            elif not self._open:
                return
            else:
                reason = self._failure(index, message)
                self._log.warning("worker_failed", worker=index, reason=reason)
                raise ConnectorError(reason)

    async def close(self) -> None:
        """Ask every child to close its sessions and exit; kill the ones that do not in time."""
        self._open = False
        children, self._children = self._children, []
        if not children:
            return
        for child in children:
            with contextlib.suppress(OSError, ValueError):
                child.conn.send_bytes(b"Q")
        stopping = asyncio.gather(*(asyncio.to_thread(_stop, c) for c in children))
        queue = self._queue
        while not stopping.done():
            # Nobody reads the frames any more: drain them so no reader thread blocks on a
            # full queue and every one reaches the end-of-file of its pipe.
            while queue is not None and not queue.empty():
                queue.get_nowait()
            await asyncio.wait({stopping}, timeout=0.05)
        await stopping
        self._queue = None
        self._log.info("closed", workers=len(children))


def _spawn(start: bytes) -> tuple[subprocess.Popen[bytes], Connection]:
    """A new interpreter running ``child_main`` on one end of a socket pair; ``start`` (the
    pickled name, settings and tags) is its first message."""
    ours, theirs = socket.socketpair()
    # The child finds the packages where this process found them (editable installs, tests).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge.connectors.opcua._worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
    finally:
        theirs.close()
    conn = Connection(ours.detach())
    conn.send_bytes(start)
    return process, conn


def _stop(child: _Child) -> None:
    """Wait for the child to exit (it closes its sessions first), then kill it for sure."""
    try:
        child.process.wait(STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        log.warning("worker_kill", worker=child.index, pid=child.process.pid)
        child.process.kill()
        child.process.wait(STOP_DEADLINE_S)
    if child.reader is not None:
        child.reader.join(STOP_DEADLINE_S)  # ends at the end-of-file of the dead child's pipe
    child.conn.close()


def _read(
    child: _Child,
    queue: asyncio.Queue[tuple[int, bytes | None]],
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Reader thread: frames from one child into the loop's queue, with back-pressure; None
    once the pipe ends (the child exited or was killed)."""
    while True:
        try:
            message: bytes | None = child.conn.recv_bytes()
        except (EOFError, OSError):
            message = None
        try:
            asyncio.run_coroutine_threadsafe(queue.put((child.index, message)), loop).result()
        except RuntimeError:  # the loop is closed: nobody listens any more
            return
        if message is None:
            return


# --- the child ------------------------------------------------------------------------------


def child_main(fd: int) -> None:
    """Entry point of a worker process: ``fd`` is its end of the socket pair."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the gateway, which asks Q
    conn = Connection(fd)
    try:
        name, settings, tags, level = pickle.loads(conn.recv_bytes())
        # The gateway's level, on stderr (JSON unless a terminal): never on the gateway's stdout.
        configure_logging(level)
        asyncio.run(_child(conn, name, settings, tags))
    except (EOFError, OSError):  # the gateway went away before or while starting us
        pass
    finally:
        conn.close()


def _log_level() -> str:
    return logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()


def _die_with_parent() -> None:
    # Linux: SIGKILL when the parent dies, even by SIGKILL (end-of-file covers the rest).
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent is already gone
        os._exit(1)


async def _child(
    conn: Connection, name: str, settings: OpcUaSourceSettings, tags: Sequence[SourceTag]
) -> None:
    loop = asyncio.get_running_loop()
    quit_ = asyncio.Event()

    def on_readable() -> None:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            message = b"Q"  # the gateway is gone
        if message[:1] == b"Q":
            loop.remove_reader(conn.fileno())
            quit_.set()

    loop.add_reader(conn.fileno(), on_readable)
    source = OpcUaSource(name, settings, tags)
    position = {t.tag: i for i, t in enumerate(tags)}
    try:
        try:
            await source.connect()
        except ConnectorError as exc:
            conn.send_bytes(b"E" + str(exc).encode())
            return
        conn.send_bytes(b"C")
        pump = asyncio.create_task(_pump(conn, source, position))
        stop = asyncio.create_task(quit_.wait())
        await asyncio.wait({pump, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if pump.done():
            error = pump.exception()
            reason = str(error) if error is not None else f"{name}: stream ended"
            with contextlib.suppress(OSError):
                conn.send_bytes(b"E" + reason.encode())
        else:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
    except OSError:  # the pipe broke: the gateway is gone
        pass
    finally:
        await source.close()


async def _pump(conn: Connection, source: OpcUaSource, position: Mapping[str, int]) -> None:
    """Samples out as frames, a status frame every STATUS_EVERY_S."""
    next_status = 0.0
    async for batch in source.samples():
        conn.send_bytes(b"D" + pack(batch, position))
        now = time.monotonic()
        if now >= next_status:
            next_status = now + STATUS_EVERY_S
            status = {"degraded": source.degraded, "counters": dict(source.counters)}
            conn.send_bytes(b"S" + pickle.dumps(status))


if __name__ == "__main__":
    child_main(int(sys.argv[1]))
