"""A gateway cut off from PostgreSQL inside a transaction does not keep its row locks.

The cut is a fault proxy that swallows everything (the link looks alive, nothing arrives), made
while a session holds every lease row ``FOR UPDATE`` as a lease heartbeat does. The gateway's
sessions carry ``idle_in_transaction_session_timeout``: the server rolls the silent transaction
back and another gateway's heartbeat gets the rows. Without it the rows stay locked (the control
case), which is how one partitioned gateway used to stop a whole fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator

import pytest
from faultproxy import FaultProxy, Mode
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from stores import PG_URL, pg_schema

from bridge.config.spec import FleetSettings
from bridge.runtime.fleet_wiring import idle_in_transaction_s
from bridge.store import open_store
from bridge.store.db import Store
from bridge.store.leases import LeaseRepository
from bridge.store.tables import AssetLeaseRow

pytestmark = pytest.mark.timeout(120)

ASSETS = ("pump-1", "pump-2", "pump-3")
FLEET = FleetSettings(enabled=True)


def _via(port: int) -> str:
    return PG_URL.replace("127.0.0.1:5432", f"127.0.0.1:{port}")


def _beat(store: Store, gateway: str) -> None:
    LeaseRepository(store).beat(
        gateway, "boot", ASSETS, FLEET.lease_s, lambda _members: ASSETS, time.time()
    )


def _lock_wait_s(store: Store, limit_s: float) -> float:
    """Seconds until this session holds every lease row (OperationalError past ``limit_s``)."""
    start = time.monotonic()
    with store.sessions.begin() as s:
        s.execute(text(f"SET LOCAL lock_timeout = '{round(limit_s * 1000)}ms'"))
        s.execute(select(AssetLeaseRow.asset).with_for_update()).all()
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def _holder(store: Store) -> AsyncIterator[threading.Event]:
    """A session that locks every lease row and then waits (until the event is set) without a
    word to the server, as a gateway does whose link died mid-transaction."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with contextlib.suppress(OperationalError), store.sessions() as s:
            s.execute(select(AssetLeaseRow.asset).with_for_update()).all()
            locked.set()
            release.wait(60)

    worker = threading.Thread(target=hold, daemon=True)
    worker.start()
    assert await asyncio.to_thread(locked.wait, 10), "the holder never locked the lease rows"
    try:
        yield release
    finally:
        release.set()
        await asyncio.to_thread(worker.join, 30)
        assert not worker.is_alive()


def test_the_fleet_rolls_back_a_silent_session_well_inside_a_lease() -> None:
    """Rolled back before the other gateways' leases, renewed each heartbeat, run out."""
    for fleet in (
        FLEET,
        FleetSettings(enabled=True, heartbeat_s=0.1, lease_s=0.5),
        FleetSettings(enabled=True, heartbeat_s=20, lease_s=60),
    ):
        assert 0 < idle_in_transaction_s(fleet) < fleet.lease_s - fleet.heartbeat_s
    # Alone, a gateway still gets its rows back from a session it lost.
    assert 0 < idle_in_transaction_s(FleetSettings()) <= 60


@pytest.mark.parametrize("guarded", [True, False], ids=["gateway-sessions", "control"])
async def test_a_session_cut_off_mid_transaction_does_not_keep_the_lease_rows(
    guarded: bool,
) -> None:
    idle = idle_in_transaction_s(FLEET)
    with pg_schema("bridge_silent") as schema:
        direct = open_store(PG_URL, schema=schema)
        proxy = FaultProxy("127.0.0.1", 5432)
        await proxy.start()
        # The proxy runs on this loop: whatever goes through it is called from a thread.
        cut = await asyncio.to_thread(
            open_store,
            _via(proxy.port),
            schema=schema,
            idle_in_transaction_s=idle if guarded else None,
        )
        try:
            await asyncio.to_thread(_beat, direct, "gw-a")
            async with _holder(cut):
                proxy.set_mode(Mode.BLACKHOLE)
                if guarded:
                    waited = await asyncio.to_thread(_lock_wait_s, direct, 30)
                    # The server's timeout, not the 30 s lock timeout, freed the rows.
                    assert waited < 30
                    await asyncio.to_thread(_beat, direct, "gw-a")
                    leases = LeaseRepository(direct).leases()
                    assert {lease.asset: lease.holder for lease in leases} == dict.fromkeys(
                        ASSETS, "gw-a"
                    )
                else:
                    # The same cut without the setting: the rows stay locked past a lease.
                    with pytest.raises(OperationalError, match="lock timeout"):
                        await asyncio.to_thread(_lock_wait_s, direct, FLEET.lease_s)
                proxy.set_mode(Mode.RST)
        finally:
            proxy.set_mode(Mode.RST)
            await asyncio.to_thread(cut.dispose)
            await proxy.stop()
            await asyncio.to_thread(direct.dispose)


def test_the_timeout_joins_the_options_the_url_carries() -> None:
    """A store URL may carry its own PostgreSQL options (a fleet's schema, say): the gateway's
    timeout is added to them, not put in their place."""
    with pg_schema("bridge_silent") as schema:
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        store = open_store(url, idle_in_transaction_s=2.5)
        try:
            with store.sessions() as s:
                assert s.scalar(text("SHOW search_path")) == schema
                assert s.scalar(text("SHOW idle_in_transaction_session_timeout")) == "2500ms"
        finally:
            store.dispose()
