"""A fault-injection TCP proxy for tests: sits between a client and a real server on 127.0.0.1.

Modes (switchable at run time with :meth:`FaultProxy.set_mode`, applied to live and new
connections alike):

- ``PASS``      forward bytes both ways unchanged;
- ``LATENCY``   forward, delaying every chunk by ``latency_s``;
- ``BLACKHOLE`` accept and read, never forward (the link looks alive but nothing arrives);
- ``DEAF``      forward client->server, swallow server->client: the server gets every request
                and its answers are lost (a link that fails one way; a request sent just as
                the link fails surely reaches the server, whatever the machine's load);
- ``RST``       reset every connection (SO_LINGER 0 -> RST instead of FIN), new ones at once;
- ``GARBAGE``   replace every server->client chunk by random bytes of the same length;
- ``TRUNCATE``  forward only the first half of every server->client chunk.

Faults are applied to the server->client direction because that is what a client under test
parses; client->server bytes are forwarded (or swallowed in BLACKHOLE). ``stop()`` closes the
listener and every connection and awaits every task, so a test leaves nothing behind.

Usage::

    proxy = FaultProxy("127.0.0.1", server_port)
    await proxy.start()          # proxy.port is the port clients connect to
    proxy.set_mode(Mode.BLACKHOLE)
    ...
    await proxy.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import socket
import struct

from support import LOOPBACK, free_port

_CHUNK = 65536


class Mode(enum.Enum):
    PASS = "pass"
    LATENCY = "latency"
    BLACKHOLE = "blackhole"
    DEAF = "deaf"
    RST = "rst"
    GARBAGE = "garbage"
    TRUNCATE = "truncate"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends RST, the peer sees ECONNRESET, not a clean EOF."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One proxied client connection: two pumps (client->server, server->client)."""

    def __init__(self, proxy: FaultProxy, client_w: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client_w = client_w
        self.server_w: asyncio.StreamWriter | None = None

    def reset(self) -> None:
        _reset(self.client_w)
        if self.server_w is not None:
            _reset(self.server_w)

    async def pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, downstream: bool
    ) -> None:
        proxy = self.proxy
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                mode = proxy.mode
                proxy.bytes_seen += len(data)
                if mode is Mode.BLACKHOLE or (downstream and mode is Mode.DEAF):
                    continue  # swallowed: the peer waits for an answer that never comes
                if mode is Mode.RST:
                    self.reset()
                    return
                if mode is Mode.LATENCY:
                    await asyncio.sleep(proxy.latency_s)
                if downstream and mode is Mode.GARBAGE:
                    data = os.urandom(len(data))
                elif downstream and mode is Mode.TRUNCATE:
                    data = data[: max(1, len(data) // 2)]
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # half-close is not modelled: one side ending ends the link
            if proxy.mode is Mode.RST:
                writer.transport.abort()
            else:
                writer.close()


class FaultProxy:
    """An asyncio TCP proxy on 127.0.0.1 in front of ``target_host:target_port``."""

    def __init__(
        self, target_host: str, target_port: int, *, port: int | None = None, latency_s: float = 0.2
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = port if port is not None else free_port()
        self.latency_s = latency_s
        self.mode = Mode.PASS
        self.connections_accepted = 0
        self.bytes_seen = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url_host_port(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def active_connections(self) -> int:
        return len(self._links)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, self.port)

    def set_mode(self, mode: Mode, *, latency_s: float | None = None) -> None:
        """Switch the fault; RST also resets every open connection at once."""
        self.mode = mode
        if latency_s is not None:
            self.latency_s = latency_s
        if mode is Mode.RST:
            self.reset_all()

    def reset_all(self) -> None:
        """RST every open connection now (the listener stays up)."""
        for link in list(self._links):
            link.reset()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset_all()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(client_r, client_w))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        link = _Link(self, client_w)
        self._links.add(link)
        try:
            if self.mode is Mode.RST:
                link.reset()
                return
            if self.mode is Mode.BLACKHOLE:
                # accept, read and drop: never even connect upstream
                while await client_r.read(_CHUNK):
                    pass
                return
            try:
                server_r, server_w = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port), 5
                )
            except (TimeoutError, OSError):
                _reset(client_w)  # upstream down: the client sees what a dead server looks like
                return
            link.server_w = server_w
            up = asyncio.ensure_future(link.pump(client_r, server_w, downstream=False))
            down = asyncio.ensure_future(link.pump(server_r, client_w, downstream=True))
            try:
                await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (up, down):
                    t.cancel()
                await asyncio.gather(up, down, return_exceptions=True)
                server_w.close()
                client_w.close()
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.discard(link)
            if self.mode is Mode.RST:
                _reset(client_w)
            else:
                client_w.close()
