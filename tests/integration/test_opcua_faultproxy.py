"""The fault-injection proxy itself, against a plain echo server: each mode does what it says."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from faultproxy import FaultProxy, Mode
from support import LOOPBACK, free_port, wait_until


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    port = free_port()
    server = await asyncio.start_server(_echo, LOOPBACK, port)
    p = FaultProxy(LOOPBACK, port, latency_s=0.3)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()
        server.close()
        await server.wait_closed()


async def _roundtrip(proxy: FaultProxy, payload: bytes, within: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(within):
            return await reader.readexactly(len(payload))
    finally:
        writer.close()


async def test_pass_through_and_latency(proxy: FaultProxy) -> None:
    assert await _roundtrip(proxy, b"hello") == b"hello"
    proxy.set_mode(Mode.LATENCY)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await _roundtrip(proxy, b"slow") == b"slow"
    # both directions are delayed: at least one full latency is unavoidable
    assert loop.time() - t0 >= 0.3


async def test_blackhole_accepts_but_never_answers(proxy: FaultProxy) -> None:
    proxy.set_mode(Mode.BLACKHOLE)
    with pytest.raises(TimeoutError):
        await _roundtrip(proxy, b"anyone?", within=0.5)
    assert proxy.connections_accepted == 1
    proxy.set_mode(Mode.PASS)
    assert await _roundtrip(proxy, b"back") == b"back"


async def test_rst_resets_live_and_new_connections(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port)
    writer.write(b"x")
    await reader.readexactly(1)
    proxy.set_mode(Mode.RST)
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        async with asyncio.timeout(2):
            await reader.readexactly(1)
    writer.close()
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await _roundtrip(proxy, b"new")
    await wait_until(lambda: proxy.active_connections == 0, 2, what="links dropped")


async def test_garbage_and_truncate_change_what_the_client_reads(proxy: FaultProxy) -> None:
    payload = b"A" * 64
    proxy.set_mode(Mode.GARBAGE)
    got = await _roundtrip(proxy, payload)
    assert len(got) == len(payload) and got != payload
    proxy.set_mode(Mode.TRUNCATE)
    with pytest.raises((TimeoutError, asyncio.IncompleteReadError)):
        await _roundtrip(proxy, payload, within=0.5)
