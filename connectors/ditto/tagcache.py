"""The latest reading of the tags a Ditto destination puts into its ``telemetry`` feature.

``encode`` runs in the store writer's thread, the tag table lives on the event loop: reading the
table from the writer would race its heartbeat bookkeeping. So a task on the loop reads the
changed tags every ``interval_s`` (``DestinationContext.tags``) and keeps them here; ``encode``
only looks up an asset's readings. Each asset's map is replaced, never changed in place, so the
writer's thread always sees a whole one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import structlog

from bridge.types import TagReader, TagReading

__all__ = ["TagCache"]

log = structlog.get_logger(__name__)

_EMPTY: Mapping[str, TagReading] = {}


class TagCache:
    def __init__(self, reader: TagReader, names: tuple[str, ...], interval_s: float) -> None:
        self._reader = reader
        self._names = frozenset(names)  # empty: every tag
        self._interval_s = interval_s
        self._by_asset: dict[str, Mapping[str, TagReading]] = {}
        self._since = 0.0
        self._task: asyncio.Task[None] | None = None

    def of(self, asset: str) -> Mapping[str, TagReading]:
        """Tag name -> latest reading of ``asset``'s chosen tags (safe from any thread)."""
        return self._by_asset.get(asset, _EMPTY)

    def refresh(self) -> None:
        """Take the tags changed since the last refresh (on the event loop)."""
        started = time.monotonic()
        changed: dict[str, dict[str, TagReading]] = {}
        for reading in self._reader(self._since):
            if not self._names or reading.name in self._names:
                changed.setdefault(reading.asset, {})[reading.name] = reading
        self._since = started
        for asset, readings in changed.items():
            self._by_asset[asset] = {**self._by_asset.get(asset, _EMPTY), **readings}

    def start(self, name: str) -> None:
        if self._task is None:
            self.refresh()  # the values there are now, before the first event is encoded
            self._task = asyncio.create_task(self._run(), name=f"{name}-tags")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                self.refresh()
            except Exception:  # a bug in the reader must not end the telemetry for good
                log.exception("ditto_tag_refresh_failed")
