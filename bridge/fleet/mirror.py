"""The HMI side of a fleet: every gateway's HMI server shows every asset of the fleet.

Its own assets it shows as it predicts them; the assets other gateways serve it reads back
from the shared store every ``mirror_s`` and hands to the sinks that show the fleet (the OPC UA
server: ``shows_fleet``), never to the store, the MES or MQTT (their own gateway sent those).
So an HMI needs one endpoint for the whole fleet (one Service in front of every gateway) and
loses nothing but a reconnect when the gateway it talks to dies.

Rows are read in row-id order. On PostgreSQL an id is given at insert and a transaction with a
lower id may commit after one with a higher id, so each read starts again from the highest id
seen one read *before* the last: a row that was not visible then is read now. Per (asset,
model) only the newest prediction is shown; an older or repeated one is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, MutableMapping, Sequence

import structlog

from bridge.cancel import cancel_and_wait
from bridge.errors import BridgeError
from bridge.store.recent import RecentPredictions
from bridge.types import ComponentHealth, HealthState, Prediction, Sink

__all__ = ["FleetMirror", "shows_fleet"]

log = structlog.get_logger(__name__)

# Rows per read: a fleet of 2,000 assets at one prediction per second writes 2,000 a second.
_READ_ROWS = 20000


def shows_fleet(sink: Sink) -> bool:
    """A sink that shows state (an HMI server) rather than streaming events."""
    return bool(getattr(sink, "shows_fleet", False))


class FleetMirror:
    def __init__(
        self,
        recent: RecentPredictions,
        sinks: Callable[[], Sequence[Sink]],
        served: Callable[[], Collection[str]],
        latest: MutableMapping[tuple[str, str], Prediction],
        interval_s: float,
    ) -> None:
        self.name = "fleet-mirror"
        self._recent = recent
        self._sinks = sinks
        self._served = served
        self._latest = latest
        self.interval_s = interval_s
        self._shown: dict[tuple[str, str], float] = {}
        self._from_id = 0  # where the next read starts
        self._seen_id = 0  # highest id read so far
        self._task: asyncio.Task[None] | None = None
        self.counters = {"reads": 0, "mirrored": 0, "read_failures": 0}
        self.last_error = ""

    async def start(self) -> None:
        if self.interval_s <= 0:
            return
        try:
            # What was stored before this start is not replayed row by row: the HMI gets
            # the next prediction of each asset (within a period).
            last = await asyncio.to_thread(self._recent.last_id)
        except BridgeError as exc:
            log.warning("fleet_mirror_start_failed", error=str(exc))
            last = 0
        self._from_id = self._seen_id = last
        self._task = asyncio.create_task(self._run(), name="fleet:mirror")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.read_once()

    async def read_once(self) -> int:
        """One read; returns how many predictions it showed."""
        try:
            rows = await asyncio.to_thread(self._recent.after, self._from_id, _READ_ROWS)
        except BridgeError as exc:
            self.counters["read_failures"] += 1
            if str(exc) != self.last_error:
                log.warning("fleet_mirror_read_failed", error=str(exc))
            self.last_error = str(exc)
            return 0
        self.last_error = ""
        self.counters["reads"] += 1
        # Next time from the highest id of the read before this one (see the docstring);
        # a full read moves on from its own end, or a backlog would never be worked off.
        top = rows[-1][0] if rows else self._seen_id
        self._from_id = top if len(rows) >= _READ_ROWS else self._seen_id
        self._seen_id = max(self._seen_id, top)
        served = self._served()
        newest: dict[tuple[str, str], Prediction] = {}
        for _, p in rows:
            key = (p.asset, p.model)
            if (
                p.asset in served
                or p.historical  # made for the past: no HMI's current value
                or p.timestamp <= self._shown.get(key, float("-inf"))
            ):
                continue
            if key not in newest or p.timestamp >= newest[key].timestamp:
                newest[key] = p
        if not newest:
            return 0
        batch = list(newest.values())
        for p in batch:
            self._shown[(p.asset, p.model)] = p.timestamp
            self._latest[(p.asset, p.model)] = p
        self.counters["mirrored"] += len(batch)
        for sink in self._sinks():
            if shows_fleet(sink):
                try:
                    await sink.write(batch)
                except Exception:  # one sink's bug must not stop the mirror
                    log.exception("fleet_mirror_write_failed", sink=sink.name)
        return len(batch)

    def health(self) -> ComponentHealth:
        state: HealthState = "degraded" if self.last_error else "ok"
        return ComponentHealth("fleet-mirror", state, self.last_error, dict(self.counters))
