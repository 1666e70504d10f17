"""One asset the MES answers 500 forever neither stalls its destination nor the other assets:
their events arrive in order while the poisoned asset's events reach the dead letters after the
retry cap (with the reason), and `bridge outbox replay` delivers them exactly once after the MES
is fixed. Real HTTP MES, real SQLite file and the PostgreSQL of this machine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from outbox_harness import Durable, prediction, received_in_order
from stores import BACKENDS, PG_URL, pg_schema
from support import free_port, wait_until

from bridge.cli.outbox import outbox
from bridge.simulators.mes import MesReceiver
from bridge.store.db import Store, open_store

pytestmark = pytest.mark.timeout(90)

GOOD = [f"g{i}" for i in range(4)]
BAD = "bad"
ROUNDS = 12
MAX_RETRIES = 3


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'outbox.db'}"
        return
    with pg_schema("bridge_hol") as schema:
        # The schema as a connection option, so the CLI below opens the same store by URL.
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
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


async def test_an_asset_answered_500_forever_is_dead_lettered_and_holds_back_no_other_asset(
    store_url: str, store: Store, mes: MesReceiver
) -> None:
    mes.fail_assets([BAD], 500)
    g = Durable(store, mes.events_url, concurrency=4, max_retries=MAX_RETRIES, max_retry_age_s=600)
    await g.start()
    try:
        # A plant keeps producing: one prediction per asset every 50 ms.
        for seq in range(ROUNDS):
            await g.write([prediction(a, seq) for a in (BAD, *GOOD)])
            await asyncio.sleep(0.05)
        # Every other asset is served while the poisoned one fails: all of theirs, in order.
        await wait_until(
            lambda: len(mes.calls) == len(GOOD) * ROUNDS, 15, what="every good event delivered"
        )
        assert received_in_order(mes.calls) == {a: list(range(ROUNDS)) for a in GOOD}

        # The poisoned asset's events reach the dead letters, one after the other, each after
        # the cap, with the reason; none of them was recorded by the MES.
        def dead_count() -> int:
            return len(g.repo.dead_letters("mes", limit=1000))

        await wait_until(lambda: dead_count() == ROUNDS, 30, what="poisoned events dead")
        dead = g.repo.dead_letters("mes", limit=1000)
        assert [d.event_id for d in dead] == [prediction(BAD, s).id for s in range(ROUNDS)]
        assert {d.asset for d in dead} == {BAD}
        for d in dead:
            assert d.attempts == MAX_RETRIES
            assert "HTTP 500" in d.last_error and "retryable" in d.last_error, d.last_error
        # Tried the cap, then set aside; plus at most one failure that came before the MES had
        # accepted anything (not counted: the destination was not known to work yet). A failed
        # asset is settled as its answer arrives, so its first 500 may come before any other
        # asset's first acceptance.
        assert ROUNDS * MAX_RETRIES <= mes.poison_answers <= ROUNDS * MAX_RETRIES + 1
        await wait_until(lambda: g.backlog() == 0, 10, what="outbox empty")
        # The relay counts a round's dead letters once the round has closed, a moment after
        # they are in the store.
        await wait_until(lambda: g.relay.dead_lettered == ROUNDS, 10, what="dead letters counted")

        # The MES is fixed: the operator replays them; each arrives exactly once, in order.
        mes.accept_assets()
        result = await asyncio.to_thread(
            CliRunner().invoke, outbox, ["replay", "--store", store_url, "--destination", "mes"]
        )
        assert result.exit_code == 0, result.output
        assert f"{ROUNDS} dead letter(s) replayed" in result.output
        total = (len(GOOD) + 1) * ROUNDS
        await wait_until(lambda: len(mes.calls) == total, 15, what="replayed events delivered")
        await wait_until(lambda: g.backlog() == 0, 10, what="outbox empty after replay")
        keys = [c.idempotency_key for c in mes.calls]
        assert len(keys) == len(set(keys)) and mes.duplicate_count == 0
        assert received_in_order(mes.calls)[BAD] == list(range(ROUNDS))
        assert g.repo.dead_letters("mes") == []
    finally:
        await g.close()


async def test_a_whole_mes_outage_dead_letters_nothing(store: Store, mes: MesReceiver) -> None:
    """The cap counts failures only while the destination accepts other events: an outage is
    not a poison event, so the backlog waits for the MES instead of filling the dead letters."""
    mes.fail(500)
    g = Durable(store, mes.events_url, max_retries=2, max_retry_age_s=0.1)
    await g.start()
    try:
        await g.write([prediction(a, s) for s in range(3) for a in GOOD])
        await wait_until(
            lambda: mes.stats()["count"] == 0 and g.mes.health().counters["retries"] >= 10,
            10,
            what="many failed attempts",
        )
        assert g.repo.dead_letters("mes") == []
        mes.recover()
        await wait_until(lambda: len(mes.calls) == 3 * len(GOOD), 15, what="backlog delivered")
        assert received_in_order(mes.calls) == {a: [0, 1, 2] for a in GOOD}
        assert g.repo.dead_letters("mes") == []
    finally:
        await g.close()
