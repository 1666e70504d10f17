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
from bridge.features.window import Replay, Ring
from bridge.normalize import Transform, compile_transform, passes_deadband, transform_key
from bridge.runtime.trigger import ChangeTrigger
from bridge.types import Quality, SampleCallback, TagReading, TagSample, TagValue

__all__ = ["Backfill", "PastTag", "TagEntry", "TagTable"]

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


# Source kinds that send a value only when it changes, whose silence is no sign of death.
BY_EXCEPTION = frozenset({"opcua"})


def _stale(age: float) -> str:
    return f"stale: nothing heard from the source for {age:.1f} s"


@dataclass(slots=True)
class _Beat:
    """Heartbeat bookkeeping of one tag with ``heartbeat_s``: the state (value, quality,
    reason) last seen by ``readings`` with its source time, and since when (monotonic) it
    holds. It lives beside the table, not in every entry: only these tags pay for it.

    Kept here and not in ``apply`` because an entry's ``changed_mono`` also moves for a sample
    equal to the last one (deadband 0: a polled register that holds still)."""

    entry: TagEntry
    every: float
    # Whether silence longer than max_age_s means dead: not for a source that reports by
    # exception (OPC UA: an unchanged value sends nothing; its session's keep-alives prove
    # it alive, and a lost session marks its tags Bad).
    ages: bool = True
    value: TagValue = None
    quality: Quality | None = None
    reason: str = ""
    source_time: float | None = None
    since: float = 0.0
    seen: float | None = None  # the entry's ``changed_mono`` when its state was last compared


