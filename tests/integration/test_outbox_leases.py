"""Outbox claims are leases on PostgreSQL: no session stays idle in a transaction while the MES
is down, a killed gateway's leased rows are delivered by another gateway once its leases
expire (never before), and a relay keeps its leases while a long round runs. Real PostgreSQL
on 127.0.0.1, real processes, real HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from outbox_harness import PG_URL, Durable, pg_schema, prediction, received_in_order
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from support import free_port, wait_until

from bridge.simulators.mes import MesReceiver
from bridge.store.db import Store, open_store
from bridge.store.outbox import OutboxRepository

pytestmark = pytest.mark.timeout(120)

CHILD = Path(__file__).resolve().parents[1] / "outbox_child.py"
TESTS = str(CHILD.parent)
ASSETS = [f"p{i}" for i in range(5)]  # the child's assets


@pytest.fixture
def schema() -> Iterator[str]:
    with pg_schema("bridge_lease") as name:
        yield name


@pytest.fixture
def monitor() -> Iterator[Engine]:
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        engine.dispose()


def open_tracked(schema: str) -> tuple[Store, set[int]]:
    """The store, and the server pids of every connection it opens from now on."""
    store = open_store(PG_URL, schema=schema)
    pids: set[int] = set()

    def connected(dbapi_connection: Any, record: Any) -> None:
        pids.add(int(dbapi_connection.info.backend_pid))

    event.listen(store.engine, "connect", connected)
    store.engine.dispose()  # the connections opened before the listener (migrations) go
    return store, pids


def idle_in_transaction(monitor: Engine, pids: set[int]) -> float:
    """The longest time any of ``pids`` has been idle in a transaction right now (s)."""
    if not pids:
        return 0.0
    with monitor.connect() as conn:
        value = conn.execute(
            text(
                "SELECT max(extract(epoch FROM now() - state_change)) FROM pg_stat_activity"
                " WHERE state LIKE 'idle in transaction%' AND pid = ANY(:pids)"
            ),
            {"pids": sorted(pids)},
        ).scalar_one()
    return 0.0 if value is None else float(value)


@pytest.mark.serial
async def test_no_session_idles_in_a_transaction_during_an_mes_outage(
    schema: str, monitor: Engine
) -> None:
    store, pids = open_tracked(schema)
    mes = MesReceiver(port=free_port())
    await mes.start()
    # The outage: the MES accepts connections and never answers in time (each send times out).
    mes.set_delay(10.0)
    g = Durable(store, mes.events_url, timeout_s=2.0, concurrency=4, lease_s=3.0)
    await g.start()
    try:
        await g.write([prediction(a, s) for s in range(10) for a in ASSETS])
        worst = 0.0
        deadline = time.monotonic() + 7.0
        while time.monotonic() < deadline:
            worst = max(worst, await asyncio.to_thread(idle_in_transaction, monitor, pids))
            await asyncio.sleep(0.1)
        # The relay was at it all along: several sends timed out, nothing went through.
        assert g.relay.retried >= 4, g.relay.health()
        assert g.relay.delivered == 0
        assert worst <= 1.0, f"a session was idle in a transaction for {worst:.1f} s"
        # The MES back: everything goes, in order.
        mes.set_delay(0.0)
        await wait_until(lambda: len(mes.unique_keys) == 50, 30, what="50 events delivered")
        for asset, seqs in received_in_order(mes.calls).items():
            assert seqs == list(range(10)), asset
    finally:
        await g.close()
        await mes.stop()
        store.dispose()


async def _spawn(schema: str, mes_url: str, lease_s: float) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        PG_URL,
        mes_url,
        "drain",
        schema,
        str(lease_s),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"ready", line
    except BaseException:
        proc.kill()  # the test fails before it could stop the child: it must not outlive it
        await proc.wait()
        raise
    return proc


def _leases(store: Store) -> tuple[int, float]:
    """How many rows hold an unexpired lease of the child ("gw-outbox"), and the latest end."""
    with store.engine.connect() as conn:
        n, until = conn.execute(
            text(
                "SELECT count(*), max(lease_until) FROM outbox"
                " WHERE claimed_by = 'gw-outbox' AND lease_until > :now"
            ),
            {"now": time.time()},
        ).one()
    return int(n), float(until or 0.0)


@pytest.mark.serial
async def test_a_killed_gateways_leases_are_taken_over_within_the_lease_time(
    schema: str,
) -> None:
    lease_s = 3.0
    store = open_store(PG_URL, schema=schema)
    mes = MesReceiver(port=free_port())
    await mes.start()
    # Another gateway sharing the database; it writes the events, the child sends them.
    other = Durable(store, mes.events_url, holder="gw-other", lease_s=lease_s)
    child: asyncio.subprocess.Process | None = None
    try:
        await other.start(relay=False)
        await other.write([prediction(a, s) for s in range(20) for a in ASSETS])
        mes.set_delay(0.3)  # slow replies: the child is mid-round, holding leases, at the kill
        child = await _spawn(schema, mes.events_url, lease_s)
        await wait_until(lambda: len(mes.calls) >= 5, 60, what="the child sending")
        held, lease_end = await asyncio.to_thread(_leases, store)
        assert held > 0, "the child should hold leases when it is killed"
        child.kill()
        assert await child.wait() == -signal.SIGKILL
        killed = time.time()
        mes.set_delay(0.0)
        await other.relay.start()
        # Its rows go to the other gateway once the leases end, not before.
        await wait_until(
            lambda: len(mes.unique_keys) == 100,
            lease_s + 15,
            what="every event delivered by the other gateway",
        )
        done = time.time()
        late = [c for c in mes.calls if killed + 0.6 < c.received_at < lease_end - 0.1]
        assert late == [], "an event leased by the killed gateway was sent before its lease ended"
        # Within the lease time (plus the relay's rescan and a loaded machine's slack).
        assert done - killed <= lease_s + 3.0, f"took {done - killed:.1f} s after the kill"
        keys = [c.idempotency_key for c in mes.calls]
        assert len(keys) == len(set(keys)) == 100  # once each, after the MES's dedup
        for asset, seqs in received_in_order(mes.calls).items():
            assert seqs == list(range(20)), asset

        async def outbox_empty() -> bool:
            # The last replies' deletions commit a moment after the MES recorded them.
            return await asyncio.to_thread(other.backlog) == 0

        await wait_until(outbox_empty, 10, what="outbox empty")
    finally:
        if child is not None and child.returncode is None:
            child.kill()
            await child.wait()
        await other.close()
        await mes.stop()
        store.dispose()


async def test_a_relay_keeps_its_leases_while_a_long_round_runs(schema: str) -> None:
    store = open_store(PG_URL, schema=schema)
    mes = MesReceiver(port=free_port())
    await mes.start()
    mes.set_delay(0.4)
    # One asset, 8 events a round, 0.4 s each: a round of ~3 s against a 1 s lease.
    g = Durable(store, mes.events_url, lease_s=1.0, concurrency=1)
    try:
        await g.start()
        await g.write([prediction("p1", s) for s in range(8)])
        await wait_until(lambda: len(mes.calls) >= 1, 30, what="the round under way")
        thief = OutboxRepository(store, holder="gw-thief")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            claim = await asyncio.to_thread(thief.claim, "mes", 10, None, 8, 30.0)
            taken = [e.event_id for e in claim.events]
            await asyncio.to_thread(claim.close)
            assert taken == [], "a lease lapsed while its round was still running"
            await asyncio.sleep(0.1)
        await wait_until(lambda: len(mes.unique_keys) == 8, 30, what="8 events delivered")
        assert mes.duplicate_count == 0
    finally:
        await g.close()
        await mes.stop()
        store.dispose()


@pytest.mark.serial
async def test_two_gateways_draining_one_outbox_keep_each_assets_order(schema: str) -> None:
    store = open_store(PG_URL, schema=schema)
    mes = MesReceiver(port=free_port())
    await mes.start()
    # Replies slow enough that the first relay's round of 3 assets is still in flight when the
    # second relay first polls, even on a loaded machine (at 10 ms the first relay once drained
    # all 5 assets before the second's first poll; run alone, as it judges timing).
    mes.set_delay(0.05)
    # One round in flight per relay (concurrency 1) of at most 3 assets (batch_size 3): while
    # the first relay's round runs, its 3 assets are leased and the other relay, started in
    # the same breath, claims the other 2. Without the bound the first relay could lease all
    # 5 assets and drain them alone before the second one's first poll.
    a = Durable(store, mes.events_url, holder="gw-a", batch_size=3, concurrency=1)
    b = Durable(store, mes.events_url, holder="gw-b", batch_size=3, concurrency=1)
    try:
        await a.start(relay=False)
        await b.start(relay=False)
        await a.write([prediction(x, s) for s in range(40) for x in ASSETS])
        await a.relay.start()
        await b.relay.start()
        await wait_until(lambda: len(mes.unique_keys) == 200, 60, what="200 events delivered")
        # A relay counts an event once its deletion committed, a moment after the MES's reply.
        await wait_until(
            lambda: a.relay.delivered + b.relay.delivered == 200, 10, what="200 counted"
        )
        # Both took part (a round of 3 assets at a time leaves the other two to the other).
        assert a.relay.delivered > 0 and b.relay.delivered > 0
        assert mes.duplicate_count == 0
        for asset, seqs in received_in_order(mes.calls).items():
            assert seqs == list(range(40)), asset
    finally:
        await a.close()
        await b.close()
        await mes.stop()
        store.dispose()
