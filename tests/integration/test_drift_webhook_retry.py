"""The drift webhook sends each event once and lets the relay own the retries: a webhook that
answers 500 forever to one event has it dead-lettered after the cap (the later events flow),
and a webhook that answers 500 twice then 200 gets the event delivered once. Real SQLite
outbox, real HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support import free_port, wait_until

from bridge import plugins
from bridge.destination import Destination, DestinationContext
from bridge.outbox import Relay, RelaySettings
from bridge.outbox.feed import Budget
from bridge.outbox.wiring import feed_for
from bridge.simulators.mes import MesReceiver
from bridge.store.db import Store, open_store
from bridge.store.outbox import OutboxRepository, enqueue

pytestmark = pytest.mark.timeout(60)

NAME = "webhook-pump"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'webhook.db'}")
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
async def mes() -> AsyncIterator[MesReceiver]:
    receiver = MesReceiver(port=free_port())
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def drift_events(store: Store, n: int) -> list[str]:
    """``n`` drift events of one model, in order; returns their Idempotency-Keys."""
    keys = [str(uuid.uuid4()) for _ in range(n)]
    rows = [("pump", k, json.dumps({"asset": "pump", "seq": i})) for i, k in enumerate(keys)]
    with store.sessions.begin() as s:
        enqueue(s, NAME, rows)
    return keys


def relay_for(store: Store, hook: Destination) -> Relay:
    settings = RelaySettings(
        max_retries=3,
        max_retry_age_s=60.0,
        idle_poll_s=0.01,
        rescan_s=0.05,
        stats_every_s=0.05,
        max_backoff_s=0.2,
        retry_initial_s=0.05,
    )
    feed = feed_for(hook, Budget(100))
    return Relay(hook, OutboxRepository(store), feed, settings)


def hook_for(mes: MesReceiver) -> Destination:
    """The ``webhook`` destination kind, built through the registry as the gateway does."""
    kind = plugins.destination_kinds()["webhook"]
    settings = kind.settings_model.model_validate(
        {"url": mes.events_url, "initial_backoff_s": 0.05, "max_backoff_s": 0.2}
    )
    return kind.factory(NAME, settings, DestinationContext("gw"))


async def test_an_event_answered_500_forever_is_dead_lettered_after_the_cap(
    store: Store, mes: MesReceiver
) -> None:
    first, poisoned, last = drift_events(store, 3)
    mes.reject_keys([poisoned], status=500)
    hook = hook_for(mes)
    relay = relay_for(store, hook)
    await hook.start()
    await relay.start()
    try:
        await wait_until(lambda: relay.dead_lettered == 1, 30, what="the poisoned event buried")
        await wait_until(lambda: relay.delivered == 2, 30, what="the later event delivered")
    finally:
        await relay.close()
        await hook.close()
    repo = OutboxRepository(store)
    dead = repo.dead_letters(NAME)
    assert [d.event_id for d in dead] == [poisoned]
    assert "HTTP 500" in dead[0].last_error and "gave up after 3" in dead[0].last_error
    assert [c.idempotency_key for c in mes.calls] == [first, last]
    assert repo.stats(NAME).backlog == 0


async def test_an_event_answered_500_twice_then_200_is_delivered_once(
    store: Store, mes: MesReceiver
) -> None:
    (key,) = drift_events(store, 1)
    mes.fail(500, count=2)
    hook = hook_for(mes)
    relay = relay_for(store, hook)
    await hook.start()
    await relay.start()
    try:
        await wait_until(lambda: relay.delivered == 1, 30, what="the event delivered")
        await asyncio.sleep(0.3)  # time for a resend, which must not happen
    finally:
        await relay.close()
        await hook.close()
    assert [c.idempotency_key for c in mes.calls] == [key]
    assert mes.duplicate_count == 0
    assert relay.retried == 2 and relay.dead_lettered == 0
    assert OutboxRepository(store).stats(NAME).backlog == 0
