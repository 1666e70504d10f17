"""Models that lie about their outputs, built at test time with the onnx helper
(``bridge.simulators.plant.model_variants``): refused at load when a probe batch shows it, an
``InferenceError`` (never a ValueError) when only some inputs show it, NaN rows marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pump_mapping import pump_mapping

from bridge.config import load_mapping
from bridge.errors import ConfigError, InferenceError
from bridge.inference import LoadedModel
from bridge.prepare import prepare
from bridge.simulators.plant.model_variants import write_variants

PUMP_CHECK = {
    "input_name": "features",
    "n_features": 7,
    "label_output": "label",
    "score_output": "probabilities",
    "value_output": None,
}
# Feature rows the bundled model calls healthy (vibration mean 2) and bearing_fault (20).
HEALTHY = [2.0, 0.1, 2.3, 50.0, 0.0, 4.2, 1470.0]
FAULTY = [20.0, 1.0, 25.0, 90.0, 0.1, 4.2, 1470.0]


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_variants(tmp_path_factory.mktemp("variants"))


def test_wrong_output_shape_is_refused_by_check_with_the_reason(
    variants: dict[str, Path],
) -> None:
    problems = LoadedModel.load(variants["wrong_output_shape"]).check(**PUMP_CHECK)  # type: ignore[arg-type]
    assert problems == [
        "on a batch of 1 row(s): output 'label' has shape [2], expected [1] or [1, 1]"
    ], problems
    # The well-formed variants pass the same probe.
    for name in ("pump_health_v1", "drops_faulty_rows", "nan_when_calm"):
        assert LoadedModel.load(variants[name]).check(**PUMP_CHECK) == [], name  # type: ignore[arg-type]


def test_wrong_output_shape_in_a_mapping_stops_validate(
    variants: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "mapping.yaml"
    model = variants["wrong_output_shape"]
    path.write_text(pump_mapping(store=tmp_path / "b.db", model=model, timing={}))
    load_mapping(path)  # the mapping itself is fine ...
    with pytest.raises(ConfigError) as err:  # ... the model is not, and validate says why
        prepare(path)
    assert "output 'label' has shape [2], expected [1]" in str(err.value)
    (issue,) = err.value.issues
    assert issue.key.startswith("models.") and issue.line is not None
    assert "match the model" in issue.hint


def test_wrong_output_shape_at_run_is_an_inference_error(variants: dict[str, Path]) -> None:
    model = LoadedModel.load(variants["wrong_output_shape"])
    with pytest.raises(InferenceError, match=r"output 'label' has shape \[4\], expected \[2\]"):
        model.run(np.asarray([HEALTHY, FAULTY]))


def test_output_shape_depending_on_the_inputs_is_an_inference_error(
    variants: dict[str, Path],
) -> None:
    model = LoadedModel.load(variants["drops_faulty_rows"])
    calm = model.run(np.asarray([HEALTHY, HEALTHY]))
    assert calm.labels is not None and calm.labels.tolist() == [0, 0]
    with pytest.raises(InferenceError, match=r"output 'label' has shape \[1\], expected \[2\]"):
        model.run(np.asarray([HEALTHY, FAULTY]))


def test_non_finite_outputs_mark_their_rows_invalid(variants: dict[str, Path]) -> None:
    result = LoadedModel.load(variants["nan_when_calm"]).run(np.asarray([HEALTHY, FAULTY]))
    assert result.invalid is not None and result.invalid.tolist() == [True, False]
    assert "not a finite number" in result.reason(0) and result.reason(1) == ""
    fine = LoadedModel.load(variants["pump_health_v1"]).run(np.asarray([HEALTHY, FAULTY]))
    assert fine.invalid is None and fine.reason(0) == ""
