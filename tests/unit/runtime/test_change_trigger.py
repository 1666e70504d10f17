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
from bridge.runtime.runner import ModelRunner
from bridge.runtime.tagtable import TagTable
from bridge.runtime.trigger import ChangeTrigger
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
  p1: {{template: pump, vars: {{n: "1"}}}}
  p2: {{template: pump, vars: {{n: "2"}}}}
  p3: {{template: pump, vars: {{n: "3"}}}}
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


def _mapping(tmp_path: Path, interval_ms: float = 0) -> Mapping:
    # value = x.last: the prediction reads back the latest input.
    model = linear_regressor(tmp_path / "m.onnx", [1.0], [0.0], [1.0])
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING.format(store=tmp_path / "b.db", model=model, interval=interval_ms))
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
