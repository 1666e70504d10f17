"""The live state of every tag: latest value, quality, timestamps, and its window if a model
reads it.

The normalize stage writes here (one writer); feature building and the API read it.

Two clocks, on purpose: windows, input ages and staleness run on the monotonic clock, so an
NTP correction or an operator setting the time does not move samples in or out of a window
(a 60 s step back once left a 10 s window holding 150 samples) nor make inputs look fresh or
stale; the wall clock only stamps what people see (``received_time``). Both are parameters, so
tests step them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import structlog

from bridge.api.view import TagState
from bridge.config.resolved import Mapping, ResolvedTag
from bridge.features.window import Ring
from bridge.normalize import Transform, compile_transform, passes_deadband, transform_key
from bridge.runtime.trigger import ChangeTrigger
from bridge.types import Quality, TagReading, TagSample, TagValue

__all__ = ["TagEntry", "TagTable"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class TagEntry:
    tag: ResolvedTag
    transform: Transform
    ring: Ring | None
    value: TagValue = None
    quality: Quality = Quality.BAD
    reason: str = "waiting for the first value"
    source_time: float | None = None
    server_time: float | None = None
    updated: float | None = None  # when the gateway last heard of it (also within the deadband)
    updated_mono: float | None = None  # the same moment on the monotonic clock: ages, staleness
    changed_mono: float | None = None  # when value, quality or reason last changed (readings)
    # The change triggers of the `trigger: change` models that read this tag (usually none).
    triggers: tuple[ChangeTrigger, ...] = ()

    @property
    def max_age_s(self) -> float:
        return self.tag.max_age_s


@dataclass
class TagTable:
    mapping: Mapping
    entries: dict[str, TagEntry] = field(init=False)
    updates: int = 0
    suppressed: int = 0
    unknown: int = 0
    wall_clock: Callable[[], float] = time.time
    monotonic_clock: Callable[[], float] = time.monotonic
    # model name -> its change trigger, for the models with `trigger: change`.
    triggers: dict[str, ChangeTrigger] = field(init=False)

    def __post_init__(self) -> None:
        # Only tags a model reads keep a window: at most max_samples, as long as its longest
        # window needs (the ring grows lazily, bridge/features/window.py).
        capacity: dict[str, int] = {}
        horizon: dict[str, float] = {}
        self.triggers = {}
        watchers: dict[str, list[ChangeTrigger]] = {}
        for model in self.mapping.models.values():
            reach = max(model.window_s, model.min_window_s)
            trigger = None
            if model.trigger == "change":
                trigger = self.triggers[model.name] = ChangeTrigger(
                    model.name, model.min_interval_s
                )
            for asset in model.assets:
                for tag in dict.fromkeys(f.tag for f in model.features):
                    key = f"{asset}.{tag}"
                    capacity[key] = max(capacity.get(key, 0), model.max_samples)
                    horizon[key] = max(horizon.get(key, 0.0), reach)
                    if trigger is not None:
                        watchers.setdefault(key, []).append(trigger)
        # Tags with the same scale/offset/clamp share one transform: one closure per tag was
        # ~220 bytes, 22 MB at 100,000 tags.
        transforms: dict[tuple[float, float, tuple[float, float] | None], Transform] = {}
        entries: dict[str, TagEntry] = {}
        for tid, t in self.mapping.tags.items():
            shape = transform_key(t)
            transform = transforms.get(shape)
            if transform is None:
                transform = transforms[shape] = compile_transform(t)
            ring = Ring(capacity[tid], horizon[tid]) if tid in capacity else None
            entries[tid] = TagEntry(t, transform, ring, triggers=tuple(watchers.get(tid, ())))
        self.entries = entries

    def get(self, tag_id: str) -> TagEntry:
        return self.entries[tag_id]

    def apply(self, batch: Sequence[TagSample]) -> None:
        """Normalize and store one batch from a source."""
        # The hottest loop of the gateway (every sample of every source passes here): names
        # are bound locally and the counters are summed once per batch.
        now = self.wall_clock()
        mono = self.monotonic_clock()
        entries = self.entries
        good = Quality.GOOD
        updates = suppressed = unknown = 0
        marked: dict[ChangeTrigger, list[str]] = {}  # handed over per batch: a burst is one
        for sample in batch:
            entry = entries.get(sample.tag)
            if entry is None:
                unknown += 1
                continue
            value, quality, why = entry.transform(sample.value, sample.quality)
            entry.updated, entry.updated_mono = now, mono
            if (
                quality is good
                and entry.quality is good
                and entry.tag.deadband > 0
                and not passes_deadband(entry.value, value, entry.tag.deadband)
            ):
                suppressed += 1
                continue
            entry.value, entry.quality, entry.reason = value, quality, sample.reason or why
            entry.source_time, entry.server_time = sample.source_time, sample.server_time
            entry.changed_mono = mono
            updates += 1
            ring = entry.ring
            if ring is not None and quality is good and isinstance(value, (int, float)):
                ring.append(mono, float(value))
            if entry.triggers:
                for trigger in entry.triggers:
                    got = marked.get(trigger)
                    if got is None:
                        marked[trigger] = [entry.tag.asset]
                    else:
                        got.append(entry.tag.asset)
        for trigger, assets in marked.items():
            trigger.mark_batch(assets)
        self.updates += updates
        self.suppressed += suppressed
        self.unknown += unknown

    def mark_bad(self, tag_ids: Iterable[str], reason: str) -> None:
        """A source is down: its tags go Bad at once (their windows keep their Good history)."""
        mono = self.monotonic_clock()
        for tid in tag_ids:
            entry = self.entries.get(tid)
            if entry is not None:
                entry.quality, entry.reason = Quality.BAD, reason
                entry.changed_mono = mono
                for trigger in entry.triggers:
                    trigger.mark(entry.tag.asset)

    def readings(self, since_mono: float) -> list[TagReading]:
        """The tags whose value, quality or reason changed at or after ``since_mono`` (monotonic; a
        source that went down turned its tags Bad: a change). Scans every entry, allocates
        only for the ones returned."""
        return [
            TagReading(
                e.tag.id,
                e.tag.asset,
                e.tag.name,
                e.value,
                e.tag.unit,
                e.quality,
                e.source_time,
                e.updated,
                e.reason,
            )
            for e in self.entries.values()
            if e.changed_mono is not None and e.changed_mono >= since_mono
        ]

    def snapshot(self, asset: str | None = None) -> list[TagState]:
        return [
            TagState(
                tag=e.tag.id,
                asset=e.tag.asset,
                name=e.tag.name,
                source=e.tag.source,
                value=e.value,
                unit=e.tag.unit,
                quality=e.quality,
                source_time=e.source_time,
                server_time=e.server_time,
                received_time=e.updated,
                reason=e.reason,
            )
            for e in self.entries.values()
            if asset is None or e.tag.asset == asset
        ]
