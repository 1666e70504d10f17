"""DriftTracker and ReferenceBook without a runner: the reference of the serving version, window
resets only when the statistics change, scoring every ``drift.every`` runs, the registry's
reference only when it fits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from structlog.testing import capture_logs

from bridge.config.reference import compute_reference
from bridge.config.resolved import Feature, ResolvedModel
from bridge.config.spec import DriftConfig, ModelOutputs
from bridge.drift.references import ReferenceBook, RegisteredReference
from bridge.drift.tracker import DriftTracker
from bridge.errors import StoreError

FEATURES = (Feature("temp", "mean"), Feature("vib", "mean"))
NAMES = [f.name for f in FEATURES]


def _model(every: int = 1) -> ResolvedModel:
    return ResolvedModel(
        name="health",
        path=Path("c.onnx"),
        version="1",
        sha256=None,
        assets=("p1", "p2"),
        input="features",
        features=FEATURES,
        outputs=ModelOutputs(label="label"),
        labels=None,
        period_s=1.0,
        window_s=10.0,
        min_window_s=5.0,
        max_samples=64,
        reference=None,
        drift=DriftConfig(window=10, threshold=1.0, every=every),
        explain=None,
    )


def _reference(temp: float, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    rows = np.column_stack([rng.normal(temp, 2, 4000), rng.normal(2.0, 0.3, 4000)])
    return compute_reference(rows, NAMES, bins=10)


def _hot(n: int) -> np.ndarray:
    return np.column_stack([np.full(n, 80.0), np.full(n, 2.0)]).astype(np.float32)


def test_scores_every_nth_run_and_crosses_once() -> None:
    tracker = DriftTracker(_model(every=2), _reference(50.0))
    for _ in range(10):  # a full window, but run 1 is not a scoring run
        assert tracker.observe(["p1"], _hot(1), run=1, now=0.0) == []
    assert tracker.scores == {}
    crossings = tracker.observe(["p1"], _hot(1), run=2, now=0.0)
    assert [c.asset for c in crossings] == ["p1"] and tracker.scores["p1"] > 1.0
    assert tracker.observe(["p1"], _hot(1), run=4, now=0.0) == []  # still drifting: once


def test_a_new_reference_resets_the_windows_an_equal_one_does_not() -> None:
    ref = _reference(50.0)
    tracker = DriftTracker(_model(), ref)
    for _ in range(10):
        tracker.observe(["p1"], _hot(1), run=1, now=0.0)
    monitor = tracker.monitor
    assert not tracker.use(ref, "1")  # the same object: nothing to do
    same = {**ref}  # another version registered with the same statistics
    assert not tracker.use(same, "2")
    assert tracker.monitor is monitor and tracker.reference is same
    with capture_logs() as logs:
        assert tracker.use(_reference(80.0), "3")
    assert tracker.monitor is not monitor and tracker.scores == {}
    assert [e["event"] for e in logs] == ["drift_reference_switched"]


async def test_the_book_prefers_a_fitting_registry_reference() -> None:
    mapping_ref, hot_ref = _reference(50.0), _reference(80.0)
    registry = {
        "1": RegisteredReference("aa", None, "mapping"),
        "2": RegisteredReference("bb", hot_ref, "cli"),
        "3": RegisteredReference("cc", None, "cli"),
        "4": RegisteredReference("dd", {"format": "nonsense"}, "cli"),
    }
    book = ReferenceBook(_model(), mapping_ref, lambda version, _sha: registry.get(version))
    with capture_logs() as logs:
        await book.learn([("1", "aa"), ("2", "bb"), ("3", "cc"), ("4", "dd"), ("2", "other")])
    assert book.get(("1", "aa")) is mapping_ref  # the mapping's own file: no warning
    registered = book.get(("2", "bb"))
    assert registered is not None and registered["features"] == hot_ref["features"]
    assert book.get(("3", "cc")) is mapping_ref
    assert book.get(("4", "dd")) is mapping_ref
    assert book.get(("2", "other")) is mapping_ref  # not the registered file
    assert [e["event"] for e in logs] == [
        "registry_reference_missing_using_mapping_reference",
        "registry_reference_unusable_using_mapping_reference",
    ]


async def test_the_book_keeps_what_it_has_while_the_registry_is_down() -> None:
    calls: list[str] = []

    def down(version: str, _sha: str) -> RegisteredReference | None:
        calls.append(version)
        raise StoreError("database is locked")

    book = ReferenceBook(_model(), _reference(50.0), down)
    await book.learn([("2", "bb")])
    await book.learn([("2", "bb")])  # within the retry delay: not asked again
    assert calls == ["2"] and book.get(("2", "bb")) is None
