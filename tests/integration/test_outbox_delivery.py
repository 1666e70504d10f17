"""Durable MES delivery through the outbox, against a real MesReceiver over HTTP, on SQLite and
on the PostgreSQL of this machine: outages, lost replies, poison events, killed connections,
two gateways sharing one database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from outbox_harness import (
    PG_URL,
    Durable,
    pg_schema,
    prediction,
    received_in_order,
    store_url,
)
from sqlalchemy import create_engine, text
from support import free_port, wait_until

from bridge.simulators.mes import MesReceiver
from bridge.store.db import Store, open_store

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def schema(backend: str) -> Iterator[str | None]:
    if backend == "sqlite":
        yield None
        return
    try:
        ctx = pg_schema()
        name = ctx.__enter__()
    except Exception as exc:  # the spine's store tests skip the same way
        pytest.skip(f"PostgreSQL at {PG_URL} not reachable: {exc}")
    try:
        yield name
    finally:
        ctx.__exit__(None, None, None)


@pytest.fixture
def store(backend: str, schema: str | None, tmp_path: Path) -> Iterator[Store]:
    s = open_store(store_url(backend, tmp_path), schema=schema)
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
async def mes() -> AsyncIterator[MesReceiver]:
    receiver = MesReceiver(port=free_port())
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
async def gateways() -> AsyncIterator[list[Durable]]:
    made: list[Durable] = []
    try:
        yield made
    finally:
        for g in made:
            await g.close()


def assert_exactly_once_in_order(mes: MesReceiver, expected: dict[str, int]) -> None:
    keys = [c.idempotency_key for c in mes.calls]
    assert len(keys) == len(set(keys)), "an event was recorded twice"
    want = {prediction(a, s).id for a, n in expected.items() for s in range(n)}
    assert set(keys) == want
    assert received_in_order(mes.calls) == {a: list(range(n)) for a, n in expected.items()}


async def test_mes_refused_then_500s_then_back_delivers_each_event_once_in_order(
    store: Store, mes: MesReceiver, gateways: list[Durable]
) -> None:
    g = Durable(store, mes.events_url)
    gateways.append(g)
    await g.start()
    assets = [f"p{i}" for i in range(5)]
    written = dict.fromkeys(assets, 0)

    async def flow(rounds: int) -> None:
        for _ in range(rounds):  # a steady rate: one prediction per asset every 20 ms
            await g.write([prediction(a, written[a]) for a in assets])
            for a in assets:
                written[a] += 1
            await asyncio.sleep(0.02)

    await flow(15)  # the MES is not even listening: connection refused
    await wait_until(lambda: g.relay.health().state == "degraded", 5, what="relay degraded")
    down = g.relay.health()
    assert "retrying" in down.detail
    mes.fail(500)  # then it answers, but with 500s
    await mes.start()
    await flow(15)
    await wait_until(lambda: g.relay.health().counters["backlog"] > 0, 5, what="backlog seen")
    assert g.relay.health().counters["oldest_pending_age_s"] >= 0
    assert mes.calls == []
    mes.recover()
    await flow(15)
    total = sum(written.values())
    await wait_until(lambda: len(mes.unique_keys) >= total, 30, what="all events delivered")
    await wait_until(lambda: g.backlog() == 0, 10, what="outbox empty")
    assert_exactly_once_in_order(mes, written)
    assert g.mes.health().counters["retries"] > 0


async def test_reply_lost_after_commit_creates_no_duplicate_record(
    store: Store, mes: MesReceiver, gateways: list[Durable]
) -> None:
    await mes.start()
    # The MES records each event but answers after the client gave up: every reply is lost.
    g = Durable(store, mes.events_url, timeout_s=0.3)
    gateways.append(g)
    mes.set_delay(0.6)
    await g.start()
    await g.write([prediction("p1", s) for s in range(3)])
    await wait_until(lambda: len(mes.calls) >= 1, 10, what="first event recorded")
    assert g.backlog() == 3  # recorded by the MES, but not confirmed: still in the outbox
    mes.set_delay(0)
    await wait_until(lambda: g.backlog() == 0, 20, what="outbox empty")
    assert mes.duplicate_count >= 1  # the resend happened, with the same key, and was ignored
    assert_exactly_once_in_order(mes, {"p1": 3})


async def test_poison_event_goes_to_dead_letters_later_events_flow_and_replay_works(
    store: Store, mes: MesReceiver, gateways: list[Durable]
) -> None:
    await mes.start()
    poison = prediction("p1", 1)
    mes.reject_keys([poison.id], 422)
    g = Durable(store, mes.events_url, dead_letter_after=3)
    gateways.append(g)
    await g.start()
    await g.write([prediction(a, s) for s in range(5) for a in ("p1", "p2")])
    await wait_until(lambda: len(mes.calls) == 9, 15, what="the 9 good events")
    await wait_until(lambda: g.backlog() == 0, 10, what="outbox empty")
    assert received_in_order(mes.calls) == {"p1": [0, 2, 3, 4], "p2": [0, 1, 2, 3, 4]}
    assert mes.poison_answers == 3  # rejected exactly dead_letter_after times, then set aside
    dead = g.repo.dead_letters("mes")
    assert [(d.event_id, d.asset, d.attempts) for d in dead] == [(poison.id, "p1", 3)]
    assert "422" in dead[0].last_error
    await wait_until(lambda: g.relay.health().counters["dead_letters"] == 1, 5, what="health")

    mes.accept_keys()  # the MES was fixed: replay
    assert g.repo.replay("mes") == 1
    await wait_until(lambda: len(mes.calls) == 10, 10, what="replayed event delivered")
    assert mes.calls[-1].idempotency_key == poison.id
    assert g.repo.dead_letters("mes") == []
    assert len({c.idempotency_key for c in mes.calls}) == 10


async def test_budget_refuse_new_counts_and_reports(
    store: Store, mes: MesReceiver, gateways: list[Durable]
) -> None:
    g = Durable(store, mes.events_url, max_pending=10, when_full="refuse-new")
    gateways.append(g)
    await g.start()  # the MES is down: nothing drains
    await g.write([prediction("p1", s) for s in range(15)])
    await wait_until(lambda: g.feed.refused == 5, 10, what="5 refused")
    await wait_until(lambda: g.relay.health().counters["backlog"] == 10, 5, what="backlog 10")
    health = g.relay.health()
    assert health.state == "degraded"
    assert health.counters["refused"] == 5
    assert health.counters["dropped"] == 0
    # The history keeps every prediction; only the MES copies beyond the budget were refused.
    assert g.writer.health().counters["written"] == 15
    await mes.start()
    await wait_until(lambda: len(mes.calls) == 10, 15, what="the 10 kept events")
    assert received_in_order(mes.calls) == {"p1": list(range(10))}


async def test_budget_drop_oldest_keeps_the_newest(
    store: Store, mes: MesReceiver, gateways: list[Durable]
) -> None:
    g = Durable(store, mes.events_url, max_pending=10, when_full="drop-oldest")
    gateways.append(g)
    await g.start(relay=False)
    await g.write([prediction("p1", s) for s in range(8)])
    await wait_until(lambda: g.feed.added == 8, 10, what="8 queued")
    await g.write([prediction("p1", s) for s in range(8, 15)])
    await wait_until(lambda: g.feed.dropped == 5, 10, what="5 dropped")
    assert g.backlog() == 10
    await mes.start()
    await g.relay.start()
    await wait_until(lambda: len(mes.calls) == 10, 15, what="the 10 newest events")
    assert received_in_order(mes.calls) == {"p1": list(range(5, 15))}
    assert g.relay.health().counters["dropped"] == 5


async def test_postgres_connections_killed_during_delivery_lose_and_duplicate_nothing(
    tmp_path: Path, mes: MesReceiver, gateways: list[Durable]
) -> None:
    app = f"bridge-kill-{uuid.uuid4().hex[:8]}"
    try:
        ctx = pg_schema()
        schema = ctx.__enter__()
    except Exception as exc:
        pytest.skip(f"PostgreSQL at {PG_URL} not reachable: {exc}")
    admin = create_engine(PG_URL)
    store = open_store(f"{PG_URL}?application_name={app}", schema=schema)
    try:
        await mes.start()
        mes.set_delay(0.05)  # deliveries stay in flight (rows locked) long enough to be hit
        g = Durable(store, mes.events_url, concurrency=4)
        gateways.append(g)
        await g.start()
        assets = [f"p{i}" for i in range(4)]
        killed = 0
        for seq in range(20):
            await g.write([prediction(a, seq) for a in assets])
            await asyncio.sleep(0.03)
            if seq % 4 == 3:
                with admin.begin() as conn:
                    killed += len(
                        conn.execute(
                            text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE application_name = :app"
                            ),
                            {"app": app},
                        ).all()
                    )
        assert killed > 0
        mes.set_delay(0)
        await wait_until(lambda: len(mes.unique_keys) >= 80, 40, what="all 80 delivered")
        await wait_until(lambda: g.backlog() == 0, 20, what="outbox empty")
        assert_exactly_once_in_order(mes, dict.fromkeys(assets, 20))
        assert store.engine.dialect.name == "postgresql"
        stored = g.writer.health().counters["written"]
        assert stored == 80
    finally:
        for gw in gateways:
            await gw.close()
        gateways.clear()
        store.dispose()
        admin.dispose()
        ctx.__exit__(None, None, None)


async def test_two_gateways_sharing_postgres_send_each_event_once_in_order(
    tmp_path: Path, mes: MesReceiver, gateways: list[Durable]
) -> None:
    try:
        ctx = pg_schema()
        schema = ctx.__enter__()
    except Exception as exc:
        pytest.skip(f"PostgreSQL at {PG_URL} not reachable: {exc}")
    stores = [open_store(PG_URL, schema=schema) for _ in range(2)]
    try:
        await mes.start()
        mes.set_delay(0.01)
        # Two gateways: two gateway ids, which name their leases.
        a, b = (
            # One round of at most 3 of the 6 assets in flight per relay: while the first
            # relay's round runs, the second claims the other 3 (with more rounds in flight
            # the first could lease all 6 before the second's first claim).
            Durable(s, mes.events_url, batch_size=3, concurrency=1, holder=f"gw-{i}")
            for i, s in enumerate(stores)
        )
        gateways.extend([a, b])
        await a.start(relay=False)
        await b.start(relay=False)
        assets = [f"p{i}" for i in range(6)]
        await a.write([prediction(x, s) for s in range(10) for x in assets])
        await wait_until(lambda: a.feed.added == 60, 10, what="60 queued")
        await a.relay.start()
        await b.relay.start()
        await wait_until(lambda: len(mes.calls) >= 60, 30, what="all 60 delivered")
        await wait_until(lambda: a.backlog() == 0, 10, what="outbox empty")
        assert mes.duplicate_count == 0  # leased rows are skipped, never sent by both
        assert_exactly_once_in_order(mes, dict.fromkeys(assets, 10))
        await wait_until(
            lambda: a.relay.delivered + b.relay.delivered == 60, 5, what="relays counted 60"
        )
        assert a.relay.delivered > 0 and b.relay.delivered > 0  # both took part
    finally:
        for gw in gateways:
            await gw.close()
        gateways.clear()
        for s in stores:
            s.dispose()
        ctx.__exit__(None, None, None)
