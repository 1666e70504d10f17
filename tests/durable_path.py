"""A destination inside the gateway's durable path, wired as the runtime wires it: store writer
-> outbox -> relay -> destination, with quick retries. For tests of destinations that need the
real outbox around them (broker outages, held data) and their child processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from bridge.destination import Destination
from bridge.outbox import Relay, RelaySettings
from bridge.outbox.feed import Budget, OutboxFeed
from bridge.outbox.wiring import feed_for
from bridge.store.db import open_store
from bridge.store.outbox import OutboxRepository
from bridge.store.sink import StoreSink

__all__ = ["DurablePath", "durable_path"]

D = TypeVar("D", bound=Destination)


@dataclass
class DurablePath(Generic[D]):
    writer: StoreSink
    repo: OutboxRepository
    feed: OutboxFeed
    destination: D

    def backlog(self) -> int:
        return int(self.repo.stats(self.feed.destination).backlog)


@contextlib.asynccontextmanager
async def durable_path(
    destination: D, store_url: str, holder: str
) -> AsyncIterator[DurablePath[D]]:
    store = await asyncio.to_thread(open_store, store_url)
    feed = feed_for(destination, Budget(1_000_000, "refuse-new"), ())
    writer = StoreSink(store, outbox=[feed], batch_size=500)
    repo = OutboxRepository(store, holder=holder)
    relay = Relay(
        destination,
        repo,
        feed,
        RelaySettings(
            batch_size=500,
            dead_letter_after=3,
            max_retries=10_000,
            max_retry_age_s=3600,
            reject_retry_s=0.05,
            idle_poll_s=0.01,
            rescan_s=0.2,
            stats_every_s=0.1,
            max_backoff_s=0.5,
        ),
    )
    await writer.start()
    await destination.start()
    await relay.start()
    try:
        yield DurablePath(writer, repo, feed, destination)
    finally:
        await relay.close()
        await destination.close()
        await writer.close()
        store.dispose()
