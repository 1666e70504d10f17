"""The relay of one destination: claims the oldest event of each asset, sends, records outcomes.

Retry ownership: the destination retries *retryable* failures of one event (its own policy,
forever); the relay owns what happens to *rejected* events (count, wait, dead-letter after a
limit) and retries its own store errors. Nothing else retries.

A round claims the oldest events of up to ``batch_size`` assets (up to ``per_asset`` each) and
sends them in waves: wave i carries the i-th event of every asset whose earlier events were
accepted, in parallel (at most ``concurrency`` requests at once; a ``BatchDestination`` sends
several events per request). The accepted rows are removed in one transaction at the end of the
round. An asset thus has one event in flight per destination, and a rejected event holds back
its asset's later ones until it is accepted or dead-lettered: order per asset holds across
retries, crashes and restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from bridge.errors import BridgeError
from bridge.store.outbox import Claim, OutboxEvent, OutboxFeed, OutboxRepository
from bridge.types import ComponentHealth

from .protocol import BatchDestination, OutboxDestination

__all__ = ["Relay", "RelaySettings"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# How long a cancelled relay waits for a store call already running in its thread.
_SETTLE_TIMEOUT_S = 10.0


async def _see_through(
    fn: Callable[..., T], *args: Any, cleanup: Callable[[T], None] | None = None
) -> T:
    """Run a blocking store call in a thread; if cancelled meanwhile, let it finish first.

    A thread cannot be cancelled: returning at once would leave its session (and, on
    PostgreSQL, its row locks) in use by the thread while this task already closes it, or
    unclosed if it was a claim. So wait for it (bounded), clean up its result, then re-raise.
    """
    job = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            result = await asyncio.wait_for(job, _SETTLE_TIMEOUT_S)
            if cleanup is not None:
                await asyncio.to_thread(cleanup, result)
        raise


@dataclass(frozen=True, slots=True)
class RelaySettings:
    batch_size: int = 500
    # Events per asset a round may send, one after the other: a backlog drains in fewer
    # rounds (claims and commits) while each asset still has one event in flight at a time.
    per_asset: int = 8
    dead_letter_after: int = 3
    reject_retry_s: float = 1.0
    idle_poll_s: float = 0.05
    # Other gateways (shared PostgreSQL) and `bridge outbox replay` add rows this process does
    # not see being written: look at the table at least this often.
    rescan_s: float = 1.0
    stats_every_s: float = 1.0
    max_backoff_s: float = 30.0


class Relay:
    def __init__(
        self,
        destination: OutboxDestination,
        repo: OutboxRepository,
        feed: OutboxFeed,
        settings: RelaySettings | None = None,
    ) -> None:
        self.destination = destination
        self.name = f"outbox:{destination.name}"
        self._repo = repo
        self._feed = feed
        self._s = settings or RelaySettings()
        self._task: asyncio.Task[None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_error = ""
        self._backlog = 0
        self._oldest: float | None = None
        self._dead_letters = 0
        self.delivered = 0
        self.rejected = 0
        self.dead_lettered = 0

    async def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name=self.name)
            # Its own task: a round can wait on an outage for hours, health must stay fresh.
            self._stats_task = asyncio.create_task(self._watch(), name=f"{self.name}:stats")

    async def close(self) -> None:
        """Stop; events not yet accepted stay in the outbox for the next start."""
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        stats, self._stats_task = self._stats_task, None
        for t in (task, stats):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        log.info(
            "outbox_relay_stopped",
            destination=self.destination.name,
            delivered=self.delivered,
            rejected=self.rejected,
            dead_lettered=self.dead_lettered,
        )

    def health(self) -> ComponentHealth:
        feed = self._feed
        age = 0 if self._oldest is None else max(0, int(time.time() - self._oldest))
        counters = {
            "backlog": self._backlog,
            "oldest_pending_age_s": age,
            "dead_letters": self._dead_letters,
            "delivered": self.delivered,
            "rejected": self.rejected,
            "dead_lettered": self.dead_lettered,
            "refused": feed.refused,
            "dropped": feed.dropped,
            "max_pending": feed.budget.max_pending,
            # Counters are integers: the budget policy as a flag (the API names it).
            "drop_oldest": int(feed.budget.when_full == "drop-oldest"),
        }
        if self._closed:
            return ComponentHealth(self.name, "stopped", counters=counters)
        if self._task is None:
            return ComponentHealth(self.name, "starting", counters=counters)
        if self._task.done() or (self._stats_task is not None and self._stats_task.done()):
            return ComponentHealth(self.name, "down", "relay task ended", counters)
        error = self._last_error or self.destination.health().detail
        if error:
            return ComponentHealth(self.name, "degraded", error, counters)
        if self._backlog >= feed.budget.max_pending:
            full = f"outbox full ({feed.budget.when_full})"
            return ComponentHealth(self.name, "degraded", full, counters)
        return ComponentHealth(self.name, "ok", counters=counters)

    # -- loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        seen_added = -1
        last_scan = 0.0
        while True:
            now = time.monotonic()
            if seen_added == self._feed.added and now - last_scan < self._s.rescan_s:
                # Nothing new written by this process: wait a little rather than query.
                await asyncio.sleep(self._s.idle_poll_s)
                continue
            seen_added, last_scan = self._feed.added, now
            try:
                while await self._round():
                    pass
            except BridgeError as exc:
                failures += 1
                delay = min(self._s.max_backoff_s, 0.2 * 2.0 ** min(failures - 1, 20))
                if not self._last_error:
                    log.error(
                        "outbox_relay_failing", destination=self.destination.name, error=str(exc)
                    )
                self._last_error = str(exc)
                seen_added = -1  # look again after the pause
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("outbox_relay_recovered", destination=self.destination.name)
            failures = 0
            self._last_error = ""

    async def _watch(self) -> None:
        while True:
            try:
                stats = await asyncio.to_thread(self._repo.stats, self.destination.name)
            except BridgeError as exc:
                # The delivery loop reports store trouble; here it only means stale figures.
                log.debug("outbox_stats_failed", destination=self.destination.name, error=str(exc))
            else:
                self._backlog = stats.backlog
                self._oldest = stats.oldest_created_at
                self._dead_letters = stats.dead_letters
                self._feed.pending = stats.backlog
            await asyncio.sleep(self._s.stats_every_s)

    async def _round(self) -> int:
        """One claim-send-finish round; returns how many events it handled (0: nothing due)."""
        claim = await _see_through(
            self._repo.claim,
            self.destination.name,
            self._s.batch_size,
            None,
            self._s.per_asset,
            cleanup=Claim.close,
        )
        try:
            if not claim.events:
                return 0
            limit = asyncio.Semaphore(max(1, self.destination.concurrency))
            accepted, rejected = await self._waves(limit, claim.events)
            dead = await _see_through(
                claim.finish, accepted, rejected, self._s.dead_letter_after, self._s.reject_retry_s
            )
        finally:
            await _see_through(claim.close)
        self.delivered += len(accepted)
        self._feed.pending = max(0, self._feed.pending - len(accepted) - len(dead))
        self.rejected += len(rejected)
        self.dead_lettered += len(dead)
        for event in dead:
            log.warning(
                "outbox_dead_letter",
                destination=self.destination.name,
                asset=event.asset,
                event_id=event.event_id,
                error=rejected[event.id],
                attempts=event.attempts + 1,
            )
        return len(claim.events)

    async def _waves(
        self, limit: asyncio.Semaphore, events: list[OutboxEvent]
    ) -> tuple[list[int], dict[int, str]]:
        """Send the claimed events wave by wave: wave i holds the i-th event of each asset.

        An asset's next event is sent only once its previous one was accepted, so an asset
        never has two events in flight and a rejection holds back the rest of its queue.
        """
        queues: dict[str, list[OutboxEvent]] = {}
        for e in events:  # oldest first, so each queue is in delivery order
            queues.setdefault(e.asset, []).append(e)
        accepted: list[int] = []
        rejected: dict[int, str] = {}
        depth = 0
        while True:
            wave = [q[depth] for q in queues.values() if depth < len(q)]
            if not wave:
                return accepted, rejected
            outcomes = await self._send_all(limit, wave)
            for e, outcome in zip(wave, outcomes, strict=True):
                if outcome is None:
                    accepted.append(e.id)
                else:
                    rejected[e.id] = outcome
                    del queues[e.asset]
            depth += 1

    async def _send_all(
        self, limit: asyncio.Semaphore, events: list[OutboxEvent]
    ) -> list[str | None]:
        dest = self.destination
        size = dest.batch_size if isinstance(dest, BatchDestination) else 1
        if size <= 1:
            return list(await asyncio.gather(*(self._send(limit, e) for e in events)))
        # A wave holds one event per asset, so a request never carries two events of one
        # asset: order per asset does not depend on how the MES processes a batch.
        chunks = [events[i : i + size] for i in range(0, len(events), size)]
        results = await asyncio.gather(*(self._send_batch(limit, c) for c in chunks))
        return [outcome for chunk in results for outcome in chunk]

    async def _send_batch(
        self, limit: asyncio.Semaphore, events: list[OutboxEvent]
    ) -> list[str | None]:
        dest = self.destination
        assert isinstance(dest, BatchDestination)
        async with limit:
            try:
                outcomes = await dest.deliver_batch([(e.event_id, e.body) for e in events])
                if len(outcomes) != len(events):
                    raise ValueError(f"{len(outcomes)} outcomes for {len(events)} events")
                return outcomes
            except Exception as exc:
                # A bug in the destination: like ``_send``, visible as rejections.
                log.exception("outbox_deliver_batch_crashed", destination=dest.name)
                return [f"internal error: {type(exc).__name__}: {exc}"] * len(events)

    async def _send(self, limit: asyncio.Semaphore, event: OutboxEvent) -> str | None:
        async with limit:
            try:
                return await self.destination.deliver(event.event_id, event.body)
            except Exception as exc:
                # A bug in the destination: count it as a rejection so it ends in the dead
                # letters (visible, replayable) instead of spinning on one event forever.
                log.exception(
                    "outbox_deliver_crashed",
                    destination=self.destination.name,
                    event_id=event.event_id,
                )
                return f"internal error: {type(exc).__name__}: {exc}"
