"""The console's live hub: one snapshot per period shared by every page, rows that follow the
view (gone assets dropped), a bounded sparkline that survives new predictions, and each row
encoded once per prediction; the stream of one page sends only what changed and ends when the
hub closes."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from bridge.api.view import ModelInfo, TagState
from bridge.console.live import SPARK_POINTS, LiveHub, Watch, row_key, sse_stream
from bridge.types import ComponentHealth, Prediction, Quality

T0 = 1_700_000_000.0


def _prediction(
    asset: str,
    seq: int,
    score: float | None = 0.5,
    value: str | float | None = "ok",
    model: str = "health",
) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"gw/{asset}/{model}/{seq}")),
        seq=seq,
        asset=asset,
        model=model,
        version="1",
        sha256="12" * 32,
        value=value,
        score=score,
        quality=Quality.GOOD,
        timestamp=T0 + seq,
        input_age_s=0.25,
    )


def _tag(asset: str, quality: Quality) -> TagState:
    return TagState(f"{asset}.vib", asset, "vib", "plc", 1.0, "mm/s", quality, T0, None, T0, "")


@dataclass
class View:
    predictions: list[Prediction] = field(default_factory=list)
    tags: list[TagState] = field(default_factory=list)
    gateway_id: str = "gw"
    samples: int = 0  # calls of latest_predictions: one per snapshot taken

    def tag_states(self) -> Sequence[TagState]:
        return list(self.tags)

    def latest_predictions(self) -> Sequence[Prediction]:
        self.samples += 1
        return list(self.predictions)

    def models(self) -> Sequence[ModelInfo]:
        return []

    def health(self) -> Sequence[ComponentHealth]:
        return [ComponentHealth("source:plc", "ok")]

    def started_at(self) -> float:
        return T0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _hub(view: View, period_s: float = 1.0) -> tuple[LiveHub, Clock]:
    clock = Clock()
    return LiveHub(view, period_s, clock=clock), clock


def test_a_snapshot_is_reused_within_the_period_and_refreshed_after() -> None:
    view = View([_prediction("p1", 1)], [_tag("p1", Quality.GOOD), _tag("p2", Quality.BAD)])
    hub, clock = _hub(view, period_s=1.0)
    first = hub.snapshot()
    assert view.samples == 1
    assert list(first.rows) == ["p1/health"]
    assert first.quality_counts == {"good": 1, "uncertain": 0, "bad": 1}
    view.predictions = [_prediction("p1", 2), _prediction("p2", 1)]
    for later in (0.0, 0.5, 0.999):
        clock.now = 100.0 + later
        assert hub.snapshot() is first  # shared, not sampled again
    assert view.samples == 1
    clock.now = 101.0
    second = hub.snapshot()
    assert second is not first
    assert view.samples == 2
    assert list(second.rows) == ["p1/health", "p2/health"]
    assert second.rows["p1/health"].prediction_id == _prediction("p1", 2).id
    clock.now = 101.5
    assert hub.snapshot() is second


def test_rows_are_sorted_and_those_of_gone_assets_are_dropped() -> None:
    view = View([_prediction("p2", 1), _prediction("p1", 1, model="zeta"), _prediction("p1", 1)])
    hub, clock = _hub(view)
    assert list(hub.snapshot().rows) == ["p1/health", "p1/zeta", "p2/health"]
    view.predictions = [_prediction("p1", 2)]
    clock.now += 1
    assert list(hub.snapshot().rows) == ["p1/health"]
    # p2 comes back with the very prediction it had: a new row, its old trend forgotten.
    view.predictions = [_prediction("p1", 2), _prediction("p2", 1, score=0.9)]
    clock.now += 1
    back = hub.snapshot().rows["p2/health"]
    assert list(back.spark) == [0.9]


def test_the_sparkline_is_bounded_and_kept_across_predictions() -> None:
    view = View([_prediction("p1", 0, score=0.0)])
    hub, clock = _hub(view)
    hub.snapshot()
    scores = [0.0]
    for seq in range(1, SPARK_POINTS + 15):
        score = seq / 100
        view.predictions = [_prediction("p1", seq, score=score)]
        clock.now += 1
        row = hub.snapshot().rows["p1/health"]
        scores.append(score)
        assert list(row.spark) == scores[-SPARK_POINTS:]
    assert len(row.spark) == SPARK_POINTS
    # The same prediction again adds nothing; a score that is not a number adds nothing.
    clock.now += 1
    assert list(hub.snapshot().rows["p1/health"].spark) == scores[-SPARK_POINTS:]
    odd: list[tuple[int, float | None]] = [(500, None), (501, math.nan), (502, math.inf)]
    for seq, not_a_number in odd:
        view.predictions = [_prediction("p1", seq, score=not_a_number)]
        clock.now += 1
        row = hub.snapshot().rows["p1/health"]
        assert list(row.spark) == scores[-SPARK_POINTS:]
        assert row.prediction_id == _prediction("p1", seq).id


def test_a_rows_json_is_cached_until_its_prediction_changes() -> None:
    view = View([_prediction("p1", 1, score=0.123456, value=2.0 / 3)])
    hub, clock = _hub(view)
    row = hub.snapshot().rows["p1/health"]
    encoded = row.json()
    assert json.loads(encoded) == {
        "k": "p1/health",
        "label": "0.6667",
        "score": 0.1235,
        "quality": "good",
        "ts": T0 + 1,
        "age": 0.25,
    }
    assert row.json() is encoded  # encoded once
    clock.now += 1
    same = hub.snapshot().rows["p1/health"]
    assert same is row and same.json() is encoded  # same prediction: same row, same text
    view.predictions = [_prediction("p1", 2, score=0.5, value="fault")]
    clock.now += 1
    changed = hub.snapshot().rows["p1/health"]
    assert changed is not row
    data = json.loads(changed.json())
    assert (data["label"], data["score"], data["ts"]) == ("fault", 0.5, T0 + 2)
    # The page appends the score to its trend itself; the row keeps it for the next page.
    assert "spark" not in data and list(changed.spark) == [0.123456, 0.5]
    assert changed.json() is changed.json()
    assert row_key("p1", "health") == "p1/health"


async def _chunks(stream: AsyncIterator[bytes]) -> AsyncIterator[str]:
    async for chunk in stream:
        yield chunk.decode()


async def test_a_stream_sends_changes_only_and_ends_when_the_hub_closes() -> None:
    view = View([_prediction("p1", 1), _prediction("p2", 1)], [_tag("p1", Quality.GOOD)])
    hub = LiveHub(view, period_s=0.05)
    watch = Watch(keys=lambda s: [k for k in s.rows if k.startswith("p1/")], tags_of="p1")
    stream = sse_stream(hub, watch)
    try:
        async with asyncio.timeout(5):
            hello = await anext(stream)
            assert b"event: hello" in hello
            assert hub.streams == 1
            # One event per chunk: rows, then tags (no megabyte buffer per stream).
            first = (await anext(stream)).decode()
            assert first.startswith("event: rows") and '"k":"p1/health"' in first
            assert "p2/health" not in first and "event: tags" not in first
            tags = (await anext(stream)).decode()
            assert tags.startswith("event: tags") and '"k":"p1.vib"' in tags
            # Both change: this page gets p1's row only.
            view.predictions = [_prediction("p1", 2, value="fault"), _prediction("p2", 2)]
            nxt = (await anext(stream)).decode()
            assert nxt.startswith("event: rows") and '"label":"fault"' in nxt
            assert "event: tags" not in nxt  # the tag did not change
            hub.close()
            rest = [c async for c in _chunks(stream)]
            assert rest == []
        assert hub.streams == 0
    finally:
        await stream.aclose()  # type: ignore[attr-defined]  # an async generator


async def test_many_rows_go_out_in_events_of_at_most_a_hundred() -> None:
    view = View([_prediction(f"p{i:04d}", 1) for i in range(250)])
    hub = LiveHub(view, period_s=0.05)
    stream = sse_stream(hub, Watch(keys=lambda s: list(s.rows)))

    async def rows() -> list[str]:
        event = (await anext(stream)).decode()
        assert event.startswith("event: rows\ndata: ") and event.endswith("\n\n")
        return [r["k"] for r in json.loads(event.split("data: ", 1)[1])]

    try:
        async with asyncio.timeout(10):
            assert b"event: hello" in await anext(stream)
            sent = [await rows() for _ in range(3)]
            assert [len(s) for s in sent] == [100, 100, 50]
            assert [k for part in sent for k in part] == [f"p{i:04d}/health" for i in range(250)]
    finally:
        hub.close()
        await stream.aclose()  # type: ignore[attr-defined]  # an async generator
