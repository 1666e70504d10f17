"""Change-triggered models: the trigger's coalescing and interval (pure, time as a parameter),
the tag table marking the assets whose model inputs changed, and a runner that runs over the
changed assets only (the real tag table, runner and an ONNX model)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from insight_models import linear_regressor

from bridge.config import load_mapping
from bridge.config.resolved import Mapping
from bridge.inference import LoadedModel
from bridge.runtime.runner import ModelRunner, TickOutcome
from bridge.runtime.tagtable import TagTable
from bridge.runtime.trigger import MAX_ROWS, ChangeTrigger
from bridge.types import Prediction, Quality, TagSample

# --- the trigger alone -----------------------------------------------------------------------


def test_a_lone_change_runs_at_once() -> None:
    t = ChangeTrigger("m", min_interval_s=0.5)
    assert not t.changed.is_set()
    t.mark("a")
    assert t.changed.is_set()
    assert t.wait_s(100.0) == 0.0
    assert t.take(100.0) == ("a",)
    assert not t.changed.is_set()
    assert t.pending == 0


def test_changes_within_the_interval_are_one_row_each_in_the_next_run() -> None:
    t = ChangeTrigger("m", min_interval_s=0.5)
    t.mark("a")
    assert t.take(100.0) == ("a",)
    for _ in range(50):  # a burst: 50 changes of a, 3 of b, during the interval
        t.mark("a")
    for _ in range(3):
        t.mark("b")
    assert t.wait_s(100.1) == pytest.approx(0.4)
    assert t.wait_s(100.5) == 0.0
    assert t.take(100.5) == ("a", "b")  # one row per asset, in the order of first change
    assert (t.marks, t.coalesced, t.runs) == (54, 51, 2)
    # The interval counts from the last run that ran something.
    assert t.take(100.6) == ()
    assert t.wait_s(100.6) == pytest.approx(0.4)


def test_min_interval_zero_never_waits() -> None:
    t = ChangeTrigger("m", min_interval_s=0.0)
    t.mark("a")
    t.take(1.0)
    t.mark("a")
    assert t.wait_s(1.0) == 0.0


def test_a_burst_runs_in_chunks_and_a_lone_change_overtakes_it() -> None:
    t = ChangeTrigger("m", min_interval_s=0.5, max_rows=4)
    burst = [f"b{i}" for i in range(10)]
    for asset in burst:
        t.mark(asset)
    assert t.take(100.0) == ("b0", "b1", "b2", "b3")
    assert t.pending == 6 and t.ready
    assert t.wait_s(100.001) == 0.0  # the rest of a burst taken does not wait the interval
    t.mark("lone")  # arrives while the first chunk runs
    assert t.changed.is_set()
    assert t.take(100.01) == ("lone",)  # it goes first, in a chunk of its own
    assert t.take(100.02) == ("b4", "b5", "b6", "b7")
    assert t.take(100.03) == ("b8", "b9")
    assert not t.ready
    assert t.wait_s(100.03) == pytest.approx(0.5)  # idle again: the interval applies
    assert t.runs == 4


def test_a_burst_is_never_starved_by_new_changes() -> None:
    t = ChangeTrigger("m", min_interval_s=0.0, max_rows=4)
    for asset in ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"):
        t.mark(asset)
    chunks = [t.take(0.0)]
    for k in range(4):  # during every chunk, a flood of new changes arrives
        for i in range(6):
            t.mark(f"f{k}{i}")
        chunks.append(t.take(float(k)))
    assert chunks == [
        ("b0", "b1", "b2", "b3"),
        ("f00", "f01", "f02", "f03"),  # new changes first; their overflow queues behind
        ("b4", "b5", "b6", "b7"),  # then the burst's turn: it moves every other chunk
        ("f10", "f11", "f12", "f13"),
        ("b8", "b9", "f04", "f05"),
    ]
    while t.ready:
        chunks.append(t.take(9.0))
    ran = [a for c in chunks for a in c]
    assert len(ran) == len(set(ran)) == 10 + 4 * 6  # each asset once, none lost


def test_an_asset_waiting_in_a_burst_is_coalesced() -> None:
    t = ChangeTrigger("m", min_interval_s=0.0, max_rows=2)
    for asset in ("a", "b", "c", "d"):
        t.mark(asset)
    assert t.take(0.0) == ("a", "b")
    t.mark("d")  # still waiting in the burst: its row will read the latest inputs
    t.mark("a")  # its row was computed: a new row
    assert (t.marks, t.coalesced) == (6, 1)
    assert t.take(0.0) == ("a",)
    assert t.take(0.0) == ("c", "d")
    assert not t.ready


def test_a_source_batch_bigger_than_a_run_is_a_burst_behind_later_changes() -> None:
    """A source batch that changes more than a run's rows (a plant's scan cycle) is a burst
    from the start: a change of another source taken in before the burst's first chunk ran
    goes first, not behind the whole burst."""
    t = ChangeTrigger("m", min_interval_s=0.5, max_rows=4)
    t.mark_batch([f"b{i}" for i in range(10)] + ["b0"])  # b0 changed twice in the batch
    assert (t.marks, t.coalesced, t.pending) == (11, 1, 10)
    assert t.changed.is_set() and t.wait_s(0.0) == 0.0
    t.mark_batch(["lone"])
    assert t.take(100.0) == ("lone",)
    assert t.take(100.0) == ("b0", "b1", "b2", "b3")
    t.mark_batch(["b5", "x", "y"])  # b5 still waits in the burst: coalesced
    assert t.coalesced == 2
    assert t.take(100.0) == ("x", "y")
    assert t.take(100.0) == ("b4", "b5", "b6", "b7")
    assert t.take(100.0) == ("b8", "b9")
    # Nothing left: the runner waits for the next change (no turn of its loop in vain).
    assert not t.ready and not t.changed.is_set()


def test_max_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        ChangeTrigger("m", min_interval_s=0.0, max_rows=0)


# --- the tag table marks -----------------------------------------------------------------------

MAPPING = """
version: 1
gateway: {{id: unit, store: "sqlite:///{store}"}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}}
templates:
  pump:
    tags:
      x: {{source: plant, address: "nsu=urn:t;s={{n}}.X", deadband: 0.5, max_age_s: 30}}
      unread: {{source: plant, address: "nsu=urn:t;s={{n}}.U"}}
