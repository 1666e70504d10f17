"""Occlusion through onnxruntime ranks the perturbed input first; the reason is plain words."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from insight_models import linear_regressor, logistic_classifier

from bridge.explain.occlusion import occlusion_effects, perturbed
from bridge.explain.reason import describe
from bridge.inference.model import LoadedModel, OutputRoles
from bridge.inference.score import score_function

BASELINE = np.asarray([2.5, 50.0, 4.4, 1470.0])


def test_perturbed_rows_replace_one_input_each() -> None:
    x = np.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    out = perturbed(x, np.asarray([0.0, 0.0, 0.0]))
    assert out.shape == (6, 3)
    assert out[0].tolist() == [0.0, 2.0, 3.0]
    assert out[4].tolist() == [4.0, 0.0, 6.0]
    assert out[5].tolist() == [4.0, 5.0, 0.0]


@pytest.mark.parametrize("perturbed_input", [0, 1, 2, 3])
def test_regressor_ranks_the_perturbed_input_first(tmp_path: Path, perturbed_input: int) -> None:
    path = linear_regressor(
        tmp_path / "m.onnx", [1.0, 1.0, 1.0, 1.0], BASELINE, [0.15, 0.2, 0.05, 4.0]
    )
    model = LoadedModel.load(path, roles=OutputRoles(value="value"))
    rng = np.random.default_rng(perturbed_input)
    scale = np.asarray([0.15, 0.2, 0.05, 4.0])
    x = (BASELINE + rng.normal(0, 1, (5, 4)) * scale).astype(np.float32)
    x[2, perturbed_input] += 8 * scale[perturbed_input]  # one row, one input far off normal
    effects = occlusion_effects(x, BASELINE, score_function(model, None))
    assert int(np.argmax(np.abs(effects[2]))) == perturbed_input
    # Linear model: the effect is exactly the input's own term.
    want = (x[2] - BASELINE) / scale
    assert effects[2] == pytest.approx(want, rel=1e-3, abs=1e-3)


def test_classifier_effect_is_on_the_chosen_class(tmp_path: Path) -> None:
    path = logistic_classifier(tmp_path / "c.onnx", [0.0, 3.0, 0.0], -6.0)
    model = LoadedModel.load(path, roles=OutputRoles(label="label", scores="probabilities"))
    x = np.asarray([[5.0, 3.0, 9.0], [7.0, 0.5, 1.0]], dtype=np.float32)
    result = model.run(x)
    assert result.labels is not None
    assert result.labels.tolist() == [1, 0]
    baseline = np.asarray([5.0, 1.0, 5.0])
    effects = occlusion_effects(x, baseline, score_function(model, result.labels))
    # Row 0 is a fault because input 1 is high: only input 1 moves p(fault).
    assert int(np.argmax(np.abs(effects[0]))) == 1
    assert effects[0][1] > 0.3
    assert effects[0][0] == pytest.approx(0.0, abs=1e-6)


def test_reason_uses_tag_words_unit_and_direction() -> None:
    assert describe("bearing_temperature", "mean", "degC", 68.4, 50.4) == (
        "bearing temperature +18 °C above normal"
    )
    assert describe("discharge_pressure", "last", "bar", 4.0, 4.4) == (
        "discharge pressure -0.4 bar below normal"
    )
    assert describe("vibration", "std", "mm/s", 1.2, 0.15) == (
        "vibration fluctuation +1.1 mm/s above normal"
    )
    assert describe("bearing_temperature", "slope", "degC", 0.3, 0.0) == (
        "bearing temperature trend +0.3 °C/s above normal"
    )
    assert describe("speed", "mean", "", 1470.0, 1470.0) == "speed at normal"
