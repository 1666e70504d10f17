"""The lakehouse destination's tests: a sample feed of their own, its settings, a "gateway" that
feeds it through the real outbox (SQLite store, store writer, relay), and readers of its tables.

Everything is real: Delta tables and the spool in tmp_path, the outbox in a SQLite file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from outbox_harness import GATEWAY, prediction

from bridge.connectors.lakehouse.config import LakehouseSettings
from bridge.connectors.lakehouse.destination import LakehouseDestination
from bridge.destination import DestinationContext, Envelope
from bridge.outbox import Relay, RelaySettings
from bridge.outbox.feed import Budget
from bridge.outbox.wiring import feed_for
from bridge.store.db import Store
from bridge.store.outbox import OutboxRepository
from bridge.store.sink import StoreSink
from bridge.types import (
    Prediction,
    PredictionSlot,
    Quality,
    SampleCallback,
    TagReading,
    TagValue,
    Trigger,
)

__all__ = [
    "GATEWAY",
    "Feed",
    "LakeGateway",
    "envelopes",
    "lake_settings",
    "prediction",
    "read_table",
    "reading",
]


class Feed:
    """A ``bridge.types.SampleFeed`` the test publishes to, as the tag table does."""

    def __init__(self) -> None:
        self.callbacks: list[SampleCallback] = []

    def __call__(self, callback: SampleCallback) -> Callable[[], None]:
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def publish(self, readings: Sequence[TagReading]) -> None:
        for callback in list(self.callbacks):
            callback(readings)


def reading(
    asset: str,
    tag: str,
    value: TagValue,
    at: float,
    quality: Quality = Quality.GOOD,
    unit: str | None = "mm/s",
) -> TagReading:
    return TagReading(f"{asset}.{tag}", asset, tag, value, unit, quality, at, at)


def lake_settings(root: Path, **overrides: Any) -> LakehouseSettings:
    """Settings writing under ``root`` that commit within a fraction of a second."""
    values: dict[str, Any] = {
        "uri": str(root / "lake"),
        "spool_dir": str(root / "spool"),
        "enterprise": "acme",
        "site": "dallas",
        "area": "packaging",
        "line": "line-4",
        "flush": {"max_age_s": 0.2},
        "initial_backoff_s": 0.1,
        "max_backoff_s": 0.5,
        "optimize": None,
        "vacuum": None,
    }
    values.update(overrides)
    return LakehouseSettings.model_validate(values)


def envelopes(
    destination: LakehouseDestination, predictions: Sequence[Prediction]
) -> list[Envelope]:
    """The outbox's view of predictions: (id, body ``encode`` made)."""
    out = []
    for p in predictions:
        body = destination.encode(Trigger(p))
        assert body is not None
        out.append(Envelope(p.id, body))
    return out


def read_table(root: Path, table: str) -> pl.DataFrame:
    return pl.read_delta(str(root / "lake" / table))


class LakeGateway:
    """The durable path of one gateway: store writer -> outbox -> relay -> lakehouse."""

    def __init__(
        self,
        store: Store,
        settings: LakehouseSettings,
        *,
        slots: Sequence[PredictionSlot] = (),
        samples: Feed | None = None,
        lease_s: float = 30.0,
    ) -> None:
        self.lake = LakehouseDestination(
            "lake", settings, DestinationContext(GATEWAY, tuple(slots), samples=samples)
        )
        self.feed = feed_for(self.lake, Budget(1_000_000, "refuse-new"), slots)
        self.writer = StoreSink(store, outbox=[self.feed], batch_size=500)
        self.repo = OutboxRepository(store, holder=GATEWAY)
        self.relay = Relay(
            self.lake,
            self.repo,
            self.feed,
            RelaySettings(
                batch_size=500,
                reject_retry_s=0.05,
                idle_poll_s=0.01,
                rescan_s=0.2,
                stats_every_s=0.1,
                max_backoff_s=0.5,
                lease_s=lease_s,
            ),
        )

    async def start(self) -> None:
        await self.writer.start()
        await self.lake.start()
        await self.relay.start()

    async def write(self, batch: Sequence[Prediction]) -> None:
        await self.writer.write(batch)

    async def close(self) -> None:
        await self.relay.close()
        await self.lake.close()
        await self.writer.close()

    def backlog(self) -> int:
        return self.repo.stats(self.feed.destination).backlog


def now() -> float:
    return time.time()
