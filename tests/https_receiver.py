"""An HTTPS receiver on 127.0.0.1 for TLS client tests: uvicorn with a certificate from a test
CA, optionally requiring a client certificate signed by that CA (mutual TLS). Records every
POST. Started and stopped by the test (``async with``), bounded in time both ways."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["HttpsReceiver", "Received"]

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Received:
    path: str
    body: bytes
    idempotency_key: str | None


class _Embedded(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns the signals


@dataclass
class HttpsReceiver:
    certificate: Path
    key: Path
    client_ca: Path | None = None  # set: mutual TLS, a client certificate is required
    calls: list[Received] = field(default_factory=list)
    port: int = 0
    _server: _Embedded | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def _record(self, request: Request) -> JSONResponse:
        body = await request.body()
        self.calls.append(Received(request.url.path, body, request.headers.get("idempotency-key")))
        return JSONResponse({"status": "accepted"})

    async def __aenter__(self) -> HttpsReceiver:
        app = Starlette(routes=[Route("/{path:path}", self._record, methods=["POST"])])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_level="warning",
            ssl_certfile=str(self.certificate),
            ssl_keyfile=str(self.key),
            ssl_ca_certs=str(self.client_ca) if self.client_ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if self.client_ca else ssl.CERT_NONE,
        )
        self._server = _Embedded(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(_START_TIMEOUT_S):
            while not self._server.started:
                if self._task.done():
                    await self._task  # raises what went wrong
                await asyncio.sleep(0.01)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), _STOP_TIMEOUT_S)
        except TimeoutError:
            server.force_exit = True
            await asyncio.wait_for(task, _STOP_TIMEOUT_S)