assets:
{assets}
models:
  on-change:
    file: {model}
    version: "1"
    template: pump
    trigger: change
    min_interval_ms: {interval}
    window_s: 10
    min_window_s: 0
    outputs: {{value: value}}
    features:
      - {{tag: x, stat: last}}
  periodic:
    file: {model}
    version: "1"
    template: pump
    window_s: 10
    min_window_s: 0
    outputs: {{value: value}}
    features:
      - {{tag: x, stat: last}}
"""


def _mapping(tmp_path: Path, interval_ms: float = 0, pumps: int = 3) -> Mapping:
    # value = x.last: the prediction reads back the latest input.
    model = linear_regressor(tmp_path / "m.onnx", [1.0], [0.0], [1.0])
    path = tmp_path / "mapping.yaml"
    assets = "\n".join(
        f'  p{n}: {{template: pump, vars: {{n: "{n}"}}}}' for n in range(1, pumps + 1)
    )
    path.write_text(
        MAPPING.format(store=tmp_path / "b.db", model=model, interval=interval_ms, assets=assets)
    )
    return load_mapping(path)


def _sample(tag: str, value: float) -> TagSample:
    now = time.time()
    return TagSample(tag, value, Quality.GOOD, now, now, now)


def test_the_table_marks_assets_whose_model_inputs_changed(tmp_path: Path) -> None:
    table = TagTable(_mapping(tmp_path))
    assert list(table.triggers) == ["on-change"]  # the periodic model has none
    trigger = table.triggers["on-change"]
    table.apply([_sample("p2.x", 1.0), _sample("p1.x", 1.0), _sample("p2.x", 2.0)])
    assert trigger.take(0.0) == ("p2", "p1")
    table.apply([_sample("p3.unread", 7.0)])  # no model reads it
    table.apply([_sample("p2.x", 2.2)])  # within the deadband: no change
    assert trigger.pending == 0
    table.mark_bad(["p3.x"], "source plant: connection lost")  # Bad now, not at the next change
    assert trigger.take(1.0) == ("p3",)


def test_the_table_hands_a_burst_over_as_one_batch(tmp_path: Path) -> None:
    table = TagTable(_mapping(tmp_path, pumps=MAX_ROWS + 2))
    trigger = table.triggers["on-change"]
    table.apply([_sample(f"p{n}.x", 1.0) for n in range(1, MAX_ROWS + 2)])  # one scan cycle
    table.apply([_sample(f"p{MAX_ROWS + 2}.x", 1.0)])  # another source, a moment later
    assert trigger.take(0.0) == (f"p{MAX_ROWS + 2}",)
    assert trigger.take(0.0) == tuple(f"p{n}" for n in range(1, MAX_ROWS + 1))
    assert trigger.take(0.0) == (f"p{MAX_ROWS + 1}",)


def test_schema_defaults(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, interval_ms=25)
    assert mapping.models["on-change"].trigger == "change"
    assert mapping.models["on-change"].min_interval_s == pytest.approx(0.025)
    assert mapping.models["periodic"].trigger == "period"


# --- the runner ------------------------------------------------------------------------------


async def test_the_runner_runs_over_the_changed_assets_only(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, interval_ms=200)
    table = TagTable(mapping)
    model = mapping.models["on-change"]
    runs: list[list[Prediction]] = []
    published = asyncio.Event()

    async def publish(batch: Sequence[Prediction]) -> None:
        runs.append(list(batch))
        published.set()

    runner = ModelRunner(
        model,
        LoadedModel.load(model.path),
        (),
        table.get,
        publish,
        "unit",
        "boot",
        trigger=table.triggers["on-change"],
    )
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.sleep(0.05)
        assert runs == []  # no change, no run
        table.apply([_sample("p1.x", 1.0)])
        await asyncio.wait_for(published.wait(), 1.0)
        published.clear()
        assert [(p.asset, p.value) for p in runs[0]] == [("p1", 1.0)]
        # A burst within the 200 ms interval: one row per asset in the next run.
        for v in range(2, 12):
            table.apply([_sample("p1.x", float(v)), _sample("p3.x", float(v) + 100)])
        await asyncio.wait_for(published.wait(), 1.0)
        assert len(runs) == 2
        assert sorted((p.asset, p.value) for p in runs[1]) == [("p1", 11.0), ("p3", 111.0)]
        await asyncio.sleep(0.3)
        assert len(runs) == 2  # nothing changed since: no run
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_lone_change_overtakes_the_rest_of_a_burst(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, interval_ms=0, pumps=6)
    table = TagTable(mapping)
    model = mapping.models["on-change"]
    trigger = table.triggers["on-change"]
    trigger.max_rows = 2
    runs: list[list[tuple[str, float | str | None]]] = []
    done = asyncio.Event()

    async def publish(batch: Sequence[Prediction]) -> None:
        runs.append([(p.asset, p.value) for p in batch])
        if sum(map(len, runs)) >= 6:
            done.set()

    def lone_change(outcome: TickOutcome) -> None:
        if len(runs) == 0:  # while the burst's first chunk runs, p6 changes
            table.apply([_sample("p6.x", 66.0)])

    runner = ModelRunner(
        model,
        LoadedModel.load(model.path),
        (),
        table.get,
        publish,
        "unit",
        "boot",
        trigger=trigger,
        observers=[lone_change],
    )
    table.apply([_sample(f"p{n}.x", float(n)) for n in range(1, 6)])  # a burst of 5
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(done.wait(), 2.0)
        assert runs == [
            [("p1", 1.0), ("p2", 2.0)],
            [("p6", 66.0)],  # the lone change first, then the burst goes on
            [("p3", 3.0), ("p4", 4.0)],
            [("p5", 5.0)],
        ]
        assert not trigger.ready
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
