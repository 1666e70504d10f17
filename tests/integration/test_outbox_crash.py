"""``kill -9`` of a gateway process mid-stream, then a restart: every event committed before the
kill reaches the MES, none twice, in order per asset. Real process, real SQLite file, real HTTP."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from outbox_harness import received_in_order, spawn_child, stop_child
from sqlalchemy import create_engine, text
from support import free_port, wait_until

from bridge.simulators.mes import MesReceiver

pytestmark = pytest.mark.timeout(90)


def _committed(db: Path) -> tuple[set[str], int]:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            ids = {str(r[0]) for r in conn.execute(text("SELECT prediction_id FROM predictions"))}
            pending = int(conn.execute(text("SELECT count(*) FROM outbox")).scalar_one())
        return ids, pending
    finally:
        engine.dispose()


@pytest.mark.serial
async def test_kill_9_mid_stream_then_restart_delivers_every_committed_event_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "gw.db"
    url = f"sqlite:///{db}"
    mes = MesReceiver(port=free_port())
    await mes.start()
    procs: list[asyncio.subprocess.Process] = []
    try:
        # Slow replies keep a backlog in the outbox, so the kill lands with events in flight.
        mes.set_delay(0.02)
        first = await spawn_child(url, mes.events_url, "produce")
        procs.append(first)
        await wait_until(lambda: len(mes.calls) >= 30, 30, what="30 events delivered")
        assert await stop_child(first, signal.SIGKILL) == -signal.SIGKILL
        committed, pending = await asyncio.to_thread(_committed, db)
        assert pending > 0, "the kill should leave undelivered events behind"
        delivered_before = len(mes.unique_keys)
        assert delivered_before < len(committed)

        mes.set_delay(0)
        second = await spawn_child(url, mes.events_url, "drain")
        procs.append(second)
        await wait_until(
            lambda: committed <= mes.unique_keys, 30, what="every committed event delivered"
        )

        async def outbox_empty() -> bool:
            return (await asyncio.to_thread(_committed, db))[1] == 0

        await wait_until(outbox_empty, 10, what="outbox empty")
        assert await stop_child(second, signal.SIGTERM) == 0
        keys = [c.idempotency_key for c in mes.calls]
        assert len(keys) == len(set(keys)), "an event was recorded twice"
        assert set(keys) == committed  # nothing that was not committed, nothing missing
        for asset, seqs in received_in_order(mes.calls).items():
            assert seqs == list(range(len(seqs))), asset
    finally:
        for p in procs:
            await stop_child(p, signal.SIGKILL)
        await mes.stop()
