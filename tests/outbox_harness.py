"""The durable MES path without the rest of the gateway: StoreSink -> outbox -> Relay -> MES.

Used by the outbox tests, the crash-test child process and bench/outbox.py. Everything is real:
SQLite files or the PostgreSQL on 127.0.0.1, HTTP to a MesReceiver.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stores import PG_URL, pg_schema
from support import spawn_ready

from bridge.connectors.mes import MesDestination, MesSettings
from bridge.destination import DestinationContext
from bridge.outbox import Relay, RelaySettings
from bridge.outbox.feed import Budget, WhenFull
from bridge.outbox.wiring import feed_for
from bridge.store.db import Store, open_store
from bridge.store.outbox import OutboxRepository
from bridge.store.sink import StoreSink
from bridge.types import Prediction, PredictionSlot, Quality

__all__ = ["PG_URL", "Durable", "pg_schema", "prediction", "received_in_order", "store_url"]

GATEWAY = "gw-outbox"
T0 = 1714564800.0


def prediction(asset: str, seq: int) -> Prediction:
    # The same deterministic id the runtime uses: gateway, asset, model and sequence.
    pid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/health/{seq}"))
    return Prediction(
        id=pid,
        seq=seq,
        asset=asset,
        model="health",
        version="1.0.0",
        sha256="ab" * 32,
        value="healthy",
        score=0.9,
        quality=Quality.GOOD,
        timestamp=T0 + seq,
        input_age_s=0.1,
    )


def store_url(backend: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.db'}" if backend == "sqlite" else PG_URL


class Durable:
    """One "gateway": its store writer, one MES destination and that destination's relay."""

    def __init__(
        self,
        store: Store,
        mes_url: str,
        *,
        name: str = "mes",
        max_pending: int = 1_000_000,
        when_full: WhenFull = "refuse-new",
        dead_letter_after: int = 3,
        max_retries: int = 20,
        max_retry_age_s: float = 600.0,
        concurrency: int = 8,
        batch_size: int = 500,
        timeout_s: float = 2.0,
        mes_batch_size: int = 1,
        lease_s: float = 30.0,
        holder: str = GATEWAY,
        slots: Sequence[PredictionSlot] = (),
        **mes: Any,
    ) -> None:
        self.store = store
        settings = MesSettings(
            url=mes_url,
            timeout_s=timeout_s,
            initial_backoff_s=mes.pop("initial_backoff_s", 0.02),
            max_backoff_s=mes.pop("max_backoff_s", 0.2),
            concurrency=concurrency,
            batch_size=mes_batch_size,
            **mes,
        )
        self.mes = MesDestination(name, settings, DestinationContext(GATEWAY, tuple(slots)))
        # Built as the gateway builds it: the destination's event rules run in the store writer.
        self.feed = feed_for(self.mes, Budget(max_pending, when_full), slots)
        self.writer = StoreSink(store, outbox=[self.feed], batch_size=batch_size)
        # Leases in the gateway's name, as the runtime takes them: a restart takes them back.
        self.repo = OutboxRepository(store, holder=holder)
        self.relay = Relay(
            self.mes,
            self.repo,
            self.feed,
            RelaySettings(
                batch_size=batch_size,
                dead_letter_after=dead_letter_after,
                max_retries=max_retries,
                max_retry_age_s=max_retry_age_s,
                reject_retry_s=0.05,
                idle_poll_s=0.01,
                rescan_s=0.2,
                stats_every_s=0.1,
                max_backoff_s=0.5,
                lease_s=lease_s,
            ),
        )

    async def start(self, relay: bool = True) -> None:
        await self.writer.start()
        await self.mes.start()
        if relay:
            await self.relay.start()

    async def write(self, batch: Sequence[Prediction]) -> None:
        await self.writer.write(batch)

    async def close(self) -> None:
        await self.relay.close()
        await self.mes.close()
        await self.writer.close()

    def backlog(self) -> int:
        return self.repo.stats(self.feed.destination).backlog


def open_test_store(backend: str, tmp_path: Path, schema: str | None) -> Store:
    return open_store(store_url(backend, tmp_path), schema=schema)


def received_in_order(calls: Sequence[Any]) -> dict[str, list[int]]:
    """Sequence numbers per asset, in the order the MES recorded them."""
    out: dict[str, list[int]] = {}
    for call in calls:
        out.setdefault(call.body["asset"], []).append(int(call.body["seq"]))
    return out


CHILD = Path(__file__).resolve().parent / "outbox_child.py"


async def spawn_child(store_url: str, mes_url: str, mode: str) -> asyncio.subprocess.Process:
    """``tests/outbox_child.py`` in its own process, once it printed "ready"."""
    return await spawn_ready(CHILD, store_url, mes_url, mode)


async def stop_child(proc: asyncio.subprocess.Process, sig: int) -> int:
    """Send ``sig`` (kill after 20 s) and return the exit code."""
    if proc.returncode is None:
        proc.send_signal(sig)
    try:
        return await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
        proc.kill()
        return await proc.wait()
