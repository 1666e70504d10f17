"""The API's own threads for database queries.

The data path (store writer, relays, inference) runs its blocking calls in the event loop's
default executor. API queries used it too: 40 concurrent ``GET /predictions`` over a million
rows delayed a thread call of the data path by 16 s. API queries now run here, on a few
threads of their own, and at most ``threads + max_waiting`` at a time: beyond that the API
answers 503 at once instead of queueing without end.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import HTTPException, status

__all__ = ["QueryRunner"]

T = TypeVar("T")


class QueryRunner:
    def __init__(self, threads: int, max_waiting: int) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="api-query")
        self.limit = threads + max_waiting
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _done(self, _: Future[Any]) -> None:
        with self._lock:
            self._in_flight -= 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._in_flight >= self.limit:
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                    f"the API is already running {self.limit} database queries "
                    "(gateway.api.query_threads and what waits for them); retry shortly",
                    headers={"Retry-After": "1"},
                )
            self._in_flight += 1
        ctx = contextvars.copy_context()
        try:
            future = self._pool.submit(ctx.run, functools.partial(fn, *args))
        except RuntimeError:  # shut down
            self._done(Future())
            raise
        # Counted until the thread is really free, even when the request is cancelled.
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
