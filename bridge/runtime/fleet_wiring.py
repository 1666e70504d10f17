"""A gateway's part in a fleet (``gateway.fleet``): the lease heartbeat, the sources following
the assets it serves, the model runners' fencing tokens, the store's fencing check and the HMI
mirror of the other gateways' assets. Built only when the mapping enables the fleet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from bridge.cancel import cancel_and_wait
from bridge.config.resolved import Mapping
from bridge.config.spec import FleetSettings
from bridge.fleet.leases import FleetLeases
from bridge.fleet.mirror import FleetMirror
from bridge.fleet.shard import Shard
from bridge.runtime.fanout import PredictionFanout
from bridge.runtime.reload import Reloader
from bridge.runtime.runner import ModelRunner
from bridge.runtime.tagtable import TagTable
from bridge.store.db import Store
from bridge.store.leases import LeaseRepository
from bridge.store.recent import RecentPredictions
from bridge.store.sink import StoreSink
from bridge.types import Sink

__all__ = ["Fleet", "Resharder", "build_fleet", "idle_in_transaction_s", "windows_warm"]

log = structlog.get_logger(__name__)

# Outside a fleet a silent session still holds its rows against the gateway's own reconnected
# sessions; no transaction of the gateway waits this long between two of its statements.
_IDLE_IN_TRANSACTION_ALONE_S = 60.0


def idle_in_transaction_s(fleet: FleetSettings) -> float:
    """How long the database keeps a silent session's transaction (and its row locks).

    In a fleet a lease heartbeat locks every lease row: a gateway cut off from the database
    inside such a transaction would stall every other gateway's heartbeat until their leases
    ran out too. Rolled back within half of what remains of a lease after a missed heartbeat,
    the others renew in time.
    """
    if not fleet.enabled:
        return _IDLE_IN_TRANSACTION_ALONE_S
    return (fleet.lease_s - fleet.heartbeat_s) / 2


@dataclass
class Resharder:
    """Restarts the sources over the tags of the assets served, whenever that set changes.
    Changes that arrive while one is applied are applied once, after it, as the latest set."""

    reloader: Reloader
    leases: FleetLeases
    name: str = "fleet-sources"
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _again: bool = field(default=False, init=False)

    def __call__(self) -> None:
        if not self.reloader.running:
            self.reloader.prepare_shard(self.leases.listening)  # the sources stage starts them
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._apply(), name="fleet:reshard")
        else:
            self._again = True

    async def _apply(self) -> None:
        while True:
            self._again = False
            try:
                await self.reloader.reshard(self.leases.listening)
            except Exception:  # a failed restart must not end the heartbeat: next change
                log.exception("sources_reshard_failed")
            if not self._again:
                return

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)


def windows_warm(
    mapping: Callable[[], Mapping], table: TagTable, clock: Callable[[], float] = time.monotonic
) -> Callable[[str], bool]:
    """Whether an asset's windows would give its models a Good row now: every input of every
    model serving it has ``min_window_s`` of history and a sample younger than its max age. A
    gateway claims an asset from another only then (``FleetLeases``)."""

    def warm(asset: str) -> bool:
        now = clock()
        for model in mapping().models.values():
            if asset not in model.assets:
                continue
            for feature in model.features:
                entry = table.entries.get(f"{asset}.{feature.tag}")
                if entry is None or entry.ring is None or entry.updated_mono is None:
                    return False
                oldest = entry.ring.oldest()
                if oldest is None or now - oldest < model.min_window_s:
                    return False
                if now - entry.updated_mono > entry.tag.max_age_s:
                    return False
        return True

    return warm


@dataclass
class Fleet:
    leases: FleetLeases
    mirror: FleetMirror
    resharder: Resharder


def build_fleet(
    mapping: Mapping,
    store: Store,
    boot_id: str,
    runners: Sequence[ModelRunner],
    store_sink: StoreSink,
    reloader: Reloader,
    fanout: PredictionFanout,
    live_sinks: Callable[[], Sequence[Sink]],
) -> Fleet:
    settings = mapping.gateway.fleet
    shard = Shard()
    leases = FleetLeases(
        LeaseRepository(store),
        mapping.gateway.id,
        boot_id,
        list(mapping.assets),
        settings,
        shard,
        warm=windows_warm(lambda: reloader.prepared.mapping, reloader.table),
    )
    store_sink.fence()
    for runner in runners:
        runner.shard = shard
    reloader.runner_hooks.append(lambda r: setattr(r, "shard", shard))
    reloader.applied_hooks.append(lambda p: leases.follow(list(p.mapping.assets)))
    # No source reads anything until the first heartbeat said which assets are this gateway's.
    reloader.prepare_shard(frozenset())
    resharder = Resharder(reloader, leases)
    leases.listeners.append(resharder)
    mirror = FleetMirror(
        RecentPredictions(store),
        live_sinks,
        lambda: leases.served,
        fanout.latest,
        settings.mirror_s,
    )
    return Fleet(leases, mirror, resharder)
