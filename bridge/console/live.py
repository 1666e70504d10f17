"""What the console's pages show live: one snapshot of the gateway per period, shared by every
open page, and a Server-Sent Events stream per page that sends only what changed on screen.

Ten consoles showing 2,000 assets must not cost ten times the encoding: each row is encoded
to JSON once per change of its prediction (the hub caches it), and a stream only joins the
cached fragments of the rows it has not sent yet. Ages are not re-sent every second: a row
carries its prediction time and the input age then, and the page ages it by itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bridge.api.view import GatewayView, TagState
from bridge.types import Prediction, Quality

__all__ = ["AssetRow", "LiveHub", "Snapshot", "Watch", "row_key", "sse_stream"]

SPARK_POINTS = 60  # score samples kept per row for its sparkline (console.js keeps as many)
_ROWS_PER_EVENT = 100  # ~12 KB events: no megabyte buffer per stream and period
_HEARTBEAT_S = 15.0  # a comment line keeps proxies from closing an idle stream


def row_key(asset: str, model: str) -> str:
    return f"{asset}/{model}"


def _label(p: Prediction) -> str:
    if p.value is None:
        return ""
    if isinstance(p.value, float):
        return f"{p.value:.4g}"
    return str(p.value)


@dataclass(slots=True)
class AssetRow:
    """One asset and model on the Assets page."""

    key: str
    asset: str
    model: str
    version: str
    label: str
    score: float | None
    quality: str
    timestamp: float
    input_age_s: float | None
    prediction_id: str
    reason: str
    spark: deque[float] = field(default_factory=lambda: deque(maxlen=SPARK_POINTS))
    encoded: str = ""  # the row as the stream sends it; "" until first asked

    def json(self) -> str:
        if not self.encoded:
            self.encoded = json.dumps(
                {
                    "k": self.key,
                    "label": self.label,
                    "score": None if self.score is None else round(self.score, 4),
                    "quality": self.quality,
                    "ts": round(self.timestamp, 3),
                    "age": None if self.input_age_s is None else round(self.input_age_s, 3),
                },
                separators=(",", ":"),
            )
        return self.encoded


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: float
    rows: dict[str, AssetRow]  # by row_key, sorted by asset then model
    tags: Sequence[TagState]
    quality_counts: dict[str, int]


class LiveHub:
    """Samples the gateway at most once per ``period_s``, on the event loop that owns the live
    state, only while a page asks for it. Rows of assets that are gone are dropped, so memory
    follows the mapping, not the uptime."""

    def __init__(
        self,
        view: GatewayView,
        period_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.view = view
        self.period_s = period_s
        self._clock = clock
        self._rows: dict[str, AssetRow] = {}
        self._snapshot: Snapshot | None = None
        self._sampled_at = -math.inf
        self.streams = 0  # open streams, for the tests and the benchmark
        self.closed = False
        self._wakeup: asyncio.Event | None = None

    def close(self) -> None:
        """End every stream now (the server is stopping: it would otherwise wait for them)."""
        self.closed = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def pause(self, seconds: float) -> None:
        """``seconds``, or less when the hub closes."""
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self.closed:
            return
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    def snapshot(self) -> Snapshot:
        now = self._clock()
        if self._snapshot is not None and now - self._sampled_at < self.period_s:
            return self._snapshot
        self._sampled_at = now
        self._snapshot = self._sample()
        return self._snapshot

    def _sample(self) -> Snapshot:
        latest = sorted(self.view.latest_predictions(), key=lambda p: (p.asset, p.model))
        rows: dict[str, AssetRow] = {}
        for p in latest:
            key = row_key(p.asset, p.model)
            row = self._rows.get(key)
            if row is None or row.prediction_id != p.id:
                row = self._row(p, row)
            rows[key] = row
        self._rows = rows
        tags = self.view.tag_states()
        counts = Counter(t.quality.name.lower() for t in tags)
        quality_counts = {q.name.lower(): counts.get(q.name.lower(), 0) for q in Quality}
        return Snapshot(time.time(), rows, tags, quality_counts)

    @staticmethod
    def _row(p: Prediction, before: AssetRow | None) -> AssetRow:
        row = AssetRow(
            key=row_key(p.asset, p.model),
            asset=p.asset,
            model=p.model,
            version=p.version,
            label=_label(p),
            score=p.score,
            quality=p.quality.name.lower(),
            timestamp=p.timestamp,
            input_age_s=p.input_age_s,
            prediction_id=p.id,
            reason=p.explanation.reason if p.explanation is not None else p.reason,
        )
        if before is not None:
            row.spark = before.spark  # the same deque: the trend goes on
        if p.score is not None and math.isfinite(p.score):
            row.spark.append(p.score)
        return row


def _tag_json(t: TagState) -> dict[str, object]:
    value = t.value
    if isinstance(value, float):
        value = f"{value:.6g}"
    return {
        "k": t.tag,
        "value": value,
        "quality": t.quality.name.lower(),
        "ts": t.source_time if t.source_time is not None else t.received_time,
    }


def _event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


@dataclass(frozen=True, slots=True)
class Watch:
    """What one page has on screen: the row keys it shows, and the asset whose tags it shows
    (the asset detail page), or the overview's counters."""

    keys: Callable[[Snapshot], Iterable[str]]
    tags_of: str | None = None
    overview: bool = False


