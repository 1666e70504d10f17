"""ModelInsight on real onnxruntime models: which predictions get explained (every,
label_change, on_request), drift scores on the predictions, Bad rows kept out of drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from insight_models import logistic_classifier
from structlog.testing import capture_logs

from bridge.config.reference import compute_reference
from bridge.config.resolved import Feature, ResolvedModel
from bridge.config.spec import DriftConfig, ExplainConfig, ModelOutputs
from bridge.features.vector import AssetRow, FeatureBatch
from bridge.inference.model import LoadedModel, OutputRoles
from bridge.lifecycle.deployment import Deployment, Served
from bridge.runtime.insight import ModelInsight
from bridge.runtime.runner import TickOutcome
from bridge.store.db import open_store
from bridge.store.registry import RegistryRepository, VersionRecord
from bridge.types import Prediction, Quality

ASSETS = ("p1", "p2")
FEATURES = (Feature("temp", "mean"), Feature("vib", "mean"), Feature("load", "last"))


def _model(tmp: Path, mode: str) -> tuple[ResolvedModel, LoadedModel, dict[str, object]]:
    path = logistic_classifier(tmp / "c.onnx", [0.0, 4.0, 0.0], -12.0)  # fault if vib > 3
    rng = np.random.default_rng(1)
    train = np.column_stack(
        [rng.normal(50, 2, 5000), rng.normal(2.0, 0.3, 5000), rng.normal(0.8, 0.05, 5000)]
    )
    reference = compute_reference(train, [f.name for f in FEATURES], bins=10)
    model = ResolvedModel(
        name="health",
        path=path,
        version="1",
        sha256=None,
        assets=ASSETS,
        input="features",
        features=FEATURES,
        outputs=ModelOutputs(label="label", scores="probabilities"),
        labels=None,
        period_s=1.0,
        window_s=10.0,
        min_window_s=5.0,
        max_samples=64,
        reference=tmp / "ref.json",
        drift=DriftConfig(window=20, threshold=1.0),
        explain=ExplainConfig(mode=mode, top=2),  # type: ignore[arg-type]
    )
    loaded = LoadedModel.load(path, roles=OutputRoles(label="label", scores="probabilities"))
    return model, loaded, reference


class Ticks:
    def __init__(self, loaded: LoadedModel) -> None:
        self.deployment = Deployment(Served("1", loaded.sha256, loaded, ("normal", "fault")))
        self.loaded = loaded
        self.seq = 0

    def outcome(self, x: np.ndarray, quality: dict[str, Quality] | None = None) -> TickOutcome:
        quality = quality or {}
        rows = [AssetRow(a, quality.get(a, Quality.GOOD), "", (), 0.1) for a in ASSETS]
        xb = np.asarray(x, dtype=np.float32)
        result = self.loaded.run(xb)
        assert result.labels is not None
        preds = []
        for i, a in enumerate(ASSETS):
            self.seq += 1
            preds.append(
                Prediction(
                    id=f"{a}-{self.seq}",
                    seq=self.seq,
                    asset=a,
                    model="health",
                    version="1",
                    sha256=self.loaded.sha256,
                    value=("normal", "fault")[int(result.labels[i])],
                    score=None,
                    quality=rows[i].quality,
                    timestamp=float(self.seq),
                    input_age_s=0.1,
                )
            )
        batch = FeatureBatch(xb, rows, [])
        return TickOutcome("health", self.deployment, batch, result, None, (), preds)


NORMAL = [[50.0, 2.0, 0.8], [51.0, 2.1, 0.8]]
FAULT_P1 = [[50.0, 4.5, 0.8], [51.0, 2.1, 0.8]]


async def test_every_mode_explains_each_prediction_and_ranks_the_cause_first(
    tmp_path: Path,
) -> None:
    model, loaded, ref = _model(tmp_path, "every")
    insight = ModelInsight(model, ref, {"temp": "degC", "vib": "mm/s", "load": ""})
    ticks = Ticks(loaded)
    out = await insight.enrich(ticks.outcome(FAULT_P1))
    assert [p.value for p in out] == ["fault", "normal"]
    e = out[0].explanation
    assert e is not None and len(e.top) == 2
    assert e.top[0].feature == "vib.mean"
    assert e.reason.startswith("vib +2.5 mm/s above normal")
    assert out[1].explanation is not None


async def test_label_change_mode_explains_only_changes(tmp_path: Path) -> None:
    model, loaded, ref = _model(tmp_path, "label_change")
    insight = ModelInsight(model, ref, {"vib": "mm/s"})
    ticks = Ticks(loaded)
    first = await insight.enrich(ticks.outcome(NORMAL))
    assert all(p.explanation is not None for p in first)  # first label of each asset
    again = await insight.enrich(ticks.outcome(NORMAL))
    assert all(p.explanation is None for p in again)
    changed = await insight.enrich(ticks.outcome(FAULT_P1))
    assert changed[0].explanation is not None and changed[1].explanation is None


async def test_on_request_mode_explains_kept_predictions_only(tmp_path: Path) -> None:
    model, loaded, ref = _model(tmp_path, "on_request")
    insight = ModelInsight(model, ref, {"vib": "mm/s"})
    ticks = Ticks(loaded)
    out = await insight.enrich(ticks.outcome(FAULT_P1))
    assert all(p.explanation is None for p in out)
    asked = insight.explain_kept(out[0].id)
    assert asked is not None and asked.top[0].feature == "vib.mean"
    assert insight.explain_kept("unknown") is None


async def test_drift_scores_ride_on_predictions_and_bad_rows_stay_out(tmp_path: Path) -> None:
    model, loaded, ref = _model(tmp_path, "on_request")
    crossings = []
    insight = ModelInsight(model, ref, {}, lambda c, p: crossings.append((c, p)))
    ticks = Ticks(loaded)
    rng = np.random.default_rng(2)
    for _ in range(20):
        x = [[rng.normal(50, 2), rng.normal(2.0, 0.3), rng.normal(0.8, 0.05)] for _ in ASSETS]
        out = await insight.enrich(ticks.outcome(x))
    assert all(p.drift_score is not None and p.drift_score < 1.0 for p in out)
    # p2's rows are Uncertain from now on: far off, but never observed.
    for _ in range(20):
        x = [[rng.normal(50, 2), rng.normal(2.0, 0.3), rng.normal(0.8, 0.05)], [90.0, 9.0, 3.0]]
        out = await insight.enrich(ticks.outcome(x, {"p2": Quality.UNCERTAIN}))
    assert crossings == []
    assert out[1].drift_score is not None and out[1].drift_score < 1.0
    # p1 drifts in temperature: one crossing, handed over with its latest prediction.
    for _ in range(20):
        x = [
            [rng.normal(60, 2), rng.normal(2.0, 0.3), rng.normal(0.8, 0.05)],
            [rng.normal(50, 2), rng.normal(2.0, 0.3), rng.normal(0.8, 0.05)],
        ]
        out = await insight.enrich(ticks.outcome(x))
    [(crossing, prediction)] = crossings
    assert crossing.asset == "p1" and crossing.drifting == ("temp.mean",)
    assert prediction is not None and prediction.asset == "p1"
    assert out[0].drift_score is not None and out[0].drift_score >= crossing.score > 1.0


def _register(
    repo: RegistryRepository, version: str, sha: str, ref: dict[str, Any] | None, by: str
) -> None:
    record = VersionRecord(
        "health",
        version,
        sha,
        "c.onnx",
        1,
        None,
        {},
        ref,
        {},
        by,
        0.0,
        "registered",
        None,
        None,
        None,
        0.0,
    )
    repo.add(record, by)


def _temp_baseline(p: Prediction) -> float:
    """The explanation's baseline of temp (a tie at 0 effect ranks it second, after vib)."""
    assert p.explanation is not None
    return next(c.baseline for c in p.explanation.top if c.feature == "temp.mean")


