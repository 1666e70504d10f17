"""A flaky MES (one POST in three answered 500, in milliseconds) does not make the outbox lag:
each accepted event is recorded as its reply arrives and a retrying asset never holds back the
others. Real HTTP MES, real SQLite file (and PostgreSQL), and a real process killed with -9."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from outbox_harness import Durable, prediction, received_in_order, spawn_child, stop_child
from sqlalchemy import create_engine, text
from stores import BACKENDS, temp_store
from support import free_port, wait_until

from bridge.simulators.mes import MesReceiver
from bridge.store.db import Store

pytestmark = pytest.mark.timeout(120)

ASSETS = [f"p{i}" for i in range(10)]
PERIOD_S = 0.5  # each asset every 0.5 s: 20 events/s in all, the rate of the field report
RUN_S = 15.0


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(str(request.param), tmp_path, "outbox.db", prefix="bridge_flaky") as s:
        yield s


@pytest.fixture
async def mes() -> AsyncIterator[MesReceiver]:
    receiver = MesReceiver(port=free_port())
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.mark.serial
async def test_one_post_in_three_failing_still_delivers_90_percent_of_the_rate(
    store: Store, mes: MesReceiver
) -> None:
    mes.fail_every(3, 500)
    # The MES connector's default backoff (0.5 s doubling, 30 s cap): the field's settings.
    g = Durable(store, mes.events_url, initial_backoff_s=0.5, max_backoff_s=30.0)
    await g.start()
    written: dict[str, float] = {}  # event id -> wall time it was handed to the store writer
    try:
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < RUN_S:
            batch = [prediction(a, tick) for a in ASSETS]
            now = time.time()
            await g.write(batch)
            written.update((p.id, now) for p in batch)
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * PERIOD_S - time.monotonic()))
        end = time.time()
        produced = len(written)
        backlog = produced - len(mes.unique_keys)
        # The rate once running (the last two thirds of the run): delivered per second against
        # produced per second over the same span; before the fix it was below 40 %.
        since = end - RUN_S * 2 / 3
        made = sum(1 for t in written.values() if t >= since)
        got = sum(1 for c in mes.calls if since <= c.received_at <= end)
        late = sorted(c.received_at - written[str(c.idempotency_key)] for c in mes.calls)
        print(
            f"produced {produced}, delivered {produced - backlog} by the end; last "
            f"{RUN_S * 2 / 3:.0f} s: {made} produced, {got} delivered ({got / made:.1%}); "
            f"latency p50 {late[len(late) // 2]:.2f} s, max {late[-1]:.2f} s"
        )
        # The MES really failed a third of the POSTs (two accepted for each failure).
        assert mes.flaky_answers >= len(mes.calls) // 2 - 1
        assert got >= 0.9 * made, f"delivered {got} of {made} in the last {RUN_S * 2 / 3:.0f} s"
        # The lag stays bounded: what is not delivered yet is the last ~2 s of production.
        assert backlog <= 4 * len(ASSETS), f"{backlog} of {produced} not delivered at the end"

        await wait_until(lambda: len(mes.unique_keys) == produced, 20, what="the rest delivered")
        await wait_until(lambda: g.backlog() == 0, 10, what="outbox empty")
        # Each event recorded once, in order per asset; no accepted event was ever sent again.
        assert {c.idempotency_key for c in mes.calls} == set(written)
        assert received_in_order(mes.calls) == {a: list(range(tick)) for a in ASSETS}
        assert mes.duplicate_count == 0
        assert g.repo.dead_letters("mes") == []
    finally:
        await g.close()


def _pending_keys(db: Path) -> set[str]:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return {str(r[0]) for r in conn.execute(text("SELECT event_id FROM outbox"))}
    finally:
        engine.dispose()


# An accepted event is recorded within a commit of its reply and the asset waits for it: a
# kill catches at most one accepted-but-not-yet-recorded event per asset (the child has 5).
RESEND_BOUND = 5


@pytest.mark.serial
@pytest.mark.parametrize("kill_after", [40, 200])
async def test_kill_9_with_a_flaky_mes_resends_at_most_the_events_in_flight(
    tmp_path: Path, mes: MesReceiver, kill_after: int
) -> None:
    db = tmp_path / "gw.db"
    url = f"sqlite:///{db}"
    mes.fail_every(3, 500)
    procs: list[asyncio.subprocess.Process] = []
    try:
        first = await spawn_child(url, mes.events_url, "produce")
        procs.append(first)
        await wait_until(
            lambda: len(mes.calls) >= kill_after, 30, what=f"{kill_after} events delivered"
        )
        assert await stop_child(first, signal.SIGKILL) == -signal.SIGKILL
        # Accepted by the MES but still in the outbox: what a restart will send again.
        resend = mes.unique_keys & await asyncio.to_thread(_pending_keys, db)
        print(f"accepted but not recorded at the kill: {len(resend)}")
        assert len(resend) <= RESEND_BOUND, len(resend)

        mes.fail_every(0)
        duplicates_before = mes.duplicate_count
        second = await spawn_child(url, mes.events_url, "drain")
        procs.append(second)

        async def drained() -> bool:
            return not await asyncio.to_thread(_pending_keys, db)

        await wait_until(drained, 30, what="outbox drained")
        assert await stop_child(second, signal.SIGTERM) == 0
        assert mes.duplicate_count - duplicates_before == len(resend)
        keys = [c.idempotency_key for c in mes.calls]
        assert len(keys) == len(set(keys))
        for asset, seqs in received_in_order(mes.calls).items():
            assert seqs == list(range(len(seqs))), asset
    finally:
        for p in procs:
            await stop_child(p, signal.SIGKILL)