def _overview(s: Snapshot, view: GatewayView) -> str:
    sources = {
        h.name.removeprefix("source:"): h.state
        for h in view.health()
        if h.name.startswith("source:")
    }
    return json.dumps(
        {"quality": s.quality_counts, "sources": sources, "rows": len(s.rows)},
        separators=(",", ":"),
    )


async def sse_stream(
    hub: LiveHub, watch: Watch, closed: Callable[[], Awaitable[bool]] | None = None
) -> AsyncIterator[bytes]:
    """The events of one page until the client goes away (Starlette cancels the generator)."""
    sent_rows: dict[str, str] = {}  # key -> prediction id sent
    sent_tags: dict[str, tuple[object, str, object]] = {}
    sent_overview = ""
    hub.streams += 1
    last_write = next_at = time.monotonic()
    try:
        # Tells the page its stream is up (it hides the "live updates lost" banner).
        yield b"retry: 3000\nevent: hello\ndata: {}\n\n"
        while not hub.closed and (closed is None or not await closed()):
            s = hub.snapshot()
            out: list[bytes] = []
            changed = []
            for key in watch.keys(s):
                row = s.rows.get(key)
                if row is not None and sent_rows.get(key) != row.prediction_id:
                    sent_rows[key] = row.prediction_id
                    changed.append(row.json())
            for start in range(0, len(changed), _ROWS_PER_EVENT):
                part = changed[start : start + _ROWS_PER_EVENT]
                out.append(_event("rows", "[" + ",".join(part) + "]"))
            if watch.tags_of is not None:
                tags = []
                for t in s.tags:
                    if t.asset != watch.tags_of:
                        continue
                    state = (t.value, t.quality.name.lower(), t.source_time)
                    if sent_tags.get(t.tag) != state:
                        sent_tags[t.tag] = state
                        tags.append(_tag_json(t))
                if tags:
                    out.append(_event("tags", json.dumps(tags, separators=(",", ":"))))
            if watch.overview:
                body = _overview(s, hub.view)
                if body != sent_overview:
                    sent_overview = body
                    out.append(_event("overview", body))
            now = time.monotonic()
            for chunk in out:
                last_write = now
                yield chunk
            if not out and now - last_write >= _HEARTBEAT_S:
                last_write = now
                yield b": keep-alive\n\n"
            # On a fixed beat (the work of this period counts in it): one update per period.
            next_at += hub.period_s
            if next_at < time.monotonic():
                next_at = time.monotonic()  # fell behind: no burst to catch up
            await hub.pause(next_at - time.monotonic())
    finally:
        hub.streams -= 1
