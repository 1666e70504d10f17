"""Serves the FastAPI app with uvicorn inside the gateway's own event loop.

We bind the socket ourselves (a busy port becomes a clear error, where uvicorn would call
``sys.exit``) and leave signal handling to the gateway, which stops everything in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import structlog
import uvicorn
from fastapi import FastAPI

from bridge.errors import ConnectorError

__all__ = ["ApiServer"]

log = structlog.get_logger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.host, self.port = host, port
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConnectorError(
                f"REST API cannot listen on {self.host}:{self.port}: {exc.strerror} "
                "(is another bridge running? change gateway.api.port)"
            ) from exc
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="api")
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                    raise ConnectorError("REST API stopped during start-up")
                await asyncio.sleep(0.02)
        log.info("api_listening", url=self.url, docs=f"{self.url}/docs")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            async with asyncio.timeout(5):
                await self._task
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
