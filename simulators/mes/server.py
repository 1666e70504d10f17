"""A small MES that records what the gateway POSTs; tests inspect it and make it fail on demand.

Served by uvicorn inside the caller's event loop, so a test or the demo can start and stop it
without a subprocess. It never installs signal handlers: the program around it owns those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bridge.simulators.service import Service

__all__ = ["MesReceiver", "ReceivedCall", "serve_forever"]

log = structlog.get_logger(__name__)

_STARTUP_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ReceivedCall:
    path: str
    idempotency_key: str | None
    body: Any
    received_at: float
    authorization: str | None = None


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would take over SIGINT/SIGTERM; inside another program that is not its call.
        yield


class MesReceiver(Service):
    """``async with MesReceiver(port=free_port()) as mes: ... mes.calls ...``"""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 8081, log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.calls: list[ReceivedCall] = []
        self.duplicate_count = 0
        self._keys: set[str] = set()
        self._fail_status = 500
        self._fail_remaining: int | None = 0  # None: fail until recover()
        self._retry_after: float | None = None
        self._delay_s = 0.0
        self._garbage = False
        # Poison events: these Idempotency-Keys are refused with this status until accepted
        # (or, with a count, that many times).
        self._poison: dict[str, int] = {}
        self._poison_left: dict[str, int] = {}
        self.poison_answers = 0
        # Poison assets: every event of these assets is answered with this status.
        self._failing_assets: dict[str, int] = {}
        # Flaky MES: every n-th event request (counted from 1) is answered with a status.
        self._flaky: tuple[int, int] | None = None
        self._requests = 0
        self.flaky_answers = 0
        # Event requests being answered right now, and the most seen at once: how many the
        # gateway really keeps in flight (a client-side count would not show a serialised path).
        self.in_flight = 0
        self.max_in_flight = 0
        self._stopping = asyncio.Event()
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._log_file: IO[str] | None = None

    # -- inspection and control ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def events_url(self) -> str:
        return f"{self.url}/api/v1/events"

    @property
    def unique_keys(self) -> set[str]:
        return set(self._keys)

    def fail(
        self, status: int = 500, count: int | None = None, retry_after: float | None = None
    ) -> None:
        """Answer ``status`` to the next ``count`` event requests (all of them if None)."""
        self._fail_status = status
        self._fail_remaining = count
        self._retry_after = retry_after

    def reject_keys(self, keys: Iterable[str], status: int = 422, times: int | None = None) -> None:
        """Refuse the events with these Idempotency-Keys with ``status`` until ``accept_keys``,
        or only the first ``times`` requests of each: a test that accepts later itself races
        the sender's retries."""
        for key in keys:
            self._poison[key] = status
            if times is not None:
                self._poison_left[key] = times

    def accept_keys(self) -> None:
        self._poison.clear()
        self._poison_left.clear()

    def fail_assets(self, assets: Iterable[str], status: int = 500) -> None:
        """Answer ``status`` to every event whose body's ``asset`` is one of ``assets``."""
        for asset in assets:
            self._failing_assets[asset] = status

    def accept_assets(self) -> None:
        self._failing_assets.clear()

    def fail_every(self, n: int, status: int = 500) -> None:
        """Answer ``status`` to every ``n``-th event request (a flaky MES); 0 stops it."""
        self._flaky = (n, status) if n > 0 else None

    def recover(self) -> None:
        self._fail_remaining = 0
        self._retry_after = None

    def answer_garbage(self, on: bool = True) -> None:
        """Answer event requests with 200 and a body that means nothing (nothing recorded)."""
        self._garbage = on

    def set_delay(self, seconds: float) -> None:
        self._delay_s = max(0.0, seconds)

    def stats(self) -> dict[str, int]:
        return {
            "count": len(self.calls),
            "unique": len(self._keys),
            "duplicates": self.duplicate_count,
            "requests": self._requests,
            "failed_on_purpose": self.flaky_answers,
            "max_in_flight": self.max_in_flight,
        }

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        # Binding here (not in uvicorn) turns "port in use" into an OSError for the caller
        # instead of uvicorn's sys.exit inside a task; port 0 picks a free port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted sockets inherit it: without it a kept-alive connection waits ~40 ms per
            # reply (Nagle on the response's second write against the client's delayed ACK).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("a", encoding="utf-8", buffering=1)
        self._stopping.clear()
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="mes-receiver")
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not self._server.started:
            if self._task.done():
                sock.close()
                await self._task  # re-raises why it could not start
                raise RuntimeError("mes receiver stopped during startup")
            if time.monotonic() > deadline:
                await self.stop()
                raise TimeoutError("mes receiver did not start in time")
            await asyncio.sleep(0.01)
        log.info("mes_receiver_started", url=self.url, log_path=str(self.log_path or ""))

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server, self._task = None, None
        self._stopping.set()  # releases requests held by set_delay
        if server is not None and task is not None:
            server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=_STOP_TIMEOUT_S)
            except TimeoutError:
                server.force_exit = True
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            log.info("mes_receiver_stopped", url=self.url, **self.stats())
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- HTTP ------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/events", self._record, methods=["POST"]),
                Route("/api/v1/predictions", self._record, methods=["POST"]),
                Route("/calls", self._calls, methods=["GET"]),
                Route("/stats", self._stats, methods=["GET"]),
                Route("/control/fail", self._control_fail, methods=["POST"]),
                Route("/control/recover", self._control_recover, methods=["POST"]),
                Route("/control/delay", self._control_delay, methods=["POST"]),
            ]
        )

    def _take_failure(self) -> bool:
        if self._fail_remaining is None:
            return True
        if self._fail_remaining > 0:
            self._fail_remaining -= 1
            return True
        return False

    async def _record(self, request: Request) -> Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: Request) -> Response:
        # Read the body first: a slow MES still processes a request whose client gave up, which
        # is exactly the "reply lost" case the idempotency key exists for.
        try:
            raw = await request.body()
        except ClientDisconnect:
            # The gateway went away mid-request (a kill -9 in the crash tests): nothing came.
            return Response(status_code=499)
        if self._delay_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._delay_s):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return JSONResponse({"error": "shutting down"}, status_code=503)
        if self._garbage:
            return PlainTextResponse("OK thanks", status_code=200)
        self._requests += 1
        if self._flaky is not None and self._requests % self._flaky[0] == 0:
            self.flaky_answers += 1
            return JSONResponse({"error": "simulated flaky failure"}, status_code=self._flaky[1])
        if self._take_failure():
            headers = {}
            if self._retry_after is not None:
                headers["Retry-After"] = str(int(self._retry_after))
            return JSONResponse(
                {"error": f"simulated failure {self._fail_status}"},
                status_code=self._fail_status,
                headers=headers,
            )
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": "body is not valid JSON"}, status_code=400)
        auth = request.headers.get("authorization")
        if isinstance(body, list):
            return self._record_batch(request.url.path, body, auth)
        key = request.headers.get("idempotency-key")
        status, answer = self._take(request.url.path, key, body, auth)
        return JSONResponse(answer, status_code=status)

    def _take(
        self, path: str, key: str | None, body: Any, auth: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """One event, as the MES would process it: poison, duplicate or recorded."""
        if key is not None and key in self._poison:
            self.poison_answers += 1
            status = self._poison[key]
            left = self._poison_left.get(key)
            if left is not None:
                if left <= 1:
                    del self._poison[key], self._poison_left[key]
                else:
                    self._poison_left[key] = left - 1
            return status, {"error": "simulated poison event: unprocessable"}
        asset = body.get("asset") if isinstance(body, dict) else None
        if isinstance(asset, str) and asset in self._failing_assets:
            self.poison_answers += 1
            return self._failing_assets[asset], {"error": f"simulated failure of asset {asset}"}
        if key is not None and key in self._keys:
            self.duplicate_count += 1
            return 200, {"status": "duplicate", "key": key}
        call = ReceivedCall(path, key, body, time.time(), auth)
        if key is not None:
            self._keys.add(key)
        self.calls.append(call)
        if self._log_file is not None:
            self._log_file.write(json.dumps(asdict(call), separators=(",", ":")) + "\n")
        return 201, {"status": "recorded", "key": key}

    def _record_batch(self, path: str, items: list[Any], auth: str | None) -> JSONResponse:
        """The batch contract (connectors/mes/README.md): one result per item, deduplicated
        per item by its own key, processed in array order."""
        results = []
        for item in items:
            key = item.get("idempotency_key") if isinstance(item, dict) else None
            if not isinstance(key, str) or "event" not in item:
                results.append(
                    {
                        "idempotency_key": key if isinstance(key, str) else None,
                        "status": 400,
                        "error": "an item is {idempotency_key: string, event: {...}}",
                    }
                )
                continue
            status, answer = self._take(path, key, item["event"], auth)
            results.append(
                {"idempotency_key": key, "status": status, "error": answer.get("error", "")}
            )
        return JSONResponse({"results": results}, status_code=200)

    async def _calls(self, request: Request) -> JSONResponse:
        return JSONResponse([asdict(c) for c in self.calls])

    async def _stats(self, request: Request) -> JSONResponse:
        return JSONResponse(self.stats())

    async def _control_fail(self, request: Request) -> JSONResponse:
        try:
            spec = json.loads(await request.body() or b"{}")
            status = int(spec.get("status", 500))
            count = spec.get("count")
            count = None if count is None else int(count)
            retry_after = spec.get("retry_after")
            retry_after = None if retry_after is None else float(retry_after)
        except (ValueError, TypeError, AttributeError):
            return JSONResponse(
                {"error": 'expected {"status": int, "count": int|null, "retry_after": s|null}'},
                status_code=400,
            )
        if not 400 <= status <= 599:
            return JSONResponse({"error": "status must be 400..599"}, status_code=400)
        self.fail(status, count, retry_after)
        return JSONResponse({"status": status, "count": count})

    async def _control_recover(self, request: Request) -> JSONResponse:
        self.recover()
        return JSONResponse({"status": "recovered"})

    async def _control_delay(self, request: Request) -> JSONResponse:
        try:
            seconds = float(json.loads(await request.body() or b"{}").get("seconds", 0))
        except (ValueError, TypeError, AttributeError):
            return JSONResponse({"error": 'expected {"seconds": float}'}, status_code=400)
        self.set_delay(seconds)
        return JSONResponse({"seconds": self._delay_s})


async def serve_forever(
    host: str = "127.0.0.1",
    port: int = 8081,
    log_path: Path | None = None,
    delay_s: float = 0.0,
    fail_every: int = 0,
    fail_status: int = 500,
) -> None:
    """Run until cancelled (Ctrl-C under ``asyncio.run``), then stop cleanly."""
    receiver = MesReceiver(host, port, log_path)
    receiver.set_delay(delay_s)
    receiver.fail_every(fail_every, fail_status)
    await receiver.start()
    try:
        await asyncio.Event().wait()
    finally:
        await receiver.stop()
