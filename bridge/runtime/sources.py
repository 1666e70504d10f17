"""Keeps one source connected. This is the ONLY reconnect loop for sources: connectors never retry.

Between failed connects the wait grows exponentially with jitter (tenacity; half fixed, half
random, see ``bridge.retry.backoff_delay``) up to a cap, so a server that is up but refuses
sessions is not hammered. A long outage grows that wait, so on its own a server back after a
minute would be seen only at the end of the wait in progress: while the server's port refuses
connections, a cheap TCP connect probe every ``probe_interval_s`` watches it, and the moment the
port accepts again the wait is cut short and the backoff starts over. A port that accepts but
gives no session keeps the normal backoff (the probe then looks once per wait, not every
interval).

A source tunes this by offering ``reconnect`` (``initial_backoff_s``, ``max_backoff_s``,
``probe_interval_s``: the mapping's ``reconnect:`` block) and ``probe_address`` (host, port); a
source without them gets ``ReconnectPolicy()`` and no probe.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from bridge.cancel import CancelWatch
from bridge.errors import ConnectorError
from bridge.retry import backoff_delay
from bridge.types import ComponentHealth, HealthState, Source, TagSample

__all__ = ["ReconnectPolicy", "SourceSupervisor", "port_accepts"]

log = structlog.get_logger(__name__)

CONNECT_DEADLINE_S = 30.0
CLOSE_DEADLINE_S = 5.0
# A TCP handshake on a LAN takes milliseconds; a host that drops SYNs costs at most this per probe.
PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 5.0
    probe_interval_s: float = 0.5  # 0: no probe


class ReconnectHints(Protocol):
    """What a source's ``reconnect`` attribute offers (e.g. its validated settings block)."""

    @property
    def initial_backoff_s(self) -> float: ...

    @property
    def max_backoff_s(self) -> float: ...

    @property
    def probe_interval_s(self) -> float: ...


@runtime_checkable
class Reconnectable(Protocol):
    """A source that says how it wants to be reconnected."""

    @property
    def reconnect(self) -> ReconnectHints: ...


@runtime_checkable
class Probeable(Protocol):
    """A source that says where its server listens (None: nowhere a TCP probe could look)."""

    @property
    def probe_address(self) -> tuple[str, int] | None: ...


@runtime_checkable
class PartlyUp(Protocol):
    """A source made of several links (e.g. OPC UA ``sessions: N``) that stays up while some
    are lost: ``degraded`` says why ("" when all are up), ``counters`` go into its health."""

    @property
    def degraded(self) -> str: ...

    @property
    def counters(self) -> Mapping[str, int]: ...


