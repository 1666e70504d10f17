"""The latest value of every tag, by asset, as the NGSI-LD entities carry them.

An entity is encoded once, when its prediction is stored, and kept in the outbox until the
broker took it: its tag values must be in the body then, not read when it is (re)sent. The
store writer may encode in its own thread, so the tag table (event-loop state) is not read
there: ``refresh`` runs on the event loop every ``tag_refresh_s`` and replaces each changed
asset's dict whole, and ``of`` hands out a dict nobody changes afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge.types import TagReader, TagReading

__all__ = ["TagSnapshot"]

_EMPTY: Mapping[str, TagReading] = {}


class TagSnapshot:
    def __init__(self, reader: TagReader | None) -> None:
        self._reader = reader
        self._by_asset: dict[str, dict[str, TagReading]] = {}

    @property
    def live(self) -> bool:
        return self._reader is not None

    def refresh(self, since_mono: float) -> None:
        """Take the tags changed at or after ``since_mono`` (0.0: all) from the tag table."""
        if self._reader is None:
            return
        changed: dict[str, dict[str, TagReading]] = {}
        for reading in self._reader(since_mono):
            changed.setdefault(reading.asset, {})[reading.name] = reading
        for asset, readings in changed.items():
            # A new dict per asset: a reader holding the old one sees it unchanged.
            self._by_asset[asset] = {**self._by_asset.get(asset, {}), **readings}

    def of(self, asset: str) -> Mapping[str, TagReading]:
        return self._by_asset.get(asset, _EMPTY)
