"""MES REST sink: predictions wait in a bounded in-memory queue and are POSTed by a few workers.

``write`` never touches the network, so a slow or failing MES cannot stall inference. Events of
one asset are sent one at a time and in order; different assets go out in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import httpx
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never

from bridge.errors import ConnectorError
from bridge.types import ComponentHealth, Prediction, SinkContext

from .config import MesSinkSettings
from .payload import prediction_to_json
from .retry import backoff_delay, is_retryable_status, parse_retry_after

__all__ = ["MesSink"]

log = structlog.get_logger(__name__)

# A full queue drops on every write; one warning per interval is enough to see it.
_DROP_LOG_INTERVAL_S = 5.0
_BODY_EXCERPT_CHARS = 200


class _RetryableError(Exception):
    """A failure that may pass on its own; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _RejectedError(Exception):
    """The MES refused the event itself: sending it again would fail the same way."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class MesSink:
    """A ``bridge.types.Sink`` that POSTs each prediction as JSON with ``Idempotency-Key: <id>``."""

    def __init__(self, name: str, settings: MesSinkSettings, context: SinkContext) -> None:
        self.name = name
        self._settings = settings
        self._gateway_id = context.gateway_id
        # Per-asset FIFOs keep per-asset order; the counter gives the global age for drop-oldest.
        self._pending: dict[str, deque[tuple[int, Prediction]]] = {}
        self._order = itertools.count()
        self._depth = 0
        # Assets with something pending and nothing in flight, in the order they became ready.
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._ready_set: set[str] = set()
        self._in_flight: dict[str, Prediction] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._accepting = True
        self._closed = False
        self._last_error = ""
        self._counters: dict[str, int] = {
            "sent": 0,
            "retries": 0,
            "rejected": 0,
            "dropped": 0,
            "failed": 0,
        }
        self._drops_unlogged = 0
        self._last_drop_log = -math.inf

    async def start(self) -> None:
        if self._closed:
            raise ConnectorError(f"mes sink {self.name!r} is closed")
        if self._client is not None:
            return
        s = self._settings
        # trust_env=False: where events go is decided by the mapping, not by proxy variables.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(s.timeout_s),
            headers=s.headers,
            limits=httpx.Limits(
                max_connections=s.concurrency, max_keepalive_connections=s.concurrency
            ),
            follow_redirects=False,
            trust_env=False,
        )
        self._workers = [
            asyncio.create_task(self._worker(), name=f"mes-sink-{self.name}-{i}")
            for i in range(s.concurrency)
        ]
        log.info("mes_sink_started", sink=self.name, url=s.url, concurrency=s.concurrency)

    async def write(self, batch: Sequence[Prediction]) -> None:
        if not self._accepting:
            raise ConnectorError(f"mes sink {self.name!r} is closed")
        for prediction in batch:
            self._enqueue(prediction)

    async def close(self) -> None:
        if self._closed:
            return
        self._accepting = False
        self._closed = True
        try:
            if self._workers:
                drain_s = self._settings.drain_timeout_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), timeout=drain_s)
        finally:
            unsent = self._depth + len(self._in_flight)
            await self._stop_workers()
            if self._client is not None:
                await self._client.aclose()
                self._client = None
            fields: dict[str, Any] = {"sink": self.name, "unsent": unsent, **self._counters}
            if unsent:
                log.warning("mes_sink_closed", **fields)
            else:
                log.info("mes_sink_closed", **fields)

    def health(self) -> ComponentHealth:
        counters = {
            **self._counters,
            "queue_depth": self._depth,
            "in_flight": len(self._in_flight),
        }
        if self._closed:
            return ComponentHealth(self.name, "stopped", counters=counters)
        if self._client is None:
            return ComponentHealth(self.name, "starting", counters=counters)
        dead = [t for t in self._workers if t.done()]
        if dead:
            return ComponentHealth(self.name, "down", f"{len(dead)} worker(s) ended", counters)
        if self._last_error:
            return ComponentHealth(self.name, "degraded", f"retrying: {self._last_error}", counters)
        return ComponentHealth(self.name, "ok", counters=counters)

    # -- queue -----------------------------------------------------------------------------

    def _enqueue(self, prediction: Prediction) -> None:
        if self._depth >= self._settings.queue_size:
            self._drop_oldest()
        self._pending.setdefault(prediction.asset, deque()).append((next(self._order), prediction))
        self._depth += 1
        self._idle.clear()
        self._mark_ready(prediction.asset)

    def _mark_ready(self, asset: str) -> None:
        if asset in self._in_flight or asset in self._ready_set:
            return
        self._ready_set.add(asset)
        self._ready.put_nowait(asset)

    def _take(self, asset: str) -> Prediction | None:
        queue = self._pending.get(asset)
        if not queue:
            return None
        _, prediction = queue.popleft()
        if not queue:
            del self._pending[asset]
        self._depth -= 1
        return prediction

    def _drop_oldest(self) -> None:
        asset = min(self._pending, key=lambda a: self._pending[a][0][0])
        self._take(asset)
        self._counters["dropped"] += 1
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            log.warning(
                "mes_queue_full_dropped_oldest",
                sink=self.name,
                dropped=self._drops_unlogged,
                dropped_total=self._counters["dropped"],
                queue_size=self._settings.queue_size,
            )
            self._drops_unlogged = 0
            self._last_drop_log = now

    def _update_idle(self) -> None:
        if self._depth == 0 and not self._in_flight:
            self._idle.set()

    # -- sending ---------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            asset = await self._ready.get()
            self._ready_set.discard(asset)
            prediction = self._take(asset)
            if prediction is None:  # its events were dropped while it waited
                continue
            self._in_flight[asset] = prediction
            try:
                await self._deliver(prediction)
            except Exception:
                # A bug or an unexpected library error: lose this event, keep the worker alive.
                self._counters["failed"] += 1
                log.exception("mes_send_failed", sink=self.name, prediction_id=prediction.id)
            finally:
                del self._in_flight[asset]
                if asset in self._pending:
                    self._mark_ready(asset)
                self._update_idle()

    async def _deliver(self, prediction: Prediction) -> None:
        body = prediction_to_json(prediction, self._gateway_id)
        # The same key on every retry lets the MES discard a repeat whose first reply was lost.
        headers = {"Idempotency-Key": prediction.id}
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_RetryableError),
            wait=self._wait,
            stop=stop_never,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post(body, headers)
        except _RejectedError as exc:
            self._counters["rejected"] += 1
            log.warning(
                "mes_rejected",
                sink=self.name,
                prediction_id=prediction.id,
                asset=prediction.asset,
                status=exc.status,
                body=exc.body,
            )
            return
        self._counters["sent"] += 1
        if self._last_error:
            log.info("mes_recovered", sink=self.name, after_error=self._last_error)
            self._last_error = ""

    async def _post(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        client = self._client
        if client is None:
            raise ConnectorError(f"mes sink {self.name!r} is not started")
        try:
            response = await client.post(self._settings.url, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise _RetryableError(f"{type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return
        status = response.status_code
        if is_retryable_status(status):
            retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            raise _RetryableError(f"HTTP {status}", retry_after)
        raise _RejectedError(status, response.text[:_BODY_EXCERPT_CHARS])

    def _wait(self, state: RetryCallState) -> float:
        s = self._settings
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _RetryableError) and exc.retry_after is not None:
            return min(exc.retry_after, s.max_backoff_s)
        return backoff_delay(state.attempt_number, s.initial_backoff_s, s.max_backoff_s)

    def _before_sleep(self, state: RetryCallState) -> None:
        self._counters["retries"] += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        error = str(exc) if exc is not None else "unknown"
        delay = state.upcoming_sleep
        if not self._last_error:
            # One warning when the MES starts failing; the recovery is logged once too.
            log.warning("mes_send_failing", sink=self.name, error=error, retry_in_s=round(delay, 2))
        else:
            log.debug(
                "mes_send_retry",
                sink=self.name,
                error=error,
                attempt=state.attempt_number,
                retry_in_s=round(delay, 2),
            )
        self._last_error = error

    async def _stop_workers(self) -> None:
        for task in self._workers:
            task.cancel()
        results = await asyncio.gather(*self._workers, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("mes_worker_crashed", sink=self.name, error=repr(result))
        self._workers = []
