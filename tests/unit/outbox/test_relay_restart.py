"""A relay whose store calls raise something other than a StoreError restarts, with backoff,
counts it in health and delivers the later events (real SQLite outbox)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from bridge.destination import Capabilities, Envelope, Outcome
from bridge.outbox import Relay, RelaySettings
from bridge.outbox.feed import Budget
from bridge.outbox.wiring import feed_for
from bridge.store.db import Store, open_store
from bridge.store.outbox import OutboxRepository
from bridge.store.repository import PredictionRepository
from bridge.types import ComponentHealth, Prediction, Quality, Trigger


def prediction(asset: str, seq: int) -> Prediction:
    return Prediction(
        f"{asset}-{seq:04d}",
        seq,
        asset,
        "m",
        "1",
        "ab" * 32,
        "ok",
        None,
        Quality.GOOD,
        1e9 + seq,
        None,
    )


class Collecting:
    name = "collecting"
    capabilities = Capabilities(concurrency=4)

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def health(self) -> ComponentHealth:
        return ComponentHealth(self.name, "ok")

    def encode(self, event: Trigger) -> str | None:
        return json.dumps({"id": event.prediction.id})

    async def deliver(self, batch: Sequence[Envelope]) -> list[Outcome]:
        self.seen.extend(e.key for e in batch)
        return [None] * len(batch)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    try:
        yield s
    finally:
        s.dispose()


async def test_a_relay_restarts_after_a_crash_and_delivers_later_events(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = OutboxRepository.claim
    calls = 0

    def claim(self: OutboxRepository, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("driver bug")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(OutboxRepository, "claim", claim)
    dest = Collecting()
    feed = feed_for(dest, Budget(100))
    PredictionRepository(store).add_many([prediction("p1", s) for s in range(3)], [feed])
    relay = Relay(
        dest,
        OutboxRepository(store),
        feed,
        RelaySettings(idle_poll_s=0.01, rescan_s=0.05, stats_every_s=0.05, max_backoff_s=0.05),
    )
    await relay.start()
    try:
        await wait_until(lambda: relay.delivered == 3, 10, what="3 delivered")
        PredictionRepository(store).add_many([prediction("p1", 3)], [feed])
        feed.added += 1
        await wait_until(lambda: relay.delivered == 4, 10, what="the later event")
        health = relay.health()
        assert health.state == "ok", health
        assert health.counters["restarts"] == 2
        assert dest.seen == [f"p1-{s:04d}" for s in range(4)]
    finally:
        await relay.close()
    assert relay.health().state == "stopped"
