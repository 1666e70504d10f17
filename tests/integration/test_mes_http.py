"""The MES connector's own HTTP/1.1 client against a real TCP server on loopback that answers
with scripted raw replies (keep-alive, close, chunked, redirects, slow and silent servers)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from support import free_port

from bridge.connectors.mes.http import (
    ConnectError,
    LeanClient,
    ReadTimeout,
    RemoteProtocolError,
)

JSON = [(b"Content-Type", b"application/json")]
OK = b"HTTP/1.1 204 No Content\r\n\r\n"


@dataclass
class Seen:
    head: bytes
    body: bytes


@dataclass
class RawServer:
    """Reads each request (head and Content-Length body) and writes ``reply(n)`` for the
    n-th one (counted from 0 over all connections); None: say nothing, keep the socket."""

    reply: Callable[[int], bytes | None]
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    port: int = 0
    close_after: set[int] = field(default_factory=set)  # hang up silently after these
    quit: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                n = len(self.requests)
                self.requests.append(Seen(head, body))
                answer = self.reply(n)
                if answer is None:
                    await self.quit.wait()
                    return
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower() or n in self.close_after:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Callable[[int], bytes | None]], RawServer]]:
    servers: list[tuple[RawServer, asyncio.Server]] = []

    async def start(reply: Callable[[int], bytes | None]) -> RawServer:
        raw = RawServer(reply, port=free_port())
        servers.append((raw, await asyncio.start_server(raw.handle, "127.0.0.1", raw.port)))
        return raw

    yield start
    for raw, server in servers:
        raw.quit.set()  # handlers parked on a silent reply end
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_posts_reuse_one_kept_alive_connection(serve: Callable[..., RawServer]) -> None:
    raw = await serve(lambda n: OK)
    client = LeanClient(
        f"http://gw:s%40cret@127.0.0.1:{raw.port}/api/v1/events?site=7",
        headers={"X-Plant": "north"},
        timeout_s=5,
    )
    try:
        for i in range(5):
            reply = await client.post(b'{"i":%d}' % i, [*JSON, (b"Idempotency-Key", b"k%d" % i)])
            assert reply.status_code == 204 and reply.is_success
    finally:
        await client.aclose()
    assert raw.connections == 1
    assert [r.body for r in raw.requests] == [b'{"i":%d}' % i for i in range(5)]
    head = raw.requests[0].head.decode().lower()
    assert head.startswith("post /api/v1/events?site=7 http/1.1\r\n")
    assert f"host: 127.0.0.1:{raw.port}\r\n" in head
    assert "x-plant: north\r\n" in head
    assert "idempotency-key: k0\r\n" in head
    # The URL's user info is sent as HTTP Basic (percent-decoded), never in the request line.
    basic = base64.b64encode(b"gw:s@cret").decode().lower()
    assert f"authorization: basic {basic}\r\n" in head


async def test_a_reply_with_connection_close_is_not_reused(
    serve: Callable[..., RawServer],
) -> None:
    raw = await serve(
        lambda n: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    )
    client = LeanClient(f"http://127.0.0.1:{raw.port}/", timeout_s=5)
    try:
        for _ in range(3):
            reply = await client.post(b"{}", JSON)
            assert (reply.status_code, reply.text) == (200, "ok")
    finally:
        await client.aclose()
    assert raw.connections == 3


async def test_chunked_reply_headers_in_any_case_and_redirects_not_followed(
    serve: Callable[..., RawServer],
) -> None:
    replies = [
        b"HTTP/1.1 503 Busy\r\nRETRY-AFTER: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/x\r\n"
        b"Content-Length: 0\r\n\r\n",
    ]
    raw = await serve(lambda n: replies[n])
    client = LeanClient(f"http://127.0.0.1:{raw.port}/events", timeout_s=5)
    try:
        busy = await client.post(b"{}", JSON)
        assert (busy.status_code, busy.content, busy.header("Retry-After")) == (
            503,
            b"hello world",
            "7",
        )
        moved = await client.post(b"{}", JSON)
        assert moved.status_code == 307 and not moved.is_success
    finally:
        await client.aclose()
    assert len(raw.requests) == 2  # nothing sent to the Location


async def test_silent_server_is_a_read_timeout_and_the_connection_is_dropped(
    serve: Callable[..., RawServer],
) -> None:
    raw = await serve(lambda n: None if n == 0 else OK)
    client = LeanClient(f"http://127.0.0.1:{raw.port}/", timeout_s=0.3)
    try:
        with pytest.raises(ReadTimeout):
            await client.post(b"{}", JSON)
        assert (await client.post(b"{}", JSON)).status_code == 204
    finally:
        await client.aclose()
    assert raw.connections == 2  # the timed-out connection was not used again


async def test_connection_the_server_closed_while_idle_is_not_used(
    serve: Callable[..., RawServer],
) -> None:
    replies = [OK, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil EOF", OK]
    raw = await serve(lambda n: replies[n])
    raw.close_after = {0}  # a keep-alive timeout: the server hangs up without a word
    client = LeanClient(f"http://127.0.0.1:{raw.port}/", timeout_s=5)
    try:
        assert (await client.post(b"{}", JSON)).status_code == 204
        await asyncio.sleep(0.2)  # the hang-up reaches the client
        reply = await client.post(b"{}", JSON)  # a new connection, not an error
        assert (reply.status_code, reply.text) == (200, "until EOF")  # no length: read to EOF
        assert (await client.post(b"{}", JSON)).status_code == 204
    finally:
        await client.aclose()
    assert raw.connections == 3


async def test_refused_connection_and_the_connection_bound(serve: Callable[..., RawServer]) -> None:
    refused = LeanClient(f"http://127.0.0.1:{free_port()}/", timeout_s=2)
    with pytest.raises(ConnectError):
        await refused.post(b"{}", JSON)
    await refused.aclose()

    raw = await serve(lambda n: OK)
    client = LeanClient(f"http://127.0.0.1:{raw.port}/", timeout_s=5, max_connections=2)
    try:
        replies = await asyncio.gather(*(client.post(b"{}", JSON) for _ in range(10)))
    finally:
        await client.aclose()
    assert [r.status_code for r in replies] == [204] * 10
    assert raw.connections == 2  # the others waited for a free connection


async def test_close_without_reply_on_a_new_connection() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    port = free_port()
    server = await asyncio.start_server(hang_up, "127.0.0.1", port)
    client = LeanClient(f"http://127.0.0.1:{port}/", timeout_s=5)
    try:
        with pytest.raises(RemoteProtocolError) as caught:
            await client.post(b"{}", JSON)
        # Chained like a reset: the TLS hints of bridge.client_tls recognise it.
        assert isinstance(caught.value.__cause__, ConnectionResetError)
    finally:
        await client.aclose()
        server.close()


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        LeanClient("ftp://127.0.0.1/", timeout_s=1)
