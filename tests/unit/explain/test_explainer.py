"""Explainer without a model file: which rows each mode explains, the top inputs in order of
effect, and the bounded store of rows kept for explanations on request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from bridge.config.resolved import Feature, ResolvedModel
from bridge.config.spec import ExplainConfig, ModelOutputs
from bridge.explain import explainer as explainer_module
from bridge.explain.explainer import Explainer, baseline_of
from bridge.types import Prediction, Quality

FEATURES = (Feature("temp", "mean"), Feature("vib", "mean"), Feature("load", "last"))


def _explainer(mode: str, top: int = 2) -> Explainer:
    model = ResolvedModel(
        name="health",
        path=Path("c.onnx"),
        version="1",
        sha256=None,
        assets=("p1", "p2"),
        input="features",
        features=FEATURES,
        outputs=ModelOutputs(value="value"),
        labels=None,
        period_s=1.0,
        window_s=10.0,
        min_window_s=5.0,
        max_samples=64,
        reference=None,
        drift=None,
        explain=ExplainConfig(mode=mode, top=top),
    )
    return Explainer(model, {"vib": "mm/s"})


def _pred(asset: str, value: str | float | None) -> Prediction:
    return Prediction(
        id=f"{asset}-{value}",
        seq=1,
        asset=asset,
        model="health",
        version="1",
        sha256="ab",
        value=value,
        score=None,
        quality=Quality.GOOD,
        timestamp=0.0,
        input_age_s=0.0,
        inputs=(),
        reason="",
    )


def _vib_only(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """A model that reads only vib: occluding it is the only change."""
    return np.asarray(x[:, 1], dtype=np.float64) * 2.0


def test_modes_choose_their_rows() -> None:
    preds = [_pred("p1", "fault"), _pred("p2", "ok")]
    rows = [(0, 0), (1, 1)]
    assert _explainer("every").choose(preds, rows) == rows
    assert _explainer("on_request").choose(preds, rows) == []
    changes = _explainer("label_change")
    assert changes.choose(preds, rows) == rows  # first labels are changes
    changes.remember(preds)
    again = [_pred("p1", "fault"), _pred("p2", "fault")]
    assert changes.choose(again, rows) == [(1, 1)]
    changes.remember([_pred("p1", None)])  # a prediction without a value changes nothing
    assert changes.choose([_pred("p1", "fault")], [(0, 0)]) == []


def test_top_inputs_in_order_of_effect_with_a_reason_in_words() -> None:
    explainer = _explainer("every")
    baseline = baseline_of(
        {
            "features": {
                f.name: {"mean": m} for f, m in zip(FEATURES, (50.0, 2.0, 0.8), strict=True)
            }
        },
        [f.name for f in FEATURES],
    )
    x = np.asarray([[50.0, 7.0, 0.8]], dtype=np.float32)
    [explanation] = explainer.explain(x, baseline, _vib_only)
    assert [c.feature for c in explanation.top] == ["vib.mean", "temp.mean"]
    assert explanation.top[0].effect == 10.0 and explanation.top[0].baseline == 2.0
    assert "vib" in explanation.reason and "mm/s" in explanation.reason
    assert explainer.explained == 1


def test_rows_kept_on_request_are_bounded_and_unexplainable_ones_say_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    explainer = _explainer("on_request")
    monkeypatch.setattr(explainer_module, "ON_REQUEST_KEEP", 2)
    baseline = np.asarray([50.0, 2.0, 0.8])
    row = np.asarray([[50.0, 7.0, 0.8]], dtype=np.float32)
    explainer.keep("a", row, baseline, _vib_only)
    explainer.keep("b", row, baseline, None)  # e.g. a label the model does not name
    explainer.keep("c", row, baseline, _vib_only)
    assert explainer.explain_kept("a") is None  # the oldest went first
    assert explainer.explain_kept("b") is None
    kept = explainer.explain_kept("c")
    assert kept is not None and kept.top[0].feature == "vib.mean"
