"""Keeps one source connected. This is the ONLY reconnect loop for sources: connectors never retry.

Backoff is exponential with jitter (tenacity) and capped; after a session that was up, the first
reconnect waits only a short jittered moment, so a restarted server is picked up in about a second
while a flapping one is not hammered.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from bridge.errors import ConnectorError
from bridge.types import ComponentHealth, HealthState, Source, TagSample

__all__ = ["SourceSupervisor"]

log = structlog.get_logger(__name__)

CONNECT_DEADLINE_S = 30.0
CLOSE_DEADLINE_S = 5.0


@dataclass
class SourceSupervisor:
    source: Source
    kind: str
    tag_ids: Sequence[str]
    deliver: Callable[[Sequence[TagSample]], Awaitable[None]]
    mark_bad: Callable[[Sequence[str], str], None]
    max_backoff_s: float = 30.0
    state: str = "starting"
    detail: str = ""
    connects: int = 0
    failures: int = 0
    batches: int = 0
    _since: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.source.name

    def health(self) -> ComponentHealth:
        state: HealthState = "ok" if self.state == "connected" else "down"
        if self.state == "starting":
            state = "starting"
        elif self.state == "stopped":
            state = "stopped"
        counters = {
            "connects": self.connects,
            "failures": self.failures,
            "batches": self.batches,
            "tags": len(self.tag_ids),
        }
        return ComponentHealth(f"source:{self.name}", state, self.detail, counters)

    async def run(self) -> None:
        try:
            while True:
                await self._connect_with_backoff()
                try:
                    async for batch in self.source.samples():
                        self.batches += 1
                        await self.deliver(batch)
                    raise ConnectorError("the source ended its stream")
                except ConnectorError as exc:
                    self._lost(str(exc))
                await self._close()
                await asyncio.sleep(random.uniform(0.2, 1.0))
        finally:
            self.state = "stopped"
            await self._close()

    async def _connect_with_backoff(self) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ConnectorError),
            wait=wait_exponential_jitter(multiplier=0.5, max=self.max_backoff_s, jitter=1.0),
            before_sleep=self._before_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    async with asyncio.timeout(CONNECT_DEADLINE_S):
                        await self.source.connect()
                except TimeoutError as exc:
                    raise ConnectorError(
                        f"connect took longer than {CONNECT_DEADLINE_S:g} s"
                    ) from exc
        self.connects += 1
        self.state, self.detail = "connected", ""
        log.info("source_connected", source=self.name, kind=self.kind, tags=len(self.tag_ids))

    async def _before_retry(self, retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        self.failures += 1
        reason = f"cannot connect: {exc}"
        if (
            self.state != "down"
            or retry_state.attempt_number in (1, 5)
            or retry_state.attempt_number % 20 == 0
        ):
            log.warning(
                "source_connect_failed",
                source=self.name,
                error=str(exc),
                attempt=retry_state.attempt_number,
                retry_in_s=round(delay, 2),
            )
        self.state, self.detail = "down", reason
        self.mark_bad(self.tag_ids, f"source {self.name} down: {exc}")
        await self._close()

    def _lost(self, reason: str) -> None:
        self.failures += 1
        self.state, self.detail = "down", reason
        log.warning("source_lost", source=self.name, error=reason)
        self.mark_bad(self.tag_ids, f"source {self.name} down: {reason}")

    async def _close(self) -> None:
        try:
            async with asyncio.timeout(CLOSE_DEADLINE_S):
                await self.source.close()
        except TimeoutError:
            log.warning("source_close_timeout", source=self.name, timeout_s=CLOSE_DEADLINE_S)
        except ConnectorError as exc:
            log.warning("source_close_failed", source=self.name, error=str(exc))