async def port_accepts(host: str, port: int) -> bool:
    """True if a TCP connection to host:port opens within PROBE_TIMEOUT_S (closed at once)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


@dataclass
class SourceSupervisor:
    source: Source
    kind: str
    tag_ids: Sequence[str]
    deliver: Callable[[Sequence[TagSample]], Awaitable[None]]
    mark_bad: Callable[[Sequence[str], str], None]
    # None: from the source's ``reconnect`` (the mapping), else ReconnectPolicy's defaults.
    max_backoff_s: float | None = None
    policy: ReconnectPolicy | None = None
    state: str = "starting"
    detail: str = ""
    connects: int = 0
    failures: int = 0
    batches: int = 0
    samples: int = 0  # tag samples delivered (bridge_source_tag_updates_total)
    probe_wakeups: int = 0  # waits cut short because the server's port accepted again
    backoff_s: float = 0.0  # the wait scheduled after the latest failed connect (0: connected)
    _attempt: int = field(init=False, default=0)
    _streak_base: int = field(init=False, default=0)  # the backoff starts over after this attempt
    _port_closed: bool = field(init=False, default=False)
    _down_since: float | None = field(init=False, default=None)
    _policy: ReconnectPolicy = field(init=False)
    _probe_address: tuple[str, int] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        policy = self.policy
        if policy is None:
            policy = ReconnectPolicy()
            if isinstance(self.source, Reconnectable):
                hints = self.source.reconnect
                policy = ReconnectPolicy(
                    hints.initial_backoff_s, hints.max_backoff_s, hints.probe_interval_s
                )
        if self.max_backoff_s is not None:
            policy = ReconnectPolicy(
                min(policy.initial_backoff_s, self.max_backoff_s),
                self.max_backoff_s,
                policy.probe_interval_s,
            )
        self._policy = policy
        if policy.probe_interval_s > 0 and isinstance(self.source, Probeable):
            self._probe_address = self.source.probe_address

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def down_since(self) -> float | None:
        """When (monotonic) the source was lost or first failed to connect; None while it is
        connected or before its first attempt failed."""
        return self._down_since

    @property
    def reconnect_policy(self) -> ReconnectPolicy:
        return self._policy

    @property
    def probe_address(self) -> tuple[str, int] | None:
        """Where the probe looks; None: no probe (switched off, or the source names no port)."""
        return self._probe_address

    def health(self) -> ComponentHealth:
        state: HealthState = "ok" if self.state == "connected" else "down"
        if self.state == "starting":
            state = "starting"
        elif self.state == "stopped":
            state = "stopped"
        detail = self.detail
        counters = {
            "connects": self.connects,
            "failures": self.failures,
            "batches": self.batches,
            "probe_wakeups": self.probe_wakeups,
            "tags": len(self.tag_ids),
        }
        if isinstance(self.source, PartlyUp):
            counters.update(self.source.counters)
            why = self.source.degraded
            if state == "ok" and why:
                state, detail = "degraded", why
        return ComponentHealth(f"source:{self.name}", state, detail, counters)

    async def run(self) -> None:
        # A library's wait_for may swallow our stop (bridge.cancel): look after each await
        # that runs library code, so a stopped supervisor never goes on delivering.
        watch = CancelWatch()
        try:
            while True:
                await self._connect_with_backoff()
                watch.check()
                try:
                    async for batch in self.source.samples():
                        watch.check()
                        self.batches += 1
                        self.samples += len(batch)
                        await self.deliver(batch)
                    raise ConnectorError("the source ended its stream")
                except ConnectorError as exc:
                    self._lost(str(exc))
                await self._close()
                # A short jittered pause: a restarted server is tried within a second, while
                # gateways that lost it together do not all knock at the same instant.
                await asyncio.sleep(random.uniform(0.2, 1.0))
        finally:
            self.state = "stopped"
            await self._close()

    async def _connect_with_backoff(self) -> None:
        self._attempt = self._streak_base = 0
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ConnectorError),
            wait=self._next_wait,
            sleep=self._sleep_or_probe,
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
        down_for = time.monotonic() - self._down_since if self._down_since is not None else 0.0
        self.state, self.detail, self.backoff_s = "connected", "", 0.0
        self._down_since, self._port_closed = None, False
        log.info(
            "source_connected",
            source=self.name,
            kind=self.kind,
            tags=len(self.tag_ids),
            down_for_s=round(down_for, 2),
        )

    def _next_wait(self, retry_state: RetryCallState) -> float:
        streak = retry_state.attempt_number - self._streak_base
        p = self._policy
        return backoff_delay(streak, p.initial_backoff_s, p.max_backoff_s)

    async def _sleep_or_probe(self, delay: float) -> None:
        """Sleep ``delay``; while the server's port refuses connections, probe it and return as
        soon as it accepts (the backoff then starts over: this is a new server process)."""
        address = self._probe_address
        deadline = time.monotonic() + delay
        if address is None:
            await asyncio.sleep(delay)
            return
        if await port_accepts(*address):
            if self._port_closed:  # closed at the last look: it reopened during the attempt
                self._reopened(address, deadline)
                return
            # Up but no session (still starting, overloaded, refusing us): keep the backoff.
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            return
        if not self._port_closed:
            self._port_closed = True
            log.info(
                "source_port_closed",
                source=self.name,
                address=f"{address[0]}:{address[1]}",
                probe_every_s=self._policy.probe_interval_s,
            )
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(self._policy.probe_interval_s, left))
            if time.monotonic() >= deadline:
                return  # the attempt is due anyway
            if await port_accepts(*address):
                self._reopened(address, deadline)
                return

    def _reopened(self, address: tuple[str, int], deadline: float) -> None:
        self._port_closed = False
        self.probe_wakeups += 1
        self._streak_base = self._attempt
        log.info(
            "source_port_open",
            source=self.name,
            address=f"{address[0]}:{address[1]}",
            wait_cut_s=round(max(0.0, deadline - time.monotonic()), 2),
        )

    async def _before_retry(self, retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        self._attempt = retry_state.attempt_number
        self.backoff_s = delay
        self.failures += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
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
        self._down_since = time.monotonic()
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
