"""A lean HTTP/1.1 client for one URL: POSTs on a small pool of kept-alive connections.

Why not httpx: one POST per event is the MES's own contract, and httpx spends ~2 ms of CPU on
each (URL and header objects, cookies, hooks, the pool's state machine), a whole core at
500 events/s. This client only does what the destination needs: POST to the URL the mapping
gives, its headers prepared once (Host, Basic auth from the URL's user info, the mapping's
headers), the response parsed by h11 (the parser httpx uses too): ~0.4 ms per POST.

Same semantics as the httpx client it replaces: TLS with the mapping's context (or the
system's CA bundle), SNI and host name checked; ``timeout_s`` bounds the connect, the wait for
a free connection, and the request and its reply; redirects are not followed (a 3xx is the
answer); no proxy variables; TCP_NODELAY. Errors are ``TransportError`` subclasses named as
httpx names them (``ConnectError``, ``ReadTimeout``, ...), their cause chained (the TLS hints
of ``bridge.client_tls`` walk it). A connection is reused only after a complete exchange the
server did not ask to close; any failure, timeout or cancellation closes it.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import certifi
import h11

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "LeanClient",
    "PoolTimeout",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Response",
    "TransportError",
    "WriteError",
    "WriteTimeout",
]

_READ_CHUNK = 65536
_USER_AGENT = "bridge-mes"


class TransportError(Exception):
    """The request may not have reached the MES, or its reply was lost: retryable."""


class ConnectError(TransportError):
    pass


class ConnectTimeout(TransportError):
    pass


class PoolTimeout(TransportError):
    pass


class ReadError(TransportError):
    pass


class ReadTimeout(TransportError):
    pass


class WriteError(TransportError):
    pass


class WriteTimeout(TransportError):
    pass


class RemoteProtocolError(TransportError):
    pass


@dataclass(frozen=True, slots=True)
class Response:
    status_code: int
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    content: bytes

    def header(self, name: str) -> str | None:
        """A header's value by its name, in any case."""
        return self.headers.get(name.lower())

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection
    replies: int = 0  # complete exchanges on it so far

    def reusable(self) -> bool:
        return (
            self.h11.our_state is h11.IDLE
            and not self.reader.at_eof()
            and not self.writer.transport.is_closing()
        )

    def close(self) -> None:
        self.writer.transport.abort()  # no goodbye: its state is unknown or it is done


class LeanClient:
    """``await client.post(body, extra_headers)`` to the URL given at construction."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float,
        tls: ssl.SSLContext | None = None,
        max_connections: int = 8,
    ) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the URL must be http:// or https:// with a host")
        self._host = parts.hostname
        default_port = 443 if scheme == "https" else 80
        self._port = parts.port or default_port
        self._ssl: ssl.SSLContext | None = None
        if scheme == "https":
            self._ssl = tls or ssl.create_default_context(cafile=certifi.where())
        host = f"[{self._host}]" if ":" in self._host else self._host
        authority = host if self._port == default_port else f"{host}:{self._port}"
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fixed: list[tuple[str, str]] = [("Host", authority), ("User-Agent", _USER_AGENT)]
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            fixed.append(("Authorization", "Basic " + base64.b64encode(pair.encode()).decode()))
        given = {k.lower() for k in (headers or {})}
        fixed = [(k, v) for k, v in fixed if k.lower() not in given]
        # Encoded once: h11 takes bytes without re-encoding them.
        self._headers = [(k.encode(), v.encode()) for k, v in [*fixed, *(headers or {}).items()]]
        self._timeout_s = timeout_s
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max(1, max_connections))
        self._closed = False

    async def post(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> Response:
        """POST ``body`` with the client's headers plus ``headers``; the complete reply."""
        if self._closed:
            raise RuntimeError("the client is closed")
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolTimeout(f"no free connection within {self._timeout_s} s") from None
        try:
            conn = self._take()
            if conn is None:
                conn = await self._connect()
            try:
                response = await self._exchange(conn, body, headers)
            except BaseException:
                conn.close()
                raise
            if conn.reusable() and not self._closed:
                self._idle.append(conn)
            else:
                conn.close()
            return response
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()  # the most recent: the least likely closed by the server
            if conn.reusable():
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self._timeout_s):
                reader, writer = await asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                    limit=_READ_CHUNK,
                )
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {self._timeout_s} s") from None
        except OSError as exc:  # refused, unreachable, TLS (ssl.SSLError is an OSError)
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Small requests on kept-alive connections: never hold a segment back (Nagle).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(reader, writer, h11.Connection(h11.CLIENT))

    async def _exchange(
        self, conn: _Connection, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> Response:
        h = conn.h11
        request = h11.Request(
            method=b"POST",
            target=self._target,
            headers=[
                *self._headers,
                *headers,
                (b"Content-Length", str(len(body)).encode()),
            ],
        )
        phase = "write"
        try:
            async with asyncio.timeout(self._timeout_s):
                data = h.send(request) or b""
                data += (h.send(h11.Data(data=body)) or b"") + (h.send(h11.EndOfMessage()) or b"")
                try:
                    conn.writer.write(data)
                    await conn.writer.drain()
                except OSError as exc:
                    raise WriteError(str(exc) or type(exc).__name__) from exc
                phase = "read"
                return await self._read(conn)
        except TimeoutError:
            error = ReadTimeout if phase == "read" else WriteTimeout
            raise error(f"no reply within {self._timeout_s} s") from None
        except h11.ProtocolError as exc:
            raise RemoteProtocolError(str(exc)) from exc

    @staticmethod
    async def _read(conn: _Connection) -> Response:
        h = conn.h11
        status = 0
        headers: dict[str, str] = {}
        chunks: list[bytes] = []
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await conn.reader.read(_READ_CHUNK)
                except OSError as exc:
                    raise ReadError(str(exc) or type(exc).__name__) from exc
                if not data and h.their_state is h11.SEND_RESPONSE:
                    error = RemoteProtocolError("the server closed the connection without a reply")
                    if conn.replies == 0:
                        # On a new connection, like a reset: a TLS 1.3 server that wants a client
                        # certificate and got none closes it so (``bridge.client_tls`` hints).
                        raise error from ConnectionResetError("closed before the first reply")
                    raise error
                h.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                conn.replies += 1
                if h.our_state is h11.DONE and h.their_state is h11.DONE:
                    h.start_next_cycle()
                return Response(status, headers, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise RemoteProtocolError("the server closed the connection mid-reply")
            # h11.InformationalResponse (100 Continue, ...): wait for the real one.
