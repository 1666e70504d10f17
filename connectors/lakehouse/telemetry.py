"""Tag readings -> telemetry rows: raw (each applied sample) or downsampled per tag over
windows aligned to the clock (last, mean, min, max and the count of each window).

``take`` is the sample feed's callback: it only appends to a list (on the event loop, right
after the tag table applied a batch). ``drain``, once a second, turns what was taken into rows;
a downsampled window becomes one row once it ended ``late_s`` ago. A sample for a window
already written is counted (``late``) and left out: a window is one row, never two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bridge.isa95 import Isa95Levels
from bridge.types import Quality, TagReading, TagValue

from .config import Downsample, TelemetrySettings
from .rows import TelemetryColumns, split_value

__all__ = ["TelemetryBuffer"]


@dataclass(slots=True)
class _Window:
    asset: str
    tag: str
    unit: str | None
    every: float
    keep: frozenset[str]
    count: int = 0
    good: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    last: TagValue = None
    last_received: float | None = None
    quality: Quality = Quality.GOOD
    reason: str = ""

    def add(self, r: TagReading) -> None:
        self.count += 1
        self.last = r.value
        self.last_received = r.received_time
        if r.quality >= self.quality:
            self.quality, self.reason = r.quality, r.reason
        number, _ = split_value(r.value)
        # The statistics of a window are those of its Good numeric samples, as a historian's.
        if number is not None and r.quality is Quality.GOOD:
            self.good += 1
            self.total += number
            self.low = min(self.low, number)
            self.high = max(self.high, number)


class TelemetryBuffer:
    """Readings taken from the sample feed, turned into telemetry rows by ``drain``."""

    def __init__(self, settings: TelemetrySettings, levels: Isa95Levels) -> None:
        self._settings = settings
        self._levels = levels
        self._assets = frozenset(settings.assets) or None
        # Downsampling anywhere gives the table its window columns (schema evolution adds them).
        self.windows = settings.default != "raw" or any(m != "raw" for m in settings.tags.values())
        self._taken: list[TagReading] = []
        self._modes: dict[str, Literal["raw"] | Downsample | None] = {}
        self._lines: dict[str, str] = {}
        self._open: dict[tuple[str, float], _Window] = {}
        self._written_until: dict[str, float] = {}  # tag id -> end of its last written window
        # Tags seen on the feed (id -> reading), for the context table; ``new_tags``: since
        # the destination last looked.
        self.tags: dict[str, TagReading] = {}
        self.new_tags = False
        self.late = 0
        self.dropped = 0

    # -- the feed's side -----------------------------------------------------------------------

    def take(self, readings: Sequence[TagReading]) -> None:
        """``bridge.types.SampleCallback``: buffer only (no I/O, no awaits)."""
        self._taken.extend(readings)

    def drop_taken(self) -> int:
        """Forget what was taken and not drained (the spool is full); returns how many."""
        n = len(self._taken)
        self._taken = []
        self.dropped += n
        return n

    # -- the drain task's side -----------------------------------------------------------------

    def _mode(self, r: TagReading) -> Literal["raw"] | Downsample | None:
        if r.tag in self._modes:
            return self._modes[r.tag]
        self.tags[r.tag] = r
        self.new_tags = True
        wanted = self._assets is None or r.asset in self._assets
        mode = self._settings.mode_of(r.tag, r.name) if wanted else None
        self._modes[r.tag] = mode
        return mode

    def _line(self, asset: str) -> str:
        line = self._lines.get(asset)
        if line is None:
            line = self._lines[asset] = self._levels.levels_of(asset)["line"]
        return line

    def swap(self) -> list[TagReading]:
        """What was taken since the last swap (on the event loop, where ``take`` runs)."""
        taken, self._taken = self._taken, []
        return taken

    def rows(
        self, taken: Sequence[TagReading], now: float, final: bool = False
    ) -> TelemetryColumns:
        """The rows of ``taken``: raw samples, and the downsampled windows that ended
        ``late_s`` before ``now`` (every open window when ``final``). Touches only the windows
        (``take`` never does): it may run in a worker thread."""
        rows = TelemetryColumns(windows=self.windows)
        for r in taken:
            mode = self._mode(r)
            if mode is None:
                continue
            t = r.source_time if r.source_time is not None else r.received_time
            if t is None:
                t = now
            if mode == "raw":
                rows.add(
                    self._line(r.asset),
                    t,
                    r.received_time,
                    r.asset,
                    r.name,
                    r.value,
                    r.unit,
                    r.quality.label,
                    r.reason,
                )
                continue
            start = math.floor(t / mode.every_s) * mode.every_s
            if start < self._written_until.get(r.tag, -math.inf):
                self.late += 1
                continue
            window = self._open.get((r.tag, start))
            if window is None:
                window = self._open[(r.tag, start)] = _Window(
                    r.asset, r.name, r.unit, mode.every_s, frozenset(mode.aggregates)
                )
            window.add(r)
        late_s = self._settings.late_s
        ended = [key for key, w in self._open.items() if final or key[1] + w.every + late_s <= now]
        for key in sorted(ended, key=lambda k: k[1]):
            w = self._open.pop(key)
            tag, start = key
            self._written_until[tag] = max(self._written_until.get(tag, -math.inf), start + w.every)
            stats = w.good > 0
            rows.add(
                self._line(w.asset),
                start,
                w.last_received,
                w.asset,
                w.tag,
                w.last if "last" in w.keep else None,
                w.unit,
                w.quality.label,
                w.reason,
                window=(
                    w.every,
                    w.count,
                    w.total / w.good if stats and "mean" in w.keep else None,
                    w.low if stats and "min" in w.keep else None,
                    w.high if stats and "max" in w.keep else None,
                ),
            )
        return rows

    @property
    def buffered(self) -> int:
        return len(self._taken)

    @property
    def open_windows(self) -> int:
        return len(self._open)