@dataclass
class TagTable:
    mapping: Mapping
    entries: dict[str, TagEntry] = field(init=False)
    updates: int = 0
    suppressed: int = 0
    unknown: int = 0
    backfilled: int = 0  # historical samples (backfill after an outage) received
    # Model name -> the backfills it has yet to make its predictions for the past over
    # (``take_past``); only models with ``backfill: {predictions: true}``.
    past: dict[str, list[Backfill]] = field(init=False, default_factory=dict, repr=False)
    # The rings held by the batch being applied (tag id -> span), and the assets that some
    # model makes past predictions for, with the mapping they were found in (a reload swaps it).
    _held: dict[str, _Held] = field(init=False, default_factory=dict, repr=False)
    _wants: frozenset[str] = field(init=False, default=frozenset(), repr=False)
    _wants_of: Mapping | None = field(init=False, default=None, repr=False)
    wall_clock: Callable[[], float] = time.time
    monotonic_clock: Callable[[], float] = time.monotonic
    # model name -> its change trigger, for the models with `trigger: change`.
    triggers: dict[str, ChangeTrigger] = field(init=False)
    # The tags with ``heartbeat_s`` and the entries they were found in (a reload swaps them).
    _beats: list[_Beat] = field(init=False, default_factory=list, repr=False)
    _beats_of: dict[str, TagEntry] | None = field(init=False, default=None, repr=False)
    # The outputs that take every applied sample (``subscribe``): usually none, and then
    # ``apply`` builds no readings at all.
    _taps: list[SampleCallback] = field(init=False, default_factory=list, repr=False)

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
        tapped: list[TagReading] | None = [] if self._taps else None
        for sample in batch:
            entry = entries.get(sample.tag)
            if entry is None:
                unknown += 1
                continue
            if sample.historical:
                self._backfill(entry, sample, now, mono)
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
            if tapped is not None:
                t = entry.tag
                reading = TagReading(
                    t.id, t.asset, t.name, value, t.unit, quality, sample.source_time, now, why
                )
                tapped.append(reading)
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
        if tapped:
            self._hand_over(tapped)
        self.updates += updates
        self.suppressed += suppressed
        self.unknown += unknown
        if self._held:
            self._keep_past(now, mono)

    def subscribe(self, callback: SampleCallback) -> Callable[[], None]:
        """Call ``callback`` with the readings of every batch's applied samples (a
        ``bridge.types.SampleFeed``); returns the function that stops it. The subscription
        outlives reloads: the table is changed in place."""
        self._taps.append(callback)

        def unsubscribe() -> None:
            if callback in self._taps:
                self._taps.remove(callback)

        return unsubscribe

    def _hand_over(self, readings: list[TagReading]) -> None:
        for tap in tuple(self._taps):
            try:
                tap(readings)
            except Exception:
                # An output's buffer must never stop normalization of every other tag.
                log.exception("sample_subscriber_failed", subscriber=repr(tap))

    def _backfill(self, entry: TagEntry, sample: TagSample, now: float, mono: float) -> None:
        """A value read back from the server's history after an outage: into the tag's window
        at its place in time, never into the live state (the live values that follow it are
        newer) and never a change trigger (predictions are not made for the past)."""
        self.backfilled += 1
        ring = entry.ring
        stamp = sample.source_time if sample.source_time is not None else sample.server_time
        if ring is None or stamp is None:
            return
        value, quality, _ = entry.transform(sample.value, sample.quality)
        if quality is not Quality.GOOD or not isinstance(value, (int, float)):
            return
        # The source time on the monotonic clock of the window: as long before now as it was
        # measured before now (server and gateway clocks assumed in step), never before the
        # window's newest sample (times in a ring never go back) nor after now.
        at = mono - min(max(0.0, now - stamp), mono)
        newest = ring.newest()
        if newest is not None and at < newest:
            at = newest
        if self._wants_of is not self.mapping:
            self._wants = frozenset(
                a for m in self.mapping.models.values() if m.backfill_predictions for a in m.assets
            )
            self._wants_of = self.mapping
        if entry.tag.asset in self._wants:
            # A model makes predictions over this gap: the ring keeps every sample until the
            # batch is applied and its windows are copied (``_keep_past``).
            held = self._held.get(entry.tag.id)
            if held is None:
                ring.hold()
                self._held[entry.tag.id] = _Held(entry, at, at)
            else:
                held.last = at
        deadband = entry.tag.deadband
        if deadband > 0 and len(ring) and not passes_deadband(ring.last(), value, deadband):
            return
        ring.append(at, float(value))

    def _keep_past(self, now: float, mono: float) -> None:
        """After a batch with historical samples: per model with past predictions, the span
        the batch filled on each of its assets and copies of those assets' windows (every
        windowed tag of the asset: one without history in the gap counts as stale then);
        the held rings go back to their horizon."""
        held, self._held = self._held, {}
        spans: dict[str, tuple[float, float]] = {}
        for h in held.values():
            asset = h.entry.tag.asset
            span = spans.get(asset)
            spans[asset] = (
                (h.first, h.last) if span is None else (min(span[0], h.first), max(span[1], h.last))
            )
        offset = now - mono
        entries = self.entries
        tags: dict[str, PastTag] = {}
        for asset in spans:
            for tid in self.mapping.assets.get(asset, ()):
                entry = entries.get(tid)
                if entry is not None and entry.ring is not None:
                    tags[tid] = PastTag(entry.ring.replay(), entry.tag.max_age_s, offset)
        full = 0
        for h in held.values():
            ring = h.entry.ring
            assert ring is not None
            full += len(ring) >= ring.capacity
            ring.release()
        if full:
            log.warning(
                "backfill_windows_full",
                tags=full,
                hint="the gap and a window did not fit in max_samples: the earliest past "
                "predictions may lack samples; raise the model's max_samples",
            )
        models = self.mapping.models
        for model in models.values():
            if not model.backfill_predictions:
                continue
            mine = {a: spans[a] for a in model.assets if a in spans}
            if not mine:
                continue
            pending = self.past.setdefault(model.name, [])
            pending.append(Backfill(mine, tags, offset))
            if len(pending) > _PENDING_BACKFILLS:
                dropped = pending.pop(0)
                log.warning(
                    "backfill_predictions_dropped",
                    model=model.name,
                    assets=len(dropped.spans),
                    reason=f"more than {_PENDING_BACKFILLS} backfills waiting for the model",
                )
        for name in [n for n in self.past if n not in models]:  # gone with a reload
            del self.past[name]

    def take_past(self, model: str) -> list[Backfill]:
        """The backfills ``model`` has yet to make its predictions for the past over, oldest
        first (taken: the runner's)."""
        return self.past.pop(model, []) if self.past else []

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
        only for the ones returned.

        Tags with ``heartbeat_s`` also come back unchanged: every ``heartbeat_s`` after their
        state last changed, with ``heartbeat=True``, the same value and the source time of that
        value (never a new one). Unchanged includes samples the deadband suppressed and samples
        equal to the last. One not heard from for longer than its ``max_age_s`` is Bad
        (stale), in its heartbeats and at the moment it turns stale; a lost source already
        made it Bad. Heartbeats depend only on the table and the window from ``since_mono`` to
        now, so several outputs polling at their own pace each get every one (the bookkeeping
        is per heartbeat tag: a table without any pays nothing here)."""
        out = [
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
        beats = self._beats if self._beats_of is self.entries else self._track()
        if beats:
            self._heartbeats(beats, since_mono, out)
        return out

    def _track(self) -> list[_Beat]:
        """The heartbeat tags of the current entries; an unchanged tag keeps its bookkeeping
        over a reload, so its heartbeats keep their pace."""
        entries = self.entries
        old = {b.entry.tag.id: b for b in self._beats}
        beats = []
        for e in entries.values():
            every = e.tag.heartbeat_s
            if every is None:
                continue
            source = self.mapping.sources.get(e.tag.source)
            beat = _Beat(e, every, ages=source is None or source.kind not in BY_EXCEPTION)
            was = old.get(e.tag.id)
            if was is not None and was.entry.tag == e.tag:
                beat.value, beat.quality, beat.reason = was.value, was.quality, was.reason
                beat.source_time, beat.since = was.source_time, was.since
            beats.append(beat)
        self._beats, self._beats_of = beats, entries
        return beats

    def _heartbeats(self, beats: list[_Beat], since_mono: float, out: list[TagReading]) -> None:
        now = self.monotonic_clock()
        bad = Quality.BAD
        at: dict[str, int] | None = None  # tag id -> index in ``out``, built on first need
        for b in beats:
            e = b.entry
            changed = e.changed_mono
            # The state can only differ from the one kept when ``changed_mono`` moved (apply
            # and mark_bad move it), or after a reload, which does not carry it over.
            if changed is None or changed != b.seen:
                since = changed if changed is not None else e.updated_mono
                if since is None:
                    continue  # never heard of, never marked Bad: nothing to repeat
                b.seen = changed
                value = e.value
                if (
                    e.quality is not b.quality
                    or e.reason != b.reason
                    or (value is not b.value and value != b.value)
                ):
                    b.value, b.quality, b.reason = value, e.quality, e.reason
                    b.source_time, b.since = e.source_time, since
            elif b.quality is None:
                continue
            heard = e.updated_mono
            stale = (
                b.ages
                and heard is not None
                and now - heard > e.tag.max_age_s
                and e.quality is not bad
            )
            first = b.since
            beat = first + (now - first) // b.every * b.every
            # (since, now]: a heartbeat right at the start of a window was in the one before.
            if beat > first and beat > since_mono and first < since_mono:
                quality, reason = e.quality, e.reason
                if stale:
                    assert heard is not None
                    quality, reason = bad, _stale(now - heard)
                reading = TagReading(
                    e.tag.id,
                    e.tag.asset,
                    e.tag.name,
                    e.value,
                    e.tag.unit,
                    quality,
                    b.source_time,
                    e.updated,
                    reason,
                    heartbeat=True,
                )
                if changed is not None and changed >= since_mono:
                    # Already there as a change: a sample equal to the last one.
                    if at is None:
                        at = {r.tag: i for i, r in enumerate(out)}
                    out[at[e.tag.id]] = reading
                else:
                    out.append(reading)
            elif stale and (changed is None or changed < since_mono):
                assert heard is not None
                if heard + e.tag.max_age_s >= since_mono:  # turned stale within the window
                    out.append(
                        TagReading(
                            e.tag.id,
                            e.tag.asset,
                            e.tag.name,
                            e.value,
                            e.tag.unit,
                            bad,
                            b.source_time,
                            e.updated,
                            _stale(now - heard),
                        )
                    )

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


# A model's backfills waiting for its runner are kept at most this many (each holds copies of
# its assets' windows); the oldest goes first, logged.
_PENDING_BACKFILLS = 8


@dataclass(slots=True)
class _Held:
    """A ring held during a batch with historical samples, and the span (monotonic) they
    took in it."""

    entry: TagEntry
    first: float
    last: float


class PastTag:
    """A tag as feature building reads it (``WindowedTag``) at a past time: the window and the
    state of then, from a ``Replay`` of its ring that ``Backfill.as_of`` positions. The state
    is the newest sample at or before that time, Good (windows hold only Good samples); one
    older than ``max_age_s`` is stale, as a live input would be."""

    __slots__ = ("_offset", "max_age_s", "ring")

    def __init__(self, ring: Replay, max_age_s: float, offset: float) -> None:
        self.ring = ring
        self.max_age_s = max_age_s
        self._offset = offset  # wall clock minus monotonic clock when the copy was made

    @property
    def value(self) -> TagValue:
        return self.ring.last()

    @property
    def quality(self) -> Quality:
        return Quality.GOOD

    @property
    def reason(self) -> str:
        return ""

    @property
    def source_time(self) -> float | None:
        newest = self.ring.newest()
        return None if newest is None else newest + self._offset

    @property
    def updated_mono(self) -> float | None:
        return self.ring.newest()


@dataclass(frozen=True, slots=True)
class Backfill:
    """What one batch with historical samples put into the windows, for a model that makes
    predictions for the past (``backfill: {predictions: true}``): per asset the span of the
    samples (monotonic, first and last) and copies of the asset's windows as the batch left
    them (``tags``, shared by the models of one batch)."""

    spans: dict[str, tuple[float, float]]
    tags: dict[str, PastTag]
    offset: float  # wall clock minus monotonic clock when it was taken

    def as_of(self, t: float) -> Callable[[str], PastTag]:
        """The lookup of ``build_batch`` at the past time ``t`` (monotonic): each tag's window
        and state as they were then. Positions the shared copies: one ``t`` at a time."""
        tags = self.tags

        def lookup(tag_id: str) -> PastTag:
            tag = tags[tag_id]
            tag.ring.at(t)
            return tag

        return lookup
