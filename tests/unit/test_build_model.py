"""The model build script: reproducible bytes, a loadable model that really separates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bridge.config.reference import load_reference
from bridge.inference import LoadedModel
from bridge.simulators.plant import build_model

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "mappings" / "models" / "pump_health.onnx"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("model") / "pump_health.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.simulators.plant.build_model", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_build_is_reproducible(built: tuple[Path, str]) -> None:
    out, _ = built
    assert out.read_bytes() == COMMITTED.read_bytes(), (
        "the committed model differs from a fresh build: "
        "rerun python -m bridge.simulators.plant.build_model"
    )


def test_reference_is_reproducible_and_describes_healthy_pumps(built: tuple[Path, str]) -> None:
    out, _ = built
    fresh = build_model.reference_path(out)
    committed = build_model.reference_path(COMMITTED)
    assert fresh.read_text() == committed.read_text(), (
        "the committed reference statistics differ from a fresh build: "
        "rerun python -m bridge.simulators.plant.build_model"
    )
    ref = load_reference(committed, build_model.FEATURES)
    # Healthy windows only: a faulty pump's vibration lies far above the reference mean.
    vib = ref["features"]["vibration.mean"]
    assert vib["max"] < vib["mean"] + 6 * vib["std"]
    assert sum(ref["features"]["speed.mean"]["fractions"]) == pytest.approx(1.0, abs=1e-5)


def test_build_reports_accuracy(built: tuple[Path, str]) -> None:
    _, stdout = built
    assert "train windows" in stdout and "holdout windows" in stdout
    holdout = next(line for line in stdout.splitlines() if line.startswith("holdout windows"))
    assert float(holdout.rsplit(" ", 1)[1]) >= 0.95, stdout


def test_model_is_small_and_self_describing(built: tuple[Path, str]) -> None:
    out, _ = built
    assert out.stat().st_size < 8 * 1024
    model = LoadedModel.load(out)
    assert model.check("features", len(build_model.FEATURES), "label", "probabilities", None) == []
    meta = model.io.metadata
    assert meta["labels"] == "healthy,bearing_fault"
    assert meta["features"].split(",") == list(build_model.FEATURES)
    assert meta["window_s"] == "10"
    assert "build_model" in meta["producer"]


def test_fresh_pumps_are_classified(built: tuple[Path, str]) -> None:
    out, _ = built
    model = LoadedModel.load(out)
    rng = np.random.default_rng(2024)
    data = build_model.make_dataset(build_model.pump_fleet(90_000, 12, rng), rng)
    result = model.run(data.x)
    assert result.labels is not None and result.scores is not None
    fault = result.labels == 1
    healthy = data.severity == 0.0
    severe = data.severity >= 0.5
    assert healthy.sum() > 300 and severe.sum() > 200  # the test set really has both
    assert np.mean(fault == (data.y == 1)) >= 0.95
    assert np.mean(fault[healthy]) == 0.0, "false alarms on healthy pumps"
    assert np.mean(fault[severe]) >= 0.99
    # Partly filled windows (start-up) of healthy pumps stay healthy too.
    assert np.any(healthy & (data.fill_s < 6.0))
    assert not np.any(fault[healthy & (data.fill_s < 6.0)])


def test_onnx_graph_matches_the_numpy_classifier() -> None:
    rng = np.random.default_rng(5)
    data = build_model.make_dataset(build_model.pump_fleet(80_000, 6, rng), rng, duration_s=40.0)
    clf = build_model.train(data)
    onnx_bytes = build_model.to_onnx(clf)

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    label, probs = session.run(["label", "probabilities"], {"features": data.x.astype(np.float32)})
    expected = clf.proba(data.x)
    np.testing.assert_allclose(probs[:, 1], expected, atol=1e-4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    clear = np.abs(expected - 0.5) > 1e-3  # float32 vs float64 may disagree right at 0.5
    assert clear.sum() > 0.9 * clear.size
    assert label[clear].tolist() == (expected[clear] >= 0.5).astype(np.int64).tolist()
