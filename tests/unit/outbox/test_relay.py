"""The relay with an in-process destination and a real SQLite file: who owns which retry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import wait_until

from bridge.outbox import OutboxDestination, Relay, RelaySettings
from bridge.store.db import Store, open_store
from bridge.store.outbox import Budget, OutboxFeed, OutboxRepository
from bridge.store.repository import PredictionRepository
from bridge.types import ComponentHealth, Prediction, Quality


def prediction(asset: str, seq: int) -> Prediction:
    return Prediction(
        id=f"{asset}-{seq:04d}",
        seq=seq,
        asset=asset,
        model="m",
        version="1",
        sha256="ab" * 32,
        value="ok",
        score=None,
        quality=Quality.GOOD,
        timestamp=1e9 + seq,
        input_age_s=None,
    )


class Scripted:
    """Answers from a script per event id: None accepts, a string rejects, an exception is a bug."""

    name = "scripted"
    concurrency = 4

    def __init__(self, script: dict[str, list[str | Exception | None]]) -> None:
        self.script = script
        self.seen: list[str] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def health(self) -> ComponentHealth:
        return ComponentHealth(self.name, "ok")

    def encode(self, p: Prediction) -> str | None:
        return json.dumps({"id": p.id})

    async def deliver(self, key: str, body: str) -> str | None:
        self.seen.append(key)
        answers = self.script.get(key)
        answer = answers.pop(0) if answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    try:
        yield s
    finally:
        s.dispose()


async def run(store: Store, dest: Scripted, events: list[Prediction], dead_after: int) -> Relay:
    feed = OutboxFeed(dest.name, dest.encode, Budget(100))
    PredictionRepository(store).add_many(events, [feed])
    relay = Relay(
        dest,
        OutboxRepository(store),
        feed,
        RelaySettings(dead_letter_after=dead_after, reject_retry_s=0.0, idle_poll_s=0.01),
    )
    await relay.start()
    return relay


async def test_destination_satisfies_the_protocol() -> None:
    assert isinstance(Scripted({}), OutboxDestination)


async def test_rejections_below_the_limit_are_retried_then_accepted_in_order(
    store: Store,
) -> None:
    dest = Scripted({"p1-0000": ["HTTP 409", "HTTP 409"]})
    relay = await run(store, dest, [prediction("p1", s) for s in range(3)], dead_after=3)
    try:
        await wait_until(lambda: relay.delivered == 3, 5, what="3 delivered")
        # The head was tried three times; the later events waited for it: order kept.
        assert dest.seen == ["p1-0000"] * 3 + ["p1-0001", "p1-0002"]
        assert relay.rejected == 2 and relay.dead_lettered == 0
    finally:
        await relay.close()


async def test_a_crashing_destination_dead_letters_instead_of_spinning(store: Store) -> None:
    dest = Scripted({"p1-0000": [RuntimeError("bug")] * 5})
    relay = await run(store, dest, [prediction("p1", 0), prediction("p1", 1)], dead_after=2)
    try:
        await wait_until(lambda: relay.delivered == 1, 5, what="the next event")
        dead = OutboxRepository(store).dead_letters()
        assert [(d.event_id, d.attempts) for d in dead] == [("p1-0000", 2)]
        assert "internal error: RuntimeError: bug" in dead[0].last_error
        assert dest.seen == ["p1-0000", "p1-0000", "p1-0001"]
    finally:
        await relay.close()
    assert relay.health().state == "stopped"
