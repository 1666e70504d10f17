"""The relay with an in-process destination and a real SQLite file: who owns which retry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from support import wait_until

from bridge.destination import Capabilities, Destination, Envelope, Outcome, Retry
from bridge.outbox import Relay, RelaySettings
from bridge.outbox.feed import Budget, OutboxFeed
from bridge.outbox.wiring import feed_for
from bridge.store.db import Store, open_store
from bridge.store.outbox import OutboxRepository
from bridge.store.repository import PredictionRepository
from bridge.types import ComponentHealth, Prediction, Quality, Trigger


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

    def __init__(self, script: dict[str, list[Outcome | Exception]], batch_size: int = 1) -> None:
        self.script = script
        self.seen: list[str] = []
        self.calls: list[list[str]] = []  # the keys of each deliver() call
        self.capabilities = Capabilities(concurrency=4, batch_size=batch_size)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def health(self) -> ComponentHealth:
        return ComponentHealth(self.name, "ok")

    def encode(self, event: Trigger) -> str | None:
        return json.dumps({"id": event.prediction.id})

    async def deliver(self, batch: Sequence[Envelope]) -> list[Outcome]:
        self.calls.append([e.key for e in batch])
        out: list[Outcome] = []
        for key, _ in batch:
            self.seen.append(key)
            answers = self.script.get(key)
            answer = answers.pop(0) if answers else None
            if isinstance(answer, Exception):
                raise answer
            out.append(answer)
        return out


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    try:
        yield s
    finally:
        s.dispose()


def feed_of(dest: Destination) -> OutboxFeed:
    return feed_for(dest, Budget(100))


async def run(store: Store, dest: Scripted, events: list[Prediction], dead_after: int) -> Relay:
    feed = feed_of(dest)
    PredictionRepository(store).add_many(events, [feed])
    relay = Relay(
        dest,
        OutboxRepository(store),
        feed,
        RelaySettings(dead_letter_after=dead_after, reject_retry_s=0.0, idle_poll_s=0.01),
    )
    await relay.start()
    return relay


async def test_default_capabilities_deliver_one_event_per_call(store: Store) -> None:
    dest = Scripted({})
    assert dest.capabilities.batch_size == Capabilities().batch_size == 1
    relay = await run(store, dest, [prediction(a, s) for s in range(2) for a in "ab"], 3)
    try:
        await wait_until(lambda: relay.delivered == 4, 5, what="4 delivered")
        assert sorted(dest.calls) == [["a-0000"], ["a-0001"], ["b-0000"], ["b-0001"]]
    finally:
        await relay.close()


async def test_a_batching_destination_gets_waves_one_event_per_asset(store: Store) -> None:
    dest = Scripted({}, batch_size=10)
    relay = await run(store, dest, [prediction(a, s) for s in range(2) for a in "abc"], 3)
    try:
        await wait_until(lambda: relay.delivered == 6, 5, what="6 delivered")
        # Wave i carries the i-th event of every asset: never two of one asset in a call.
        assert [sorted(c) for c in dest.calls] == [
            ["a-0000", "b-0000", "c-0000"],
            ["a-0001", "b-0001", "c-0001"],
        ]
    finally:
        await relay.close()


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


class Gated(Scripted):
    """Holds the events of ``held`` assets until ``gate`` opens; answers the rest at once."""

    def __init__(self, script: dict[str, list[Outcome | Exception]], held: str) -> None:
        super().__init__(script)
        self.held = held
        self.gate = asyncio.Event()

    async def deliver(self, batch: Sequence[Envelope]) -> list[Outcome]:
        if any(e.key.startswith(self.held) for e in batch):
            await self.gate.wait()
        return await super().deliver(batch)


async def test_accepted_events_are_recorded_as_their_replies_arrive(store: Store) -> None:
    # p2's send hangs for the whole test: the round cannot end, yet p1's accepted events are
    # already gone from the outbox (a crash now would not send them again).
    dest = Gated({}, held="p2")
    events = [prediction(a, s) for s in range(4) for a in ("p1", "p2")]
    relay = await run(store, dest, events, dead_after=3)
    repo = OutboxRepository(store)
    try:
        await wait_until(lambda: relay.delivered == 4, 5, what="p1's 4 events")
        assert {e.event_id for e in repo.pending()} == {f"p2-{s:04d}" for s in range(4)}
        dest.gate.set()
        await wait_until(lambda: relay.delivered == 8, 5, what="p2's events")
    finally:
        await relay.close()


async def test_a_retrying_asset_holds_back_only_its_own_later_events(store: Store) -> None:
    retry = Retry("HTTP 503")
    dest = Scripted({"p1-0000": [retry, retry]})
    events = [prediction(a, s) for s in range(3) for a in ("p1", "p2")]
    feed = feed_of(dest)
    PredictionRepository(store).add_many(events, [feed])
    relay = Relay(
        dest,
        OutboxRepository(store),
        feed,
        RelaySettings(idle_poll_s=0.01, retry_initial_s=0.05, max_backoff_s=0.1),
    )
    await relay.start()
    try:
        await wait_until(lambda: relay.delivered == 6, 5, what="all 6 delivered")
        p1 = [k for k in dest.seen if k.startswith("p1")]
        p2 = [k for k in dest.seen if k.startswith("p2")]
        assert p1 == ["p1-0000"] * 3 + ["p1-0001", "p1-0002"]  # in order, after its retries
        assert p2 == ["p2-0000", "p2-0001", "p2-0002"]
        # p2 did not wait for p1's retries: all of it went before p1's head was accepted.
        assert dest.seen.index("p2-0002") < len(dest.seen) - 3
        assert relay.retried == 2 and relay.dead_lettered == 0
        assert OutboxRepository(store).dead_letters() == []
    finally:
        await relay.close()