async def test_drift_and_explanations_follow_the_reference_of_the_serving_version(
    tmp_path: Path,
) -> None:
    model, loaded, mapping_ref = _model(tmp_path, "every")
    rng = np.random.default_rng(3)
    hot = np.column_stack(
        [rng.normal(60, 2, 5000), rng.normal(2.0, 0.3, 5000), rng.normal(0.8, 0.05, 5000)]
    )
    hot_ref = compute_reference(hot, [f.name for f in FEATURES], bins=10)
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        repo = RegistryRepository(store)
        sha = loaded.sha256
        _register(repo, "1", sha, None, "mapping")  # the mapping's file, seeded: no reference
        _register(repo, "2", sha, hot_ref, "cli")  # retrained on a hotter plant
        _register(repo, "3", sha, None, "cli")  # registered without reference statistics
        crossings: list[str] = []
        insight = ModelInsight(
            model,
            mapping_ref,
            {"temp": "degC"},
            lambda c, p: crossings.append(c.asset),
            lambda version, _sha: repo.get("health", version),
        )
        ticks = Ticks(loaded)

        def warm() -> list[list[float]]:
            return [
                [rng.normal(60, 2), rng.normal(2.0, 0.3), rng.normal(0.8, 0.05)] for _ in ASSETS
            ]

        for _ in range(20):  # version 1: 60 degC is far from the mapping's 50 degC
            out = await insight.enrich(ticks.outcome(warm()))
        assert sorted(crossings) == ["p1", "p2"]
        assert insight.reference is mapping_ref
        assert _temp_baseline(out[0]) == pytest.approx(50.0, abs=0.5)

        ticks.deployment = Deployment(Served("2", sha, loaded, ("normal", "fault")))
        out = await insight.enrich(ticks.outcome(warm()))
        assert insight.reference["features"] == hot_ref["features"]
        assert insight.monitor is not None and insight.monitor.scores == {}  # windows reset
        assert _temp_baseline(out[0]) == pytest.approx(60.0, abs=0.5)
        for _ in range(20):
            out = await insight.enrich(ticks.outcome(warm()))
        assert sorted(crossings) == ["p1", "p2"]  # nothing new: 60 degC is normal for v2
        assert all(p.drift_score is not None and p.drift_score < 1.0 for p in out)

        with capture_logs() as logs:
            ticks.deployment = Deployment(Served("3", sha, loaded, ("normal", "fault")))
            await insight.enrich(ticks.outcome(warm()))
        assert insight.reference is mapping_ref  # v3 has none: the mapping's, with a warning
        assert any(e["event"] == "registry_reference_missing_using_mapping_reference" for e in logs)
    finally:
        store.dispose()
